"""The Redis engine on a real Redis Cluster (``redis+cluster://``): three masters with a
replica each, started by the session fixture ``redis_cluster``. The conformance suite and
the hub state machine run on it too (``[cluster]`` in their ids)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from tickwire.engine import EngineError, HistorySettings
from tickwire.engine.redis import RedisEngine, parse_engine_url
from tickwire.engine.urls import is_engine_url
from tickwire.model import Position, Publication

from .conftest import ScratchRedisEngine, redis_prefix
from .redis_cluster import RedisCluster, _cli

SETTINGS = HistorySettings(size=500, ttl=60.0)


class Journal:
    """An engine handler that keeps publications and resyncs in arrival order."""

    def __init__(self) -> None:
        self.events: list[Publication | None] = []  # None: a resync
        self.last: dict[str, int] = {}
        self._changed = asyncio.Event()

    def on_publication(self, pub: Publication) -> None:
        self.events.append(pub)
        self.last[pub.channel] = pub.seq
        self._changed.set()

    def on_resync(self) -> None:
        self.events.append(None)
        self._changed.set()

    async def wait(self, cond: object, timeout: float = 30.0) -> None:
        assert callable(cond)
        async with asyncio.timeout(timeout):
            while not cond():
                self._changed.clear()
                await self._changed.wait()


def test_cluster_urls_parse_and_say_what_is_wrong() -> None:
    target = parse_engine_url("redis+cluster://u:pw@10.0.0.1:7000,10.0.0.2?prefix=tw")
    assert target.cluster == (("10.0.0.1", 7000), ("10.0.0.2", 6379))
    assert target.prefix == "tw" and target.options == {"username": "u", "password": "pw"}
    assert parse_engine_url("rediss+cluster://h:7000").options == {"ssl": True}
    assert is_engine_url("redis+cluster://h:7000")
    with pytest.raises(ValueError, match="names no node"):
        parse_engine_url("redis+cluster://")
    with pytest.raises(ValueError, match="only database 0"):
        parse_engine_url("redis+cluster://h:7000/3")
    with pytest.raises(ValueError, match="bad port"):
        parse_engine_url("redis+cluster://h:x")
    with pytest.raises(ValueError, match="not supported: bogus"):
        parse_engine_url("redis+cluster://h:7000?bogus=1")
    with pytest.raises(ValueError, match="only database 0") as info:
        parse_engine_url("redis+cluster://u:secretpw@h:7000/3")
    assert "***" in str(info.value) and "secretpw" not in str(info.value)


@pytest.fixture
async def nodes(redis_cluster: RedisCluster) -> AsyncIterator[tuple[RedisEngine, RedisEngine]]:
    prefix = redis_prefix()
    a = ScratchRedisEngine(redis_cluster.url, SETTINGS, prefix=prefix, backoff=(0.05, 0.5))
    b = RedisEngine(redis_cluster.url, SETTINGS, prefix=prefix, backoff=(0.05, 0.5))
    await a.start(Journal())
    try:
        yield a, b
    finally:
        await b.close()
        await a.close()


def _owner(cluster: RedisCluster, name: bytes) -> int:
    slot = _cli(cluster.ports[0], "CLUSTER", "KEYSLOT", name.decode()).strip()
    for line in _cli(cluster.ports[0], "CLUSTER", "NODES").splitlines():
        fields = line.split()
        if "master" not in fields[2]:
            continue
        for span in fields[8:]:
            lo, _, hi = span.partition("-")
            if int(lo) <= int(slot) <= int(hi or lo):
                return int(fields[1].split("@")[0].rsplit(":", 1)[1])
    raise AssertionError(f"no master owns slot {slot}")


async def test_a_publication_travels_only_within_its_shard(
    redis_cluster: RedisCluster, nodes: tuple[RedisEngine, RedisEngine]
) -> None:
    a, b = nodes
    journal = Journal()
    await b.start(journal)
    channel = "trades:SHARD-1"
    await b.subscribe([channel])
    name = b.pubsub_channel(channel)
    assert name.endswith(b"{trades:SHARD-1}")  # in the slot of the channel's keys
    owner = _owner(redis_cluster, name)
    masters = [p for p in redis_cluster.ports if redis_cluster.role(p) == "master"]
    assert len(masters) == 3 and owner in masters
    for port in masters:  # SSUBSCRIBEd on the owning master only
        listed = _cli(port, "PUBSUB", "SHARDCHANNELS").split()
        assert (name.decode() in listed) == (port == owner), port
        assert name.decode() not in _cli(port, "PUBSUB", "CHANNELS").split()
    pub = await a.publish(channel, b'{"x":1}')
    await journal.wait(lambda: journal.last.get(channel) == pub.seq)
    assert [bytes(p.data) for p in journal.events if p is not None] == [b'{"x":1}']


async def test_master_failover_under_load_leaves_subscribers_contiguous_or_reset(
    redis_cluster: RedisCluster, nodes: tuple[RedisEngine, RedisEngine]
) -> None:
    a, b = nodes
    journal = Journal()
    await b.start(journal)
    channels = [f"trades:FO{i}" for i in range(12)]
    await b.subscribe(channels)
    victim = _owner(redis_cluster, b.pubsub_channel(channels[0]))
    replica = redis_cluster.replica_of(victim)
    published: dict[str, int] = {}
    errors = 0
    failed_over = asyncio.Event()
    after = 0

    async def publisher() -> None:
        nonlocal errors, after
        i = 0
        while not failed_over.is_set() or after < 300:
            channel = channels[i % len(channels)]
            try:
                pub = await a.publish(channel, json.dumps({"i": i}).encode())
            except EngineError:  # the master is moving: this one may or may not be in
                errors += 1
                await asyncio.sleep(0.02)  # back off, as a real publisher would
                continue
            published[channel] = pub.seq
            i += 1
            if failed_over.is_set():
                after += 1

    task = asyncio.create_task(publisher())
    await journal.wait(lambda: len(journal.events) >= 200)
    await asyncio.to_thread(redis_cluster.failover, replica)
    failed_over.set()
    await task
    assert redis_cluster.role(replica) == "master" and redis_cluster.role(victim) == "slave"
    # every channel's latest publication reaches the subscribed node on the new topology
    await journal.wait(lambda: all(journal.last.get(c) == published[c] for c in channels))
    seen: dict[str, int] = {}
    resynced_since: dict[str, bool] = dict.fromkeys(channels, False)
    for event in journal.events:
        if event is None:
            resynced_since = dict.fromkeys(channels, True)
            continue
        before = seen.get(event.channel, 0)
        # contiguous, or an explicit resync (the hub then recovers or resets) came first
        assert event.seq == before + 1 or (event.seq > before and resynced_since[event.channel])
        seen[event.channel] = event.seq
        resynced_since[event.channel] = False
    assert journal.events.count(None) >= 1  # the slot moved: the node was told
    assert b.reconnects >= 1
    # history on the new master is the old master's: recovery from it works
    pos = await b.position(channels[0])
    assert pos.seq == published[channels[0]] >= 20
    history = await b.history(channels[0], Position(pos.epoch, pos.seq - 20))
    assert history.recovered
    assert [p.seq for p in history.publications] == list(range(pos.seq - 19, pos.seq + 1))

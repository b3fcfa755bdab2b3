"""The promise, explored: a Hypothesis state machine over the real hub and each engine.

Rules publish (one at a time and in batches), subscribe (without ``since``, from the
last position seen, stale, from another epoch), unsubscribe, disconnect, stall a client
until it is cut, take the engine down and up, drop pub/sub deliveries (with and without a
resync), lose a channel's history (a new epoch), flood past the history size, and let
the event loop run a few iterations at a time, so that operations interleave.

After every step, for every client, every channel's stream must be: a ``subscribed``
reply, then a snapshot (state channels) or replay, then seq+1 each time — restarted only
by an explicit ``reset``, a ``recovered: false`` reply or a snapshot the client was told
to wait for — and end only with ``unsubscribed`` or a close code. Every publication and
snapshot must carry the data published with that seq. Bytes held for a client never
exceed its cap. When the loop is let run to the end, every live subscriber has every
publication, and a failed subscribe left no trace.

``make test`` runs a few examples per engine; ``make test-deep`` (``TICKWIRE_DEEP=1``)
runs many more, longer ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tickwire.auth import AuthError, Principal
from tickwire.dialects import native
from tickwire.dialects.base import Credential, Handshake
from tickwire.dialects.core import ConnectionCore, Limits
from tickwire.engine import Engine, EngineUnavailable, HistorySettings, MemoryEngine
from tickwire.engine.base import EngineHandler, HistoryResult
from tickwire.engine.redis import RedisEngine, ShardedRedisEngine
from tickwire.hub import Connection, Hub
from tickwire.model.channels import Channel, parse_channel
from tickwire.model.publication import Position, Publication, Snapshot, now_ms

from .conftest import ScratchRedisEngine, ScratchShardedEngine, redis_prefix, require_redis
from .redis_cluster import RedisCluster
from .redis_shards import RedisShards
from .services import REDIS_URL

DEEP = os.environ.get("TICKWIRE_DEEP", "") not in ("", "0")
EXAMPLES = int(os.environ.get("TICKWIRE_SM_EXAMPLES", "1500" if DEEP else "25"))
STEPS = int(os.environ.get("TICKWIRE_SM_STEPS", "60" if DEEP else "30"))

CHANNELS = ("trades:A", "book:B", "ticker:C")
HISTORY = 6
CAP = 3000
CLOSE_FRAME_MAX = 2 + 125


class ClientSocket:
    """The client end: what the hub wrote, split into what the client has read and what
    waits unread in the socket while it is stalled (counted against its cap)."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.unread = bytearray()
        self.stalled = False
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        (self.unread if self.stalled else self.received).extend(data)

    def get_write_buffer_size(self) -> int:
        return len(self.unread)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def resume(self) -> None:
        self.received.extend(self.unread)
        self.unread.clear()
        self.stalled = False


class Pipe:
    """Between the engine and the hub: drops deliveries while pub/sub is 'down'.

    Keeps ``behind``: the channels whose latest delivery the hub may not have had. It is
    decided here, when the engine delivers (with Redis that is not when the publisher
    has its reply): a dropped delivery puts its channel there, one that reaches the hub
    while the engine answers takes it out (the hub recovers what it missed before)."""

    def __init__(self) -> None:
        self.hub: Hub | None = None
        self.dropping = False
        self.engine: Flaky | None = None
        self.behind: set[str] = set()

    def on_publication(self, pub: Publication) -> None:
        if self.dropping:
            self.behind.add(pub.channel)
            return
        if self.engine is not None and not self.engine.down:
            self.behind.discard(pub.channel)
        if self.hub is not None:
            self.hub.on_publication(pub)

    def on_resync(self) -> None:
        if self.hub is not None:
            self.hub.on_resync()


class Flaky(Engine):
    """The real engine, failing every call while ``down``."""

    name = "flaky"

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise EngineUnavailable("engine down (test)")

    async def start(self, handler: EngineHandler) -> None:
        await self.inner.start(handler)

    async def close(self) -> None:
        await self.inner.close()

    async def publish(
        self, channel: str, data: bytes, *, snapshot: bytes | None = None, ts: int | None = None
    ) -> Publication:
        self._check()
        return await self.inner.publish(channel, data, snapshot=snapshot, ts=ts)

    async def publish_many(
        self, items: Sequence[tuple[str, bytes, bytes | None]], *, ts: int | None = None
    ) -> list[Publication]:
        self._check()
        return await self.inner.publish_many(items, ts=ts)

    async def history(
        self, channel: str, since: Position, *, limit: int | None = None
    ) -> HistoryResult:
        self._check()
        return await self.inner.history(channel, since, limit=limit)

    async def position(self, channel: str) -> Position:
        self._check()
        return await self.inner.position(channel)

    async def snapshot(self, channel: str) -> Snapshot | None:
        self._check()
        return await self.inner.snapshot(channel)

    async def request_snapshot(self, channel: str) -> None:
        self._check()
        await self.inner.request_snapshot(channel)

    def snapshot_wanted(self, channel: str) -> bool:
        return self.inner.snapshot_wanted(channel)

    async def subscribe(self, channels: Iterable[str]) -> None:
        self._check()
        await self.inner.subscribe(channels)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        self._check()
        await self.inner.unsubscribe(channels)


class Services:
    """What the server gives each connection core (anonymous clients, no rate limit)."""

    def __init__(self, hub: Hub, loop: asyncio.AbstractEventLoop) -> None:
        self.hub = hub
        self.loop = loop
        self.limits = Limits(max_channels=10, requests_per_second=1e9, request_burst=1e9)

    def channel_exists(self, channel: Channel) -> bool:
        return True

    async def verify(self, credential: Credential) -> Principal:
        raise AuthError("unauthorized", "no credentials here")

    def call_later(self, delay: float, callback: Any) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, callback)

    def time(self) -> float:
        return self.loop.time()

    def monotonic(self) -> float:
        return self.loop.time()

    def now_ms(self) -> int:
        return now_ms()


@dataclass
class Stream:
    """What one client may receive next on one channel."""

    subscribed: bool = False
    #: ("next", epoch, seq): a publication epoch/seq+1 must come next;
    #: ("snapshot",): a snapshot must come first (a state channel waiting for one)
    expect: tuple[Any, ...] | None = None
    last: Position | None = None


@dataclass
class Client:
    conn: Connection
    sock: ClientSocket
    core: ConnectionCore
    offset: int = 0
    closed_with: int | None = None
    streams: dict[str, Stream] = field(default_factory=dict)
    #: request id -> {channel: since} of subscribe requests
    requests: dict[int, dict[str, Position | None]] = field(default_factory=dict)
    inflight: int = 0
    #: the last messages received (shown when an assertion fails)
    log: list[Any] = field(default_factory=list)


class HubMachine(RuleBasedStateMachine):
    ENGINE = "memory"
    #: the Redis engine's URL (a redis+cluster:// one for the cluster run)
    URL = REDIS_URL
    #: the shards' URLs (the sharded run)
    URLS: list[str] = []

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        if self.ENGINE == "memory":
            inner: Engine = MemoryEngine(HistorySettings(size=HISTORY, ttl=3600))
        elif self.ENGINE == "shards":
            inner = ScratchShardedEngine(
                self.URLS, HistorySettings(size=HISTORY, ttl=3600), prefix=redis_prefix()
            )
        else:
            inner = ScratchRedisEngine(
                self.URL, HistorySettings(size=HISTORY, ttl=3600), prefix=redis_prefix()
            )
        self.inner = inner
        self.engine = Flaky(inner)
        self.pipe = Pipe()
        self.hub = Hub(self.engine, max_recover=HISTORY, drain_timeout=3600)
        self.pipe.hub = self.hub
        self.pipe.engine = self.engine
        self.services = Services(self.hub, self.loop)
        self.run(self.engine.start(self.pipe))
        self.clients: list[Client] = []
        #: (channel, epoch, seq) -> the counter published with it
        self.truth: dict[tuple[str, str, int], int] = {}
        #: what clients received before its publisher had the engine's reply
        self.seen: dict[tuple[str, str, int], int] = {}
        self.latest: dict[str, Position] = {}
        self.counter = 0
        self.since_snapshot: dict[str, int] = {}
        self.snapshot_every = {"book:B": 3, "ticker:C": 1}
        self.tasks: set[asyncio.Task[None]] = set()
        self.failures: list[BaseException | None] = []
        self.rid = 0
        #: channels whose latest publications the hub may not have been delivered
        #: (dropped by pub/sub, or a recovery failed with the engine down; no resync and
        #: no publication since)
        self.behind = self.pipe.behind

    # -- plumbing -----------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failures.append(task.exception())

    def open_clients(self) -> list[Client]:
        return [c for c in self.clients if c.closed_with is None and not c.conn.closed]

    async def _publish(self, channels: Sequence[str]) -> None:
        items: list[tuple[str, bytes, bytes | None]] = []
        counters = []
        for ch in channels:
            self.counter += 1
            k = self.counter
            counters.append(k)
            snap = None
            if ch in self.snapshot_every:
                n = self.since_snapshot.get(ch)
                wanted = self.engine.snapshot_wanted(ch)
                if n is None or n + 1 >= self.snapshot_every[ch] or wanted:
                    snap = json.dumps({"upto": k}).encode()
                    self.since_snapshot[ch] = 0
                else:
                    self.since_snapshot[ch] = n + 1
            items.append((ch, json.dumps({"k": k}).encode(), snap))
        try:
            pubs = await self.engine.publish_many(items)
        except EngineUnavailable:
            return
        for pub, k in zip(pubs, counters, strict=True):
            key = (pub.channel, pub.epoch, pub.seq)
            self.truth[key] = k
            # with Redis a client may have it before the publisher has the reply
            early = self.seen.pop(key, None)
            assert early is None or early == k, (key, early, k)
            latest = self.latest.get(pub.channel)
            if latest is None or latest.epoch != pub.epoch or latest.seq < pub.seq:
                # (concurrent batches may come back in any order)
                self.latest[pub.channel] = Position(pub.epoch, pub.seq)

    async def _subscribe(self, client: Client, request: dict[str, Position | None]) -> None:
        """The request as a native client sends it, served by the real connection core
        (which replies, and on failure leaves no trace)."""
        self.rid += 1
        rid = self.rid
        client.requests[rid] = request
        channels: list[Any] = [
            name
            if since is None
            else {"channel": name, "since": {"epoch": since.epoch, "seq": since.seq}}
            for name, since in request.items()
        ]
        try:
            await client.core.receive(
                json.dumps({"id": rid, "op": "subscribe", "channels": channels})
            )
        finally:
            client.inflight -= 1

    async def _publications_done(self) -> None:
        async with asyncio.timeout(10):
            while self.tasks:
                await asyncio.wait(set(self.tasks))

    async def _resync(self) -> None:
        await asyncio.sleep(0)
        self.pipe.on_resync()

    async def _iterations(self, n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    async def _settle(self) -> None:
        """Run until nothing is in flight and every channel's deliveries arrived."""
        try:
            await self._settle_within(10)
        except TimeoutError:
            stuck = {
                "tasks": [t.get_coro() for t in self.tasks],
                "hub tasks": [t.get_coro() for t in self.hub._tasks],
                "positions": {n: self.hub.channel_position(n) for n in CHANNELS},
                "latest": self.latest,
                "behind": self.behind,
            }
            raise AssertionError(f"did not settle: {stuck}") from None

    async def _settle_within(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while True:
                await asyncio.sleep(0 if self.ENGINE == "memory" else 0.002)
                if self.tasks or self.hub._tasks or self.hub._dirty:
                    continue
                if self.pipe.dropping or self.engine.down:
                    return
                lagging = [
                    name
                    for name in CHANNELS
                    if name not in self.behind
                    and (pos := self.hub.channel_position(name)) is not None
                    and name in self.latest
                    and pos.epoch == self.latest[name].epoch
                    and pos != self.latest[name]
                ]
                if not lagging:
                    return

    # -- rules -------------------------------------------------------------------------

    @precondition(lambda self: len(self.clients) < 4)
    @rule()
    def connect(self) -> None:
        sock = ClientSocket()

        async def make() -> Connection:
            return self.hub.connect(sock, native.NATIVE, CAP)

        conn = self.run(make())
        core = ConnectionCore(self.services, native.Native(Handshake("/ws", {}, {})), conn)
        self.run(core.open(None))
        self.clients.append(Client(conn, sock, core))

    @precondition(lambda self: bool(self.clients))
    @rule(
        data=st.data(),
        names=st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3, unique=True),
    )
    def subscribe(self, data: st.DataObject, names: list[str]) -> None:
        client = data.draw(st.sampled_from(self.clients))
        # drawn whatever the client's state (timing with Redis): the same choices must
        # replay as the same draws when Hypothesis shrinks
        kinds = [data.draw(st.sampled_from(["none", "last", "stale", "epoch"])) for _ in names]
        if client.closed_with is not None or client.conn.closed or client.inflight:
            return  # a connection's requests are served one after the other
        request: dict[str, Position | None] = {}
        for name, kind in zip(names, kinds, strict=True):
            last = client.streams.get(name, Stream()).last
            if kind == "last" and last is not None:
                request[name] = last
            elif kind == "stale" and name in self.latest:
                request[name] = Position(self.latest[name].epoch, 0)
            elif kind == "epoch":
                request[name] = Position("0ther0ep", 1)
            else:
                request[name] = None
        client.inflight += 1
        self.spawn(self._subscribe(client, request))

    @precondition(lambda self: bool(self.clients))
    @rule(data=st.data(), name=st.sampled_from(CHANNELS))
    def unsubscribe(self, data: st.DataObject, name: str) -> None:
        client = data.draw(st.sampled_from(self.clients))
        if client.closed_with is not None or client.conn.closed or client.inflight:
            return  # a connection's requests are served one after the other
        self.rid += 1
        rid = self.rid

        message = {"id": rid, "op": "unsubscribe", "channels": [name]}
        self.run(client.core.receive(json.dumps(message)))

    @precondition(lambda self: bool(self.clients))
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(self.clients))

        async def go() -> None:  # the hub's calls run on its event loop
            client.core.finish()

        self.run(go())
        self.clients.remove(client)

    @precondition(lambda self: bool(self.clients))
    @rule(data=st.data())
    def stall(self, data: st.DataObject) -> None:
        data.draw(st.sampled_from(self.clients)).sock.stalled = True

    @precondition(lambda self: bool(self.clients))
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        data.draw(st.sampled_from(self.clients)).sock.resume()

    @rule(names=st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3))
    def publish(self, names: list[str]) -> None:
        self.spawn(self._publish(names))

    @rule(name=st.sampled_from(CHANNELS), n=st.integers(HISTORY, 3 * HISTORY))
    def flood(self, name: str, n: int) -> None:
        """More publications than history keeps: stalled clients are cut, history is
        trimmed past where late subscribers stand."""

        async def go() -> None:
            for _ in range(n):
                await self._publish([name])

        self.spawn(go())

    @rule(name=st.sampled_from(CHANNELS))
    def lose_history(self, name: str) -> None:
        """The engine forgets the channel (eviction, restart): a new epoch begins."""
        self.run(self._publications_done())  # so that which epoch is newer stays known
        inner = self.inner
        if isinstance(inner, MemoryEngine):
            inner._streams.pop(name, None)
        else:
            if isinstance(inner, ShardedRedisEngine):
                inner = inner.shard_for(name)  # the one shard that holds the channel
            assert isinstance(inner, RedisEngine)
            keys = [inner.key(name, "m"), inner.key(name, "h")]
            redis = inner._redis

            async def delete() -> None:
                await redis.delete(*keys)

            self.run(delete())
        self.since_snapshot.pop(name, None)
        self.latest.pop(name, None)  # where it stands now is the engine's to say

    @rule(down=st.booleans())
    def engine_down(self, down: bool) -> None:
        self.engine.down = down
        if down:
            # a recovery that fails now closes its subscribers; the hub learns where
            # the channel stands from its next publication
            self.behind.update(CHANNELS)

    @rule(dropping=st.booleans(), resync=st.booleans())
    def pubsub(self, dropping: bool, resync: bool) -> None:
        was = self.pipe.dropping
        self.pipe.dropping = dropping
        if was and not dropping and resync:
            self.run(self._resync())  # as the Redis engine does after a reconnect
            if not self.engine.down:
                self.behind.clear()

    @rule(n=st.integers(1, 8))
    def let_run(self, n: int) -> None:
        self.run(self._iterations(n))

    @rule()
    def settle(self) -> None:
        self.run(self._settle())
        self.check_streams()
        assert not self.seen, f"received but never published: {self.seen}"
        for client in self.open_clients():
            if client.inflight or client.sock.stalled:
                continue
            subscribed = {name for name, s in client.streams.items() if s.subscribed}
            # a failed subscribe left no trace; what the client was told is what it has
            if client.conn.channels != subscribed and os.environ.get("TICKWIRE_SM_DUMP"):
                with open(os.environ["TICKWIRE_SM_DUMP"], "w") as f:
                    json.dump([sorted(client.conn.channels), sorted(subscribed), client.log], f)
            assert client.conn.channels == subscribed, (client.conn.channels, subscribed)
            for name in subscribed:
                chan = self.hub._channels.get(name)
                assert chan is not None
                if client.conn in chan.pending:
                    assert client.conn in chan.awaiting_state  # held for a snapshot only
            if self.pipe.dropping or self.engine.down:
                continue
            for name in subscribed - self.behind:
                stream = client.streams[name]
                if stream.expect is None or stream.expect[0] != "next":
                    continue
                latest = self.latest.get(name)
                if latest is not None and latest.epoch == stream.expect[1]:
                    # live subscribers have every publication: nothing silently lost
                    assert stream.expect[2] == latest.seq, (
                        name,
                        stream,
                        latest,
                        self.hub.channel_position(name),
                        self._standing(client, name),
                        client.log[-8:],
                    )

    def _standing(self, client: Client, name: str) -> str:
        """Where the hub holds ``client`` on ``name`` (shown when an assertion fails)."""
        chan = self.hub._channels.get(name)
        if chan is None:
            return "no channel"
        conn = client.conn
        return (
            f"live={conn in chan.groups.get(conn.fmt, ())} ahead={chan.ahead.get(conn)} "
            f"pending={len(chan.pending[conn]) if conn in chan.pending else None} "
            f"awaiting={conn in chan.awaiting_state} gap={chan.gap_buffer is not None}"
        )

    # -- the invariant -----------------------------------------------------------------

    @invariant()
    def check_streams(self) -> None:
        assert not self.failures, self.failures
        for client in self.clients:
            self._check_client(client)
            # queued, unread in the socket, and buffered for its catch-ups
            conn = client.conn
            held = self.hub.held_bytes(conn) - conn.backlog + client.sock.get_write_buffer_size()
            if not client.conn.closed:
                assert held <= CAP, held
            else:
                assert client.sock.get_write_buffer_size() <= CAP + CLOSE_FRAME_MAX

    def _check_client(self, client: Client) -> None:
        data = client.sock.received
        while True:
            off = client.offset
            if len(data) - off < 2:
                return
            b0, b1 = data[off], data[off + 1]
            n, start = b1 & 0x7F, off + 2
            if n == 126:
                if len(data) - off < 4:
                    return
                n, start = struct.unpack("!H", data[off + 2 : off + 4])[0], off + 4
            elif n == 127:
                if len(data) - off < 10:
                    return
                n, start = struct.unpack("!Q", data[off + 2 : off + 10])[0], off + 10
            if len(data) < start + n:
                return
            payload = bytes(data[start : start + n])
            client.offset = start + n
            assert client.closed_with is None, "a frame after the close frame"
            if b0 == 0x88:
                client.closed_with = struct.unpack("!H", payload[:2])[0]
                assert client.closed_with in (3001, 3008, 3503), client.closed_with
                continue
            assert b0 == 0x81, b0
            self._check_message(client, json.loads(payload))

    def _check_message(self, client: Client, msg: dict[str, Any]) -> None:
        client.log.append(msg)
        del client.log[:-50]
        kind = msg["type"]
        if kind == "subscribed":
            request = client.requests[msg["id"]]
            for item in msg["channels"]:
                name = item["channel"]
                since = request[name]
                stream = client.streams.setdefault(name, Stream())
                stream.subscribed = True
                if since is not None and item.get("recovered") is True:
                    assert item["epoch"] == since.epoch
                    stream.expect = ("next", since.epoch, since.seq)
                elif parse_channel(name).stateful:
                    stream.expect = ("snapshot",)
                else:
                    stream.expect = ("next", item["epoch"], item["seq"])
                if since is not None:
                    assert "recovered" in item  # told, either way
            return
        if kind == "unsubscribed":
            for name in msg["channels"]:
                client.streams[name] = Stream()
            return
        if kind == "error":
            assert msg["code"] == "unavailable", msg
            return
        name = msg["channel"]
        found = client.streams.get(name)
        assert found is not None and found.subscribed, f"{kind} on {name} unasked"
        stream = found
        if kind == "reset":
            stream.expect = (
                ("snapshot",)
                if parse_channel(name).stateful
                else ("next", msg["epoch"], msg["seq"])
            )
            return
        key = (name, msg["epoch"], msg["seq"])
        k = msg["data"]["upto" if kind == "snapshot" else "k"]
        if key in self.truth:  # the data published with that seq
            assert k == self.truth[key], (msg, self.truth[key])
        else:
            assert self.seen.setdefault(key, k) == k, (msg, self.seen[key])
        if kind == "snapshot":
            assert stream.expect is not None and stream.expect[0] == "snapshot", (stream, msg)
        else:
            assert kind == "pub", msg
            expect = stream.expect
            assert expect is not None and expect[0] == "next", (stream, msg)
            assert (msg["epoch"], msg["seq"]) == (expect[1], expect[2] + 1), (stream, msg)
        stream.expect = ("next", msg["epoch"], msg["seq"])
        stream.last = Position(msg["epoch"], msg["seq"])

    def teardown(self) -> None:
        try:
            self.engine.down = False
            self.pipe.dropping = False
            self.run(self._settle())
            self.check_streams()
        finally:
            for task in list(self.tasks):
                task.cancel()
            if self.tasks:
                self.run(asyncio.wait(self.tasks))
            self.run(self.hub.close())
            self.run(self.engine.close())
            self.loop.close()


class RedisMachine(HubMachine):
    ENGINE = "redis"


SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    # TICKWIRE_SM_SHRINK=0: report the first failure as found (debugging)
    phases=list(Phase)
    if os.environ.get("TICKWIRE_SM_SHRINK", "1") != "0"
    else [Phase.explicit, Phase.reuse, Phase.generate],
)


def test_hub_state_machine_memory() -> None:
    HubMachine.TestCase.settings = SETTINGS
    HubMachine.TestCase().runTest()


def test_hub_state_machine_redis() -> None:
    require_redis()
    RedisMachine.TestCase.settings = SETTINGS
    RedisMachine.TestCase().runTest()


class ClusterMachine(HubMachine):
    ENGINE = "cluster"


def test_hub_state_machine_redis_cluster(redis_cluster: RedisCluster) -> None:
    """The same machine on the private 3-master Redis Cluster (sharded pub/sub)."""
    ClusterMachine.URL = redis_cluster.url
    ClusterMachine.TestCase.settings = SETTINGS
    ClusterMachine.TestCase().runTest()


class ShardsMachine(HubMachine):
    ENGINE = "shards"


def test_hub_state_machine_redis_shards(redis_shards: RedisShards) -> None:
    """The same machine on a 3-shard engine (the machine's three channels place on
    more than one shard, so its batches span shards)."""
    ShardsMachine.URLS = redis_shards.urls
    ShardsMachine.TestCase.settings = SETTINGS
    ShardsMachine.TestCase().runTest()


@pytest.fixture(autouse=True)
def _no_running_loop() -> None:
    """The machine runs its own event loop (one per example)."""

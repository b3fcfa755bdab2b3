"""The sharded Redis engine (engine/redis/shards.py): placement, the URL list, a
publish_many across shards, and channels that move when a shard is added.

The conformance suite and the hub state machine run on it too (the ``shards`` engine of
``engine_factory``, ``test_hub_state_machine_redis_shards``)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tickwire.auth.redis_state import RedisNonces
from tickwire.engine import EngineError, EngineUnavailable, HistorySettings
from tickwire.engine.redis import RedisEngine, ShardedRedisEngine, home_shard, parse_shards
from tickwire.engine.redis.shards import place, placement_key
from tickwire.engine.urls import is_engine_url, redact
from tickwire.model.publication import Position
from tickwire.server.auth_routes import shared_nonces
from tickwire.server.config import ConfigError, load_config
from tickwire.server.node import make_engine

from .conftest import Recorder, ScratchShardedEngine, delete_prefix, redis_prefix
from .harness import run_gateway
from .redis_server import RedisServer
from .redis_shards import RedisShards
from .test_cluster_redis import Gateway, Subscriber, start_all, stop_all

SETTINGS = HistorySettings(size=50, ttl=60.0)


def body(i: int) -> bytes:
    return json.dumps({"i": i}).encode()


@pytest.fixture
async def sharded(redis_shards: RedisShards) -> AsyncIterator[tuple[ShardedRedisEngine, Recorder]]:
    eng = ScratchShardedEngine(redis_shards.urls, SETTINGS, prefix=redis_prefix())
    rec = Recorder()
    await eng.start(rec)
    try:
        yield eng, rec
    finally:
        await eng.close()


def symbols_on(eng: ShardedRedisEngine) -> dict[str, str]:
    """One market symbol placed on each shard: shard name -> symbol."""
    found: dict[str, str] = {}
    for i in itertools.count():
        found.setdefault(eng.shard_name(f"trades:M{i}-USD"), f"M{i}-USD")
        if len(found) == len(eng.names):
            return found
    raise AssertionError("unreachable")


# -- placement --------------------------------------------------------------------------

#: Placements under the names s1, s2, s3: they must never change (a change would move
#: channels on every deployment that upgrades).
GOLDEN = {
    "trades:BTC-USD": "s2",
    "book:ETH-USD": "s3",
    "sentiment:AAPL": "s3",
    "user:alice:orders": "s2",
    "scoped:admin:orders.new": "s1",
    "trades:A": "s3",
    "book:B": "s1",
    "ticker:C": "s1",
}


def test_placement_is_a_fixed_function_of_the_names() -> None:
    names = ["s1", "s2", "s3"]
    for channel, shard in GOLDEN.items():
        for order in itertools.permutations(names):
            assert place(placement_key(channel), order) == shard, (channel, order)


def test_placement_does_not_depend_on_the_url_order() -> None:
    urls = [f"redis://127.0.0.1:{p}/0" for p in (7001, 7002, 7003)]
    channels = [f"{kind}:M{i}" for i in range(200) for kind in ("trades", "book")]
    engines = [ShardedRedisEngine(order) for order in itertools.permutations(urls)]
    placements = [[eng.shard_name(c) for c in channels] for eng in engines]
    assert all(p == placements[0] for p in placements)
    assert set(placements[0]) == {"127.0.0.1:7001/0", "127.0.0.1:7002/0", "127.0.0.1:7003/0"}


def test_adding_a_shard_moves_only_channels_to_the_new_shard() -> None:
    channels = [f"trades:M{i}" for i in range(4000)] + [f"user:u{i}:orders" for i in range(2000)]
    before = {c: place(placement_key(c), ["a", "b", "c"]) for c in channels}
    after = {c: place(placement_key(c), ["a", "b", "c", "d"]) for c in channels}
    moved = [c for c in channels if before[c] != after[c]]
    assert moved and all(after[c] == "d" for c in moved)
    assert 0.2 < len(moved) / len(channels) < 0.3  # about 1/4
    # and removing it again puts every channel back where it was
    assert {c: place(placement_key(c), ["a", "b", "c"]) for c in moved} == {
        c: before[c] for c in moved
    }


def test_one_market_and_one_user_stay_on_one_shard() -> None:
    eng = ShardedRedisEngine([f"redis://127.0.0.1:{p}/0" for p in range(7001, 7006)])
    for i in range(50):
        market = [
            f"trades:M{i}",
            f"book:M{i}",
            f"ticker:M{i}",
            f"ticker_batch:M{i}",
            *(f"candles:M{i}:{iv}" for iv in ("1m", "5m", "1h", "1d")),
        ]
        assert len({eng.shard_name(c) for c in market}) == 1, market
        user = [f"user:u{i}:orders", f"user:u{i}:open_orders", f"user:u{i}:trades"]
        assert len({eng.shard_name(c) for c in user}) == 1, user
    spread = {eng.shard_name(f"trades:M{i}") for i in range(50)}
    assert len(spread) == 5  # markets do spread over the shards


# -- shard URLs -------------------------------------------------------------------------


def test_shard_names_ignore_credentials_scheme_and_options() -> None:
    specs = parse_shards(
        [
            "rediss://:pw@Cache-1:6380/2?ssl_cert_reqs=none&prefix=tw",
            "redis://cache-2?prefix=tw",
            "unix:///run/redis.sock?db=3&prefix=tw",
            "redis+sentinel://:pw@s1,s2:26380/mymaster/1?prefix=tw",
            "redis://cache-1:6380/3?shard=blue&prefix=tw",
        ]
    )
    assert [s.name for s in specs] == [
        "blue",
        "cache-1:6380/2",
        "cache-2:6379/0",
        "sentinel:mymaster/1",
        "unix:/run/redis.sock/3",
    ]
    blue = specs[0]
    assert "shard=" not in blue.url and "prefix=tw" in blue.url  # redis-py never sees it
    again = parse_shards(["redis://cache-1:6380/2", "redis://:other@cache-2:6379/0"])
    assert [s.name for s in again] == ["cache-1:6380/2", "cache-2:6379/0"]


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        (["redis://h1", "redis://:pw@h1:6379/0"], "are the same shard 'h1:6379/0'"),
        (["redis://h1?shard=x", "redis://h2?shard=x"], "are the same shard 'x'"),
        (["redis://h1", "redis+cluster://h2,h3"], "a Redis Cluster cannot be one shard"),
        (["redis://h1?prefix=a", "redis://h2?prefix=b"], "the same ?prefix="),
        (["redis://h1?prefix=a", "redis://h2"], "the same ?prefix="),
        (["redis://h1", "redis://h2?shard="], "?shard= names no shard"),
        (["redis://h1", "http://h2"], "engine URL scheme must be one of"),
        ([], "at least one Redis URL"),
    ],
)
def test_bad_shard_lists_are_refused_naming_why(urls: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        parse_shards(urls)


def test_engine_setting_takes_a_space_separated_list_or_a_toml_list(tmp_path: Path) -> None:
    urls = ["redis://:secret1@127.0.0.1:7001/0", "redis://:secret2@127.0.0.1:7002/0"]
    env = load_config(env={"TICKWIRE_ENGINE": "  ".join(urls)})
    assert isinstance(make_engine(env), ShardedRedisEngine)
    flag = load_config({"engine": " ".join(urls)}, env={})
    engine = make_engine(flag)
    assert isinstance(engine, ShardedRedisEngine) and len(engine.shards) == 2
    toml = tmp_path / "tickwire.toml"
    toml.write_text(f"engine = {json.dumps(urls)}\n")
    from_file = load_config(file=toml, env={})
    assert from_file.engine == " ".join(urls)
    assert isinstance(make_engine(from_file), ShardedRedisEngine)
    one = load_config({"engine": urls[0]}, env={})
    assert type(make_engine(one)) is RedisEngine
    # shown without either password
    shown = redact(" ".join(urls))
    assert "secret" not in shown and shown.count("***") == 2
    assert is_engine_url(" ".join(urls)) and not is_engine_url(f"memory {urls[0]}")
    with pytest.raises(ConfigError, match=r"config field 'engine'.*same shard"):
        make_engine(load_config({"engine": f"{urls[0]} {urls[0]}"}, env={}))
    with pytest.raises(ConfigError, match="several Redis URLs separated by spaces"):
        make_engine(load_config({"engine": f"memory {urls[0]}"}, env={}))


async def test_shared_nonces_live_on_the_home_shard() -> None:
    urls = [f"redis://127.0.0.1:{p}/0?prefix=twx" for p in (7001, 7002, 7003)]
    home = home_shard(urls)
    assert home in urls
    assert home_shard(list(reversed(urls))) == home
    nonces = shared_nonces(load_config({"engine": " ".join(urls)}, env={}))
    assert isinstance(nonces, RedisNonces) and nonces.prefix == "twx"
    port = nonces.client.connection_pool.connection_kwargs["port"]
    assert f":{port}/" in home
    await nonces.client.aclose()


# -- a real 3-shard engine ----------------------------------------------------------------


async def test_publications_of_every_shard_reach_the_node(
    sharded: tuple[ShardedRedisEngine, Recorder],
) -> None:
    eng, rec = sharded
    channels = [f"trades:{sym}" for sym in symbols_on(eng).values()]
    await eng.subscribe(channels)
    for shard in eng.shards.values():
        assert len(shard.subscribed) == 1  # each channel only on its own shard
        listing = await shard._redis.client_list(_type="pubsub")
        mine = [c for c in listing if c.get("name") == f"tickwire:{shard.node_id}"]
        assert len(mine) == 1 and mine[0]["sub"] == "1"  # one pub/sub connection per shard
    assert eng.subscribed == set(channels)
    pubs = [await eng.publish(c, body(i)) for i, c in enumerate(channels)]
    await rec.wait(lambda: len(rec.pubs) == 3)
    assert sorted(rec.pubs, key=lambda p: p.channel) == sorted(pubs, key=lambda p: p.channel)
    for c in channels:  # each channel's keys on its own shard only
        for name, shard in eng.shards.items():
            held = await shard._redis.exists(shard.key(c, "m"))
            assert held == (name == eng.shard_name(c))
    await eng.unsubscribe(channels)
    assert eng.subscribed == frozenset()


async def test_publish_many_across_shards_publishes_every_part(
    sharded: tuple[ShardedRedisEngine, Recorder],
) -> None:
    eng, rec = sharded
    syms = list(symbols_on(eng).values())
    items: list[tuple[str, bytes, bytes | None]] = [
        (f"ticker_batch:{s}", body(i), body(i)) for i, s in enumerate(syms)
    ]
    items += [(f"trades:{syms[0]}", body(9), None)]
    await eng.subscribe([c for c, _, _ in items])
    pubs = await eng.publish_many(items, ts=1234)
    assert [p.channel for p in pubs] == [c for c, _, _ in items]
    assert [p.seq for p in pubs] == [1, 1, 1, 1] and {p.ts for p in pubs} == {1234}
    await rec.wait(lambda: len(rec.pubs) == 4)
    snap = await eng.snapshot(items[1][0])
    assert snap is not None and bytes(snap.data) == body(1)
    assert sum(eng.stats.published.values()) == 4


async def test_publish_many_across_shards_refused_on_one_publishes_nothing(
    sharded: tuple[ShardedRedisEngine, Recorder],
) -> None:
    eng, _ = sharded
    syms = list(symbols_on(eng).values())
    good, bad = f"ticker_batch:{syms[0]}", f"ticker_batch:{syms[1]}"
    await eng.publish(good, body(0))
    bad_shard = eng.shard_for(bad)
    await bad_shard._redis.set(bad_shard.key(bad, "m"), "not a hash")
    with pytest.raises(EngineError, match=rf"refused '{bad}'.*nothing of the batch"):
        await eng.publish_many([(good, body(1), None), (bad, body(1), None)])
    assert (await eng.position(good)).seq == 1  # the other shard's part was not published
    assert eng.stats.publish_errors == 1


async def test_publish_many_across_shards_with_a_shard_down_publishes_nothing(
    tmp_path: Path, redis_shards: RedisShards
) -> None:
    private = RedisServer(tmp_path)
    await private.start()
    urls = [redis_shards.urls[0], private.url + "?shard=private"]
    eng = ScratchShardedEngine(urls, SETTINGS, prefix=redis_prefix(), timeout=1.0)
    try:
        await eng.start(Recorder())
        on = {eng.shard_name(f"trades:M{i}"): f"trades:M{i}" for i in range(50)}
        up, down = on["s1"], on["private"]
        await private.stop()
        with pytest.raises(EngineUnavailable, match="unavailable"):
            await eng.publish_many([(up, body(0), None), (down, body(0), None)])
        assert (await eng.position(up)).seq == 0
    finally:
        await eng.close()
        await private.stop()


async def test_one_shard_down_fails_a_subscribe_whole_and_its_return_resyncs(
    tmp_path: Path, redis_shards: RedisShards
) -> None:
    """A subscribe over two shards, one of them down, leaves no subscription on the
    other; when the shard comes back its pub/sub loop reconnects and the node's handler
    is told to resync."""
    private = RedisServer(tmp_path)
    await private.start()
    urls = [redis_shards.urls[0], private.url + "?shard=private"]
    eng = ScratchShardedEngine(
        urls, SETTINGS, prefix=redis_prefix(), timeout=1.0, backoff=(0.05, 0.2)
    )
    rec = Recorder()
    try:
        await eng.start(rec)
        on = {eng.shard_name(f"trades:M{i}"): f"trades:M{i}" for i in range(50)}
        up, down = on["s1"], on["private"]
        await private.stop()
        with pytest.raises(EngineUnavailable):
            await eng.subscribe([up, down])
        assert eng.subscribed == frozenset()  # nothing left on the shard that answered
        await eng.subscribe([up])  # the other shard's channels go on
        pub = await eng.publish(up, body(1))
        await rec.wait(lambda: rec.pubs == [pub])
        assert rec.resyncs == 0
        await private.start()
        await rec.wait(lambda: rec.resyncs == 1, timeout=10)
        assert eng.reconnects == 1
        await eng.subscribe([down])
        try:
            pub = await eng.publish(down, body(2))
        except EngineUnavailable:
            # the pooled command connection broke with the restart: the plain engine
            # reports that on its first call, as it does without shards (nothing written)
            pub = await eng.publish(down, body(3))
        await rec.wait(lambda: rec.pubs[-1] == pub)
        assert pub.seq == 1
    finally:
        await eng.close()
        await private.stop()


async def test_a_shard_that_does_not_answer_fails_the_start(
    tmp_path: Path, redis_shards: RedisShards
) -> None:
    private = RedisServer(tmp_path)  # never started: nobody listens on its port
    eng = ShardedRedisEngine([redis_shards.urls[0], private.url], SETTINGS, timeout=1.0)
    with pytest.raises(EngineUnavailable, match=re.escape(f"127.0.0.1:{private.port}")):
        await eng.start(Recorder())
    await eng.close()


# -- adding a shard -----------------------------------------------------------------------


async def test_adding_a_shard_forgets_moved_channels_on_their_old_shard(
    redis_shards: RedisShards,
) -> None:
    prefix = redis_prefix()
    three = ScratchShardedEngine(redis_shards.urls, SETTINGS, prefix=prefix)
    two = ShardedRedisEngine(redis_shards.urls[:2], SETTINGS, prefix=prefix)
    moving = symbols_on(three)["s3"]  # on s1 or s2 with two shards, on s3 with three
    staying = symbols_on(three)["s1"]
    await two.start(Recorder())
    try:
        old = await two.publish(f"book:{moving}", body(1), snapshot=body(1))
        kept = await two.publish(f"book:{staying}", body(1), snapshot=body(1))
        old_shard = two.shard_for(f"book:{moving}")
    finally:
        await two.close()
    await three.start(Recorder())
    try:
        assert three.forgotten == 2  # the moved channel's meta and stream
        assert not await old_shard._redis.exists(old_shard.key(f"book:{moving}", "m"))
        res = await three.history(f"book:{moving}", old.position)
        assert not res.recovered and res.position.epoch != old.epoch
        assert await three.snapshot(f"book:{moving}") is None
        res = await three.history(f"book:{staying}", kept.position)
        assert res.recovered and res.position == kept.position
    finally:
        await three.close()
    again = ScratchShardedEngine(redis_shards.urls, SETTINGS, prefix=prefix)
    await again.start(Recorder())
    try:
        assert again.forgotten == 0  # the same set: nothing scanned, nothing deleted
    finally:
        await again.close()


async def _publish_on(urls: list[str], prefix: str, channel: str, n: int) -> Position:
    """Start an engine on ``urls`` (one URL: the plain engine), publish ``n`` times."""
    eng = (
        RedisEngine(urls[0], SETTINGS, prefix=prefix)
        if len(urls) == 1
        else ShardedRedisEngine(urls, SETTINGS, prefix=prefix)
    )
    await eng.start(Recorder())
    try:
        pub = None
        for i in range(n):
            pub = await eng.publish(channel, body(i), snapshot=body(i))
        assert pub is not None
        return pub.position
    finally:
        await eng.close()


@pytest.mark.parametrize("between", ["two shards", "one plain Redis"])
async def test_a_shard_that_rejoins_forgets_every_channel_it_held(
    redis_shards: RedisShards, between: str
) -> None:
    """s3 leaves the set (two shards, or one plain Redis on s1) and comes back: its
    channels were published elsewhere meanwhile, so what it still holds is stale and a
    client holding the old epoch must not resume it as if nothing had happened."""
    prefix = redis_prefix()
    urls = redis_shards.urls
    probe = ShardedRedisEngine(urls)
    channel = f"book:{symbols_on(probe)['s3']}"
    try:
        first = await _publish_on(urls, prefix, channel, 3)
        meanwhile = urls[:2] if between == "two shards" else [urls[0]]
        elsewhere = await _publish_on(meanwhile, prefix, channel, 2)
        assert elsewhere.epoch != first.epoch
        back = ScratchShardedEngine(urls, SETTINGS, prefix=prefix)
        await back.start(Recorder())
        try:
            assert back.forgotten >= 2  # s3's meta and stream of the channel
            res = await back.history(channel, first)
            assert not res.recovered  # not the old epoch, resumed with a gap
            assert res.position.epoch not in (first.epoch, elsewhere.epoch)
            assert await back.snapshot(channel) is None
        finally:
            await back.close()
    finally:
        for shard in ShardedRedisEngine(urls, prefix=prefix).shards.values():
            await delete_prefix(shard)
            await shard.close()


async def test_clients_of_a_moved_channel_get_recovered_false_and_a_snapshot(
    redis_shards: RedisShards,
) -> None:
    """Publish on a 2-shard node, restart it with a third shard: a client resuming a
    channel that moved gets ``recovered: false``, then a snapshot, then every update;
    one on a channel that stayed recovers."""
    prefix = redis_prefix()
    urls = [f"{u}&prefix={prefix}" for u in redis_shards.urls]
    probe = ShardedRedisEngine(urls)
    moving, staying = symbols_on(probe)["s3"], symbols_on(probe)["s1"]
    moved, kept = f"ticker:{moving}", f"ticker:{staying}"
    markets = [moving, staying]
    try:
        async with run_gateway(engine=" ".join(urls[:2]), markets=markets) as gw:
            for i in range(3):
                await gw.publish(moved, {"i": i}, snapshot={"v": i})
                await gw.publish(kept, {"i": i}, snapshot={"v": i})
            c = await gw.connect()
            reply = await c.subscribe(moved, kept)
            was = {ch["channel"]: Position(ch["epoch"], ch["seq"]) for ch in reply["channels"]}
            assert was[moved].seq == 3 and was[kept].seq == 3
        async with run_gateway(engine=" ".join(urls), markets=markets) as gw:
            c = await gw.connect()
            reply = await c.subscribe(
                *(
                    {"channel": ch, "since": {"epoch": pos.epoch, "seq": pos.seq}}
                    for ch, pos in was.items()
                )
            )
            now = {ch["channel"]: ch for ch in reply["channels"]}
            assert now[kept]["recovered"] is True and now[kept]["epoch"] == was[kept].epoch
            assert now[moved]["recovered"] is False
            assert now[moved]["epoch"] != was[moved].epoch and now[moved]["seq"] == 0
            # the new shard has no snapshot yet: the publisher is asked for one
            assert gw.node.engine.snapshot_wanted(moved)
            await gw.publish(moved, {"i": 3}, snapshot={"v": 3})
            snap = await c.recv_type("snapshot")
            assert snap["channel"] == moved and snap["data"] == {"v": 3}
            assert (snap["epoch"], snap["seq"]) == (now[moved]["epoch"], 1)
            await gw.publish(moved, {"i": 4}, snapshot={"v": 4})
            await gw.publish(kept, {"i": 3}, snapshot={"v": 3})
            seen = [await c.recv_type("pub") for _ in range(2)]
            assert sorted((m["channel"], m["seq"]) for m in seen) == sorted([(moved, 2), (kept, 4)])
    finally:
        for shard in ShardedRedisEngine(urls).shards.values():
            await delete_prefix(shard)
            await shard.close()


# -- two processes ----------------------------------------------------------------------


async def test_two_nodes_on_three_shards_deliver_the_same_seqs(redis_shards: RedisShards) -> None:
    """Two ``tickwire serve`` processes on the same three shards: node A's synthetic
    publisher publishes six markets' trades in batches that span the shards; a subscriber
    on B sees every publication A's subscriber sees, with the same epoch, seq and data."""
    prefix = redis_prefix()
    urls = [f"{u}&prefix={prefix}" for u in redis_shards.urls]
    markets = [f"S{i}-USD" for i in range(6)]
    channels = [f"trades:{m}" for m in markets]
    probe = ShardedRedisEngine(urls)
    assert len({probe.shard_name(c) for c in channels}) == 3  # every batch spans shards
    env = {"TICKWIRE_MARKETS": ",".join(markets)}
    spec = "channel=trades:S{i}-USD,count=6,rate=300,batch=6,size=40"
    a = Gateway(" ".join(urls), "a", env={**env, "TICKWIRE_SYNTHETIC": spec})
    b = Gateway(" ".join(urls), "b", env=env)
    try:
        await start_all(a, b)
        async with aiohttp.ClientSession() as session:
            subs = [Subscriber(session, channels) for _ in (a, b)]
            for sub, gw in zip(subs, (a, b), strict=True):
                await sub.connect(gw.ws_url)
            readers = [asyncio.create_task(sub.read()) for sub in subs]
            for sub in subs:
                await sub.wait(lambda sub=sub: all(len(sub.seqs(c)) >= 10 for c in channels))
            for sub in subs:
                assert sub.ws is not None
                await sub.ws.close()
            await asyncio.gather(*readers)
        on_a, on_b = subs
        for c in channels:
            seen_a = {(e, s): d for (_, e, s), d in zip(_pubs(on_a, c), on_a.data[c], strict=True)}
            seen_b = {(e, s): d for (_, e, s), d in zip(_pubs(on_b, c), on_b.data[c], strict=True)}
            for sub in subs:  # no gap, no duplicate on either node
                seqs = sub.seqs(c)
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (c, seqs)
            both = seen_a.keys() & seen_b.keys()
            assert len(both) >= 5, (c, sorted(seen_a), sorted(seen_b))
            assert all(seen_a[k] == seen_b[k] for k in both)
    finally:
        await stop_all(a, b)
        for shard in ShardedRedisEngine(urls).shards.values():
            await delete_prefix(shard)
            await shard.close()


def _pubs(sub: Subscriber, channel: str) -> list[tuple[str, str, int]]:
    return [e for e in sub.streams[channel].events if e[0] == "pub"]

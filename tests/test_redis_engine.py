"""The Redis engine beyond the shared conformance suite: key layout, several nodes on one
Redis, node subscriptions, and what happens when Redis goes away or loses its data."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tickwire.engine import EngineError, EngineUnavailable, HistoryResult, HistorySettings
from tickwire.engine.redis import RedisEngine, parse_engine_url
from tickwire.engine.urls import redact
from tickwire.model import Position, Publication

from .conftest import Recorder, ScratchRedisEngine, redis_prefix, require_redis
from .redis_server import RedisServer, free_port
from .services import REDIS_URL

SETTINGS = HistorySettings(size=100, ttl=60.0)


def chan(kind: str = "trades") -> str:
    return f"{kind}:R{uuid.uuid4().hex[:12].upper()}"


def body(i: int) -> bytes:
    return json.dumps({"i": i}).encode()


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[RedisEngine, Recorder, RedisEngine, Recorder]]:
    """Two nodes on the shared Redis under one (private) prefix."""
    require_redis()
    prefix = redis_prefix()
    a = ScratchRedisEngine(REDIS_URL, SETTINGS, prefix=prefix)
    b = RedisEngine(REDIS_URL, SETTINGS, prefix=prefix)
    ra, rb = Recorder(), Recorder()
    await a.start(ra)
    await b.start(rb)
    try:
        yield a, ra, b, rb
    finally:
        await b.close()
        await a.close()


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def pubsub_clients(client: aioredis.Redis, eng: RedisEngine) -> list[dict[str, str]]:
    """The engine's pub/sub connection(s) as CLIENT LIST shows them."""
    listing = await client.client_list(_type="pubsub")
    return [c for c in listing if c.get("name") == f"tickwire:{eng.node_id}"]


# -- layout ------------------------------------------------------------------------------


async def test_keys_are_prefixed_hash_tagged_and_expire(
    nodes: tuple[RedisEngine, Recorder, RedisEngine, Recorder],
) -> None:
    a, _, _, _ = nodes
    c = chan("book")
    await a.publish(c, body(1), snapshot=b'{"s":1}')
    meta, stream = a.key(c, "m"), a.key(c, "h")
    assert meta == f"{a.prefix}{{{c}}}:m" and stream == f"{a.prefix}{{{c}}}:h"
    # Redis Cluster hashes only what is inside the first {...}: both keys, one slot
    assert {k[k.index("{") + 1 : k.index("}")] for k in (meta, stream)} == {c}
    r = a._redis
    assert 0 < await r.pttl(stream) <= 60_000
    assert 60_000 < await r.pttl(meta) <= a.meta_ttl * 1000
    entries = await r.xrange(stream)
    assert entries is not None
    assert [e[0] for e in entries] == [b"1-0"]
    fields = entries[0][1]
    assert fields is not None and fields == {b"t": fields[b"t"], b"d": body(1)}
    assert await r.hget(meta, "nd") == b'{"s":1}'


async def test_publications_reach_another_node_with_same_seq_and_epoch(
    nodes: tuple[RedisEngine, Recorder, RedisEngine, Recorder],
) -> None:
    a, ra, b, rb = nodes
    c = chan()
    await b.subscribe([c])
    sent = [await a.publish(c, body(i)) for i in range(20)]
    sent += await a.publish_many([(c, body(20), None), (c, body(21), None)])
    await rb.wait(lambda: len(rb.pubs) == 22)
    assert rb.pubs == sent
    assert ra.pubs == []  # node A has no local subscriber: it did not subscribe
    assert await b.position(c) == sent[-1].position


async def test_node_subscribes_in_redis_only_while_it_has_subscribers(
    nodes: tuple[RedisEngine, Recorder, RedisEngine, Recorder],
) -> None:
    a, _, b, rb = nodes
    c = chan()
    name = b.pubsub_channel(c)
    r = a._redis
    assert dict(await r.pubsub_numsub(name)) == {name: 0}
    await b.subscribe([c])
    await b.subscribe([c])  # already subscribed: no second Redis subscription
    assert dict(await r.pubsub_numsub(name)) == {name: 1}
    assert b.subscribed == {c}
    await b.unsubscribe([c])
    last = await a.publish(c, body(0))
    # one more channel still subscribed proves B's connection kept reading
    d = chan()
    await b.subscribe([d])
    marker = await a.publish(d, body(1))
    await rb.wait(lambda: bool(rb.pubs))
    assert rb.pubs == [marker]
    assert last.seq == 1
    assert dict(await r.pubsub_numsub(name)) == {name: 0}


async def test_concurrent_publishers_on_two_nodes_share_one_sequence(
    nodes: tuple[RedisEngine, Recorder, RedisEngine, Recorder],
) -> None:
    a, ra, b, _ = nodes
    c = chan()
    await a.subscribe([c])
    results = await asyncio.gather(*[(a if i % 2 else b).publish(c, body(i)) for i in range(60)])
    assert sorted(p.seq for p in results) == list(range(1, 61))
    await ra.wait(lambda: len(ra.pubs) == 60)
    assert [p.seq for p in ra.pubs] == list(range(1, 61))  # delivered in seq order
    by_seq = {p.seq: bytes(p.data) for p in results}
    assert all(bytes(p.data) == by_seq[p.seq] for p in ra.pubs)


async def test_lost_keys_mean_a_new_epoch(
    nodes: tuple[RedisEngine, Recorder, RedisEngine, Recorder],
) -> None:
    a, _, b, _ = nodes
    c = chan("ticker")
    old = [await a.publish(c, body(i), snapshot=body(i)) for i in range(3)]
    await a._redis.delete(a.key(c, "m"), a.key(c, "h"))  # as if Redis lost its data
    assert await b.snapshot(c) is None
    pos = await b.position(c)
    assert pos.epoch != old[-1].epoch and pos.seq == 0
    res = await b.history(c, old[-1].position)
    assert not res.recovered and res.publications == [] and res.position == pos
    new = await a.publish(c, body(9))
    assert new.position == Position(pos.epoch, 1)


async def test_epoch_creation_drops_a_stale_stream(
    nodes: tuple[RedisEngine, Recorder, RedisEngine, Recorder],
) -> None:
    a, _, _, _ = nodes
    c = chan()
    for i in range(5):
        await a.publish(c, body(i))
    await a._redis.delete(a.key(c, "m"))  # meta evicted, stream (ids up to 5-0) left
    pub = await a.publish(c, body(9))
    assert pub.seq == 1
    res = await a.history(c, Position(pub.epoch, 0))
    assert res.recovered and [bytes(p.data) for p in res.publications] == [body(9)]


async def test_history_reads_a_bounded_range(
    nodes: tuple[RedisEngine, Recorder, RedisEngine, Recorder],
) -> None:
    a, _, b, _ = nodes
    c = chan()
    pubs = await a.publish_many([(c, body(i), None) for i in range(150)])  # size is 100
    assert await a._redis.xlen(a.key(c, "h")) == 100
    res = await b.history(c, pubs[49].position)
    assert res.recovered and [p.seq for p in res.publications] == list(range(51, 151))
    assert res.publications == pubs[50:]
    assert not (await b.history(c, pubs[48].position)).recovered


# -- URLs ------------------------------------------------------------------------------


def test_url_forms() -> None:
    assert parse_engine_url("redis://h:1/2").master is None
    t = parse_engine_url("redis+sentinel://:pw@s1:26380,s2/mymaster/3?sentinel_password=sp")
    assert t.sentinels == (("s1", 26380), ("s2", 26379))
    assert t.master == "mymaster"
    assert t.options == {"db": 3, "password": "pw", "sentinel_password": "sp"}
    t = parse_engine_url("sentinel://s1/m")
    assert t.sentinels == (("s1", 26379),) and t.master == "m" and t.options == {}
    assert parse_engine_url("rediss+sentinel://s1/m").options == {"ssl": True}


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("memcached://h", "scheme"),
        ("redis+sentinel://s1", "master name"),
        ("redis+sentinel:///m", "sentinel host"),
        ("redis+sentinel://s1:x/m", "port"),
        ("redis+sentinel://s1/m/zero", "database"),
        ("redis+sentinel://s1/m?bogus=1", "bogus"),
    ],
)
def test_bad_urls_are_named(url: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_engine_url(url)


def test_passwords_are_redacted() -> None:
    assert redact("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"
    assert redact("redis://:secret@h:1/0") == "redis://:***@h:1/0"
    assert redact("redis://h:1/0") == "redis://h:1/0"
    with pytest.raises(ValueError, match="must not contain"):
        RedisEngine("redis://h", prefix="a{b}")


# -- failures -------------------------------------------------------------------------


async def test_unreachable_redis_raises_engine_unavailable_naming_it() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    eng = RedisEngine(url, SETTINGS, timeout=1.0)
    with pytest.raises(EngineUnavailable) as info:
        await eng.start(Recorder())
    message = str(info.value)
    assert "127.0.0.1" in message and "hunter2" not in message
    with pytest.raises(EngineUnavailable, match="unavailable"):
        await eng.publish(chan(), body(0))
    with pytest.raises(EngineUnavailable):
        await eng.publish_many([(chan(), body(0), None)])
    with pytest.raises(EngineUnavailable):
        await eng.history(chan(), Position("e", 0))
    await eng.close()


async def test_pubsub_reconnects_resubscribes_and_asks_for_resync(
    nodes: tuple[RedisEngine, Recorder, RedisEngine, Recorder],
) -> None:
    a, _, b, rb = nodes
    c = chan()
    await b.subscribe([c])
    first = await a.publish(c, body(0))
    await rb.wait(lambda: rb.pubs == [first])
    [client] = await pubsub_clients(a._redis, b)
    await a._redis.client_kill_filter(_id=client["id"])
    await rb.wait(lambda: rb.resyncs == 1)
    assert b.reconnects == 1
    [again] = await pubsub_clients(a._redis, b)
    assert again["id"] != client["id"] and again["sub"] == "1"
    nxt = await a.publish(c, body(1))
    await rb.wait(lambda: rb.pubs[-1] == nxt)


async def test_subscribe_while_reconnecting_is_unavailable(private_redis: RedisServer) -> None:
    eng = RedisEngine(private_redis.url, SETTINGS, timeout=1.0, backoff=(0.05, 0.2))
    await eng.start(Recorder())
    try:
        await private_redis.stop()
        with pytest.raises(EngineUnavailable):
            await eng.publish(chan(), body(0))
        with pytest.raises(EngineUnavailable):
            # the pub/sub loop notices the loss too; subscribing says so instead of hanging
            while True:
                await eng.subscribe([chan()])
                await eng.unsubscribe(list(eng.subscribed))
        assert eng.subscribed == set()
    finally:
        await eng.close()


async def test_redis_restart_fails_publishes_then_resyncs_with_a_new_epoch(
    private_redis: RedisServer,
) -> None:
    eng = RedisEngine(private_redis.url, SETTINGS, timeout=1.0, backoff=(0.05, 0.2))
    rec = Recorder()
    await eng.start(rec)
    try:
        c = chan("book")
        await eng.subscribe([c])
        before = [await eng.publish(c, body(i), snapshot=body(i)) for i in range(5)]
        await rec.wait(lambda: len(rec.pubs) == 5)
        await private_redis.stop()
        with pytest.raises(EngineUnavailable, match=str(private_redis.port)):
            await eng.publish(c, body(99))
        await private_redis.start()  # same port, no persistence: every key is gone
        await rec.wait(lambda: rec.resyncs == 1, timeout=10)
        assert eng.subscribed == {c}
        pos = await eng.position(c)
        assert pos.epoch != before[-1].epoch and pos.seq == 0
        assert not (await eng.history(c, before[-1].position)).recovered
        assert await eng.snapshot(c) is None
        after = await eng.publish(c, body(5), snapshot=body(5))  # script cache was lost too
        await rec.wait(lambda: rec.pubs[-1] == after)
        assert after.position == Position(pos.epoch, 1)
        assert [p.seq for p in rec.pubs] == [1, 2, 3, 4, 5, 1]
    finally:
        await eng.close()


async def test_out_of_memory_publish_writes_nothing(private_redis: RedisServer) -> None:
    eng = RedisEngine(private_redis.url, SETTINGS)
    await eng.start(Recorder())
    try:
        c = chan("book")
        first = await eng.publish(c, body(0), snapshot=body(0))
        await eng._redis.config_set("maxmemory", 1)
        with pytest.raises(EngineUnavailable, match="maxmemory"):
            await eng.publish(c, body(1), snapshot=body(1))
        with pytest.raises(EngineUnavailable, match="maxmemory"):
            await eng.publish_many([(c, body(1), None), (chan(), body(2), None)])
        outcomes = await asyncio.gather(
            *(eng.publish(c, body(i)) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(o, EngineUnavailable) for o in outcomes), outcomes
        await eng._redis.config_set("maxmemory", 0)
        assert await eng.position(c) == first.position
        snap = await eng.snapshot(c)
        assert snap is not None and snap.seq == 1
        assert await eng._redis.xlen(eng.key(c, "h")) == 1
    finally:
        await eng.close()


async def test_publish_many_survives_a_flushed_script_cache(private_redis: RedisServer) -> None:
    eng = RedisEngine(private_redis.url, SETTINGS)
    rec = Recorder()
    await eng.start(rec)
    try:
        c = chan()
        await eng.subscribe([c])
        await eng.publish(c, body(0))
        await eng._redis.script_flush()
        pubs = await eng.publish_many([(c, body(1), None), (c, body(2), None)])
        assert [p.seq for p in pubs] == [2, 3]
        await eng._redis.script_flush()
        assert (await eng.publish(c, body(3))).seq == 4
        await eng._redis.script_flush()
        batch = await asyncio.gather(*(eng.publish(c, body(i)) for i in range(4, 8)))
        assert [p.seq for p in batch] == [5, 6, 7, 8]
        await rec.wait(lambda: len(rec.pubs) == 8)
        assert [p.seq for p in rec.pubs] == list(range(1, 9))
    finally:
        await eng.close()


async def test_script_errors_are_engine_errors(private_redis: RedisServer) -> None:
    eng = RedisEngine(private_redis.url, SETTINGS)
    await eng.start(Recorder())
    try:
        c = chan()
        await eng._redis.set(eng.key(c, "m"), "not a hash")
        with pytest.raises(EngineError) as info:
            await eng.publish(c, body(0))
        assert not isinstance(info.value, EngineUnavailable)
        assert "WRONGTYPE" in str(info.value)
    finally:
        await eng.close()


# -- sentinel -----------------------------------------------------------------------------


async def test_sentinel_url_finds_the_master(tmp_path: Path, private_redis: RedisServer) -> None:
    conf = tmp_path / "sentinel.conf"
    port = free_port()
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor twmaster 127.0.0.1 {private_redis.port} 1\n"
    )
    sentinel = RedisServer(tmp_path, port=port)
    sentinel.args = lambda: [str(conf), "--sentinel"]  # type: ignore[method-assign]
    sentinel.ready_marker = "+monitor master twmaster"
    await sentinel.start()
    try:
        url = f"redis+sentinel://127.0.0.1:{port}/twmaster/0"
        eng = RedisEngine(url, SETTINGS)
        rec = Recorder()
        await eng.start(rec)
        try:
            c = chan()
            await eng.subscribe([c])
            pub = await eng.publish(c, body(0))
            await rec.wait(lambda: rec.pubs == [pub])
            direct = aioredis.Redis.from_url(private_redis.url)
            assert await direct.hget(eng.key(c, "m"), "s") == b"1"
            await direct.aclose()
        finally:
            await eng.close()
    finally:
        await sentinel.stop()


async def test_foreign_or_malformed_messages_do_not_stop_delivery(
    nodes: tuple[RedisEngine, Recorder, RedisEngine, Recorder],
) -> None:
    a, _, b, rb = nodes
    c = chan()
    await b.subscribe([c])
    await a._redis.publish(b.pubsub_channel(c), b"not-a-publication")
    await a._redis.publish(b.pubsub_channel(c), b"e x 1 {}")
    pub = await a.publish(c, body(0))
    await rb.wait(lambda: rb.pubs == [pub])
    assert b.malformed == 2 and b.reconnects == 0


class Exploding(Recorder):
    def on_publication(self, pub: Publication) -> None:
        super().on_publication(pub)
        if pub.seq == 1:
            raise RuntimeError("handler bug")


async def test_a_failing_handler_does_not_stop_delivery() -> None:
    require_redis()
    eng = ScratchRedisEngine(REDIS_URL, SETTINGS, prefix=redis_prefix())
    rec = Exploding()
    await eng.start(rec)
    try:
        c = chan()
        await eng.subscribe([c])
        await eng.publish(c, body(0))
        second = await eng.publish(c, body(1))
        await rec.wait(lambda: bool(rec.pubs) and rec.pubs[-1] == second)
        assert [p.seq for p in rec.pubs] == [1, 2] and eng.reconnects == 0
    finally:
        await eng.close()


async def test_nodes_racing_to_create_an_epoch_agree(
    nodes: tuple[RedisEngine, Recorder, RedisEngine, Recorder],
) -> None:
    a, _, b, _ = nodes
    c = chan("book")
    calls = [a.position(c), b.position(c), a.history(c, Position("x", 0)), b.snapshot(c)]
    calls += [(a if i % 2 else b).publish(c, body(i), snapshot=body(i)) for i in range(6)]
    results = await asyncio.gather(*calls)
    epochs = {r.epoch for r in results if isinstance(r, (Position, Publication))}
    history = results[2]
    assert isinstance(history, HistoryResult)
    epochs.add(history.position.epoch)
    assert len(epochs) == 1


async def test_concurrent_publishes_keep_the_order_they_were_requested_in(
    nodes: tuple[RedisEngine, Recorder, RedisEngine, Recorder],
) -> None:
    a, _, b, rb = nodes
    c, d = chan(), chan()
    await b.subscribe([c, d])
    calls = [a.publish(c if i % 3 else d, body(i)) for i in range(30)]
    pubs = await asyncio.gather(*calls)
    assert [p.seq for p in pubs if p.channel == c] == list(range(1, 21))
    assert [p.seq for p in pubs if p.channel == d] == list(range(1, 11))
    assert [json.loads(bytes(p.data))["i"] for p in pubs] == list(range(30))
    await rb.wait(lambda: len(rb.pubs) == 30)
    assert rb.pubs == pubs  # one pipeline: Redis ran them, and PUBLISHed, in call order


async def test_close_finishes_requested_publications(private_redis: RedisServer) -> None:
    eng = RedisEngine(private_redis.url, SETTINGS)
    await eng.start(Recorder())
    c = chan()
    pending = [asyncio.ensure_future(eng.publish(c, body(i))) for i in range(5)]
    await asyncio.sleep(0)  # let the publish calls register (they are not awaited yet)
    await eng.close()
    assert [p.seq for p in await asyncio.gather(*pending)] == [1, 2, 3, 4, 5]


async def test_a_seq_gone_back_replaces_the_stream_instead_of_failing(
    nodes: tuple[RedisEngine, Recorder, RedisEngine, Recorder],
) -> None:
    a, _, _, _ = nodes
    c = chan()
    pubs = [await a.publish(c, body(i)) for i in range(10)]
    await a._redis.hset(a.key(c, "m"), "s", 5)  # as after a failover to a lagging replica
    pub = await a.publish(c, body(99))
    assert pub.position == Position(pubs[0].epoch, 6)
    entries = await a._redis.xrange(a.key(c, "h"))
    assert entries is not None and [e[0] for e in entries] == [b"6-0"]
    res = await a.history(c, pubs[4].position)
    assert res.recovered and [bytes(p.data) for p in res.publications] == [body(99)]
    assert not (await a.history(c, pubs[3].position)).recovered
    assert not (await a.history(c, pubs[-1].position)).recovered  # ahead of Redis now


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "redis.crt", tmp_path / "redis.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_rediss_url_speaks_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = RedisServer(tmp_path)
    tls_args = ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    tls_args += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    server.args = lambda: [  # type: ignore[method-assign]
        "--port", "0", "--tls-port", str(server.port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(tmp_path), *tls_args,
    ]  # fmt: skip
    await server.start()
    try:
        plain = RedisEngine(f"redis://127.0.0.1:{server.port}/0", SETTINGS, timeout=2.0)
        with pytest.raises(EngineUnavailable):  # the port speaks TLS only
            await plain.start(Recorder())
        await plain.close()
        eng = RedisEngine(
            f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={cert}", SETTINGS, timeout=2.0
        )
        rec = Recorder()
        await eng.start(rec)
        try:
            c = chan()
            await eng.subscribe([c])
            pub = await eng.publish(c, body(0))
            await rec.wait(lambda: rec.pubs == [pub])
        finally:
            await eng.close()
    finally:
        await server.stop()

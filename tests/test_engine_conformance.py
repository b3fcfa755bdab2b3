"""One suite every engine passes: seq, epochs, history, snapshots, node subscriptions."""

from __future__ import annotations

import json
import uuid

import pytest

from tickwire.engine import Engine, HistorySettings
from tickwire.model import Position

from .conftest import EngineFactory, Recorder


def chan(kind: str = "trades") -> str:
    return f"{kind}:T{uuid.uuid4().hex[:12].upper()}"


def body(i: int) -> bytes:
    return json.dumps({"i": i}).encode()


async def test_seq_rises_by_one_within_an_epoch(engine: tuple[Engine, Recorder]) -> None:
    eng, _ = engine
    c = chan()
    start = await eng.position(c)
    assert start.seq == 0
    pubs = [await eng.publish(c, body(i)) for i in range(10)]
    assert [p.seq for p in pubs] == list(range(1, 11))
    assert {p.epoch for p in pubs} == {start.epoch}
    assert await eng.position(c) == Position(start.epoch, 10)
    assert [json.loads(bytes(p.data))["i"] for p in pubs] == list(range(10))


async def test_channels_are_independent(engine: tuple[Engine, Recorder]) -> None:
    eng, _ = engine
    a, b = chan(), chan()
    await eng.publish(a, body(1))
    await eng.publish(a, body(2))
    pb = await eng.publish(b, body(3))
    assert pb.seq == 1


async def test_history_since_returns_exactly_the_missed(engine: tuple[Engine, Recorder]) -> None:
    eng, _ = engine
    c = chan()
    pubs = [await eng.publish(c, body(i)) for i in range(20)]
    since = pubs[4].position
    res = await eng.history(c, since)
    assert res.recovered
    assert [p.seq for p in res.publications] == list(range(6, 21))
    assert [bytes(p.data) for p in res.publications] == [bytes(p.data) for p in pubs[5:]]
    assert res.position == pubs[-1].position


async def test_history_at_head_is_recovered_and_empty(engine: tuple[Engine, Recorder]) -> None:
    eng, _ = engine
    c = chan()
    pub = await eng.publish(c, body(0))
    res = await eng.history(c, pub.position)
    assert res.recovered and res.publications == []


async def test_history_beyond_size_is_not_recovered(engine: tuple[Engine, Recorder]) -> None:
    eng, _ = engine  # history size 50
    c = chan()
    first = await eng.publish(c, body(0))
    for i in range(1, 80):
        await eng.publish(c, body(i))
    res = await eng.history(c, first.position)
    assert not res.recovered
    assert res.publications == []
    assert res.position.seq == 80
    # the oldest kept publication is still reachable
    res = await eng.history(c, Position(first.epoch, 30))
    assert res.recovered and [p.seq for p in res.publications] == list(range(31, 81))


async def test_history_with_wrong_epoch_is_not_recovered(engine: tuple[Engine, Recorder]) -> None:
    eng, _ = engine
    c = chan()
    await eng.publish(c, body(0))
    res = await eng.history(c, Position("not-the-epoch", 0))
    assert not res.recovered and res.publications == []


async def test_history_from_the_future_is_not_recovered(engine: tuple[Engine, Recorder]) -> None:
    eng, _ = engine
    c = chan()
    pub = await eng.publish(c, body(0))
    res = await eng.history(c, Position(pub.epoch, 5))
    assert not res.recovered


async def test_history_limit(engine: tuple[Engine, Recorder]) -> None:
    eng, _ = engine
    c = chan()
    pubs = [await eng.publish(c, body(i)) for i in range(10)]
    assert not (await eng.history(c, pubs[0].position, limit=5)).recovered
    res = await eng.history(c, pubs[4].position, limit=5)
    assert res.recovered and len(res.publications) == 5


async def test_snapshot_is_consistent_with_seq(engine: tuple[Engine, Recorder]) -> None:
    eng, _ = engine
    c = chan("book")
    assert await eng.snapshot(c) is None
    for i in range(5):
        await eng.publish(c, body(i), snapshot=json.dumps({"state": i}).encode())
    snap = await eng.snapshot(c)
    assert snap is not None
    assert snap.seq == 5
    assert json.loads(bytes(snap.data)) == {"state": 4}
    assert snap.epoch == (await eng.position(c)).epoch
    # a publication without a snapshot leaves the stored one where it was
    await eng.publish(c, body(5))
    snap2 = await eng.snapshot(c)
    assert snap2 is not None and snap2.seq == 5


async def test_node_receives_only_subscribed_channels_in_order(
    engine: tuple[Engine, Recorder],
) -> None:
    eng, rec = engine
    a, b = chan(), chan()
    await eng.subscribe([a])
    for i in range(5):
        await eng.publish(a, body(i))
        await eng.publish(b, body(i))
    await rec.wait(lambda: len(rec.pubs) >= 5)
    assert [(p.channel, p.seq) for p in rec.pubs] == [(a, i) for i in range(1, 6)]
    await eng.unsubscribe([a])
    await eng.subscribe([b])
    await eng.publish(a, body(9))
    last = await eng.publish(b, body(9))
    await rec.wait(lambda: rec.pubs[-1].channel == b)
    assert rec.pubs[-1] == last
    assert all(p.channel == a for p in rec.pubs[:-1])


async def test_publish_many_keeps_order(engine: tuple[Engine, Recorder]) -> None:
    eng, _ = engine
    a, b = chan(), chan()
    pubs = await eng.publish_many([(a, body(0), None), (b, body(1), None), (a, body(2), None)])
    assert [(p.channel, p.seq) for p in pubs] == [(a, 1), (b, 1), (a, 2)]


async def test_publications_are_counted_by_channel_kind(engine: tuple[Engine, Recorder]) -> None:
    eng, _ = engine
    a, b, c = chan(), chan(), chan("book")
    await eng.publish(a, body(0))
    await eng.publish_many([(b, body(1), None), (a, body(2), None), (c, body(3), body(3))])
    assert eng.stats.published == {"trades": 3, "book": 1}


async def test_history_by_age(engine_factory: EngineFactory) -> None:
    eng = engine_factory(HistorySettings(size=100, ttl=60.0))
    await eng.start(Recorder())
    try:
        c = chan()
        old = await eng.publish(c, body(0), ts=1_000)  # far older than ttl
        await eng.publish(c, body(1))
        res = await eng.history(c, Position(old.epoch, 0))
        assert not res.recovered
        res = await eng.history(c, old.position)
        assert res.recovered and [p.seq for p in res.publications] == [2]
    finally:
        await eng.close()


@pytest.mark.parametrize("n", [1, 3])
async def test_position_of_new_channel_is_stable(engine: tuple[Engine, Recorder], n: int) -> None:
    eng, _ = engine
    c = chan()
    positions = {await eng.position(c) for _ in range(n)}
    assert len(positions) == 1


async def test_memory_engine_never_sweeps_on_the_publish_path() -> None:
    """Sweeping 100,000 channels inline blocked the loop for ~200 ms: the engine sweeps
    in steps of ``sweep_batch`` channels, off the publish path."""
    from tickwire.engine import MemoryEngine

    engine = MemoryEngine(HistorySettings(size=10, ttl=1.0), sweep_interval=3600, sweep_batch=100)
    await engine.start(Recorder())
    try:
        old = 1_000  # ms since the epoch: long idle
        for i in range(2_000):
            engine.publish_now(f"trades:IDLE{i}", b"{}", ts=old)
        for _ in range(3_000):  # publications never sweep, whatever their number
            engine.publish_now("trades:LIVE", b"{}")
        assert len(engine._streams) == 2_001
        forgotten = engine.sweep_step()
        # one step looks at sweep_batch channels (LIVE may be one of them)
        assert engine.sweep_pending == 2_001 - 100
        assert 99 <= forgotten <= 100 and len(engine._streams) == 2_001 - forgotten
        while engine.sweep_pending:
            engine.sweep_step()
        assert set(engine._streams) == {"trades:LIVE"}
    finally:
        await engine.close()

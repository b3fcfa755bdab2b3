"""Ingest is all or nothing: everything one operation (or batch) produces goes to the
engine in one publish_many, and the gateway's state changes only if the engine took it.
Book snapshots are stored now and then, and the book is still rebuilt exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import pytest

from tickwire.engine import Engine, EngineUnavailable, HistorySettings
from tickwire.ingest.gateway import Gateway, GatewaySettings
from tickwire.model.channels import CANDLE_INTERVALS
from tickwire.model.payloads import BookData, CandleData, TickerData, TradeData
from tickwire.model.publication import Position, Publication

from .conftest import EngineFactory, Recorder

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000 + 3_600_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Switch:
    """Makes an engine's publishing fail while ``on`` (whichever method is used)."""

    def __init__(self, engine: Engine) -> None:
        self.on = False
        self.calls: list[tuple[str, int]] = []
        publish, publish_many = engine.publish, engine.publish_many

        async def one(channel: str, data: bytes, **kw: Any) -> Publication:
            self.calls.append(("publish", 1))
            if self.on:
                raise EngineUnavailable("redis at 10.9.9.9 is unreachable")
            return await publish(channel, data, **kw)

        async def many(
            items: Sequence[tuple[str, bytes, bytes | None]], **kw: Any
        ) -> list[Publication]:
            self.calls.append(("publish_many", len(items)))
            if self.on:
                raise EngineUnavailable("redis at 10.9.9.9 is unreachable")
            return await publish_many(items, **kw)

        engine.publish = one  # type: ignore[method-assign]
        engine.publish_many = many  # type: ignore[method-assign]


@pytest.fixture
async def started(engine_factory: EngineFactory) -> AsyncIterator[Engine]:
    engine = engine_factory(HistorySettings(size=200, ttl=86_400))
    await engine.start(Recorder())
    try:
        yield engine
    finally:
        await engine.close()


async def everything(engine: Engine, channel: str) -> list[Publication]:
    pos = await engine.position(channel)
    res = await engine.history(channel, Position(pos.epoch, 0))
    assert res.recovered
    return res.publications


def decode(pub: Publication, type_: type[Any]) -> Any:
    return msgspec.json.decode(pub.data, type=type_)


async def test_a_trade_is_one_publish_many(started: Engine) -> None:
    switch = Switch(started)
    gw = Gateway(started, clock=Clock())
    await gw.publish_trade("BTC-USD", "65000", "0.5", "buy")
    # trade, ticker and a candle per interval: one engine call (one MULTI/EXEC on Redis)
    assert switch.calls == [("publish_many", 2 + len(CANDLE_INTERVALS))]


async def test_an_engine_failure_changes_nothing(started: Engine) -> None:
    clock = Clock()
    switch = Switch(started)
    gw = Gateway(started, clock=clock)
    await gw.apply_book("BTC-USD", [["64999", "1"]], [["65001", "1"]])
    await gw.publish_trade("BTC-USD", "65000", "0.5", "buy")
    before = await gw.book_view("BTC-USD", 10)
    switch.on = True
    clock.now += 60_000  # a new minute: new candles and ticker bucket
    with pytest.raises(EngineUnavailable):
        await gw.publish_trade("BTC-USD", "65100", "2", "sell")
    with pytest.raises(EngineUnavailable):
        await gw.apply_book("BTC-USD", [["64999", "0"], ["64990", "3"]], [])
    with pytest.raises(EngineUnavailable):
        await gw.publish_sentiment("AAPL", "u1", 0.5, 1.0, ts=clock.now)
    switch.on = False
    # nothing of the failed calls is out
    assert len(await everything(started, "trades:BTC-USD")) == 1
    assert len(await everything(started, "candles:BTC-USD:1m")) == 1
    assert len(await everything(started, "ticker:BTC-USD")) == 2
    assert (await started.position("sentiment:AAPL")).seq == 0
    # ... and the gateway's state is as before them: the book, the next trade id,
    # the 24 h statistics and the candles
    assert await gw.book_view("BTC-USD", 10) == before
    pub = await gw.publish_trade("BTC-USD", "65000", "0.25", "buy")
    assert decode(pub, TradeData).id == 2
    ticker = decode((await everything(started, "ticker:BTC-USD"))[-1], TickerData)
    assert ticker.volume_24h == "0.75000000" and ticker.high_24h == "65000.00"
    minute = decode((await everything(started, "candles:BTC-USD:1m"))[-1], CandleData)
    assert (minute.trades, minute.high, minute.volume) == (1, "65000.00", "0.25000000")
    day = decode((await everything(started, "candles:BTC-USD:1d"))[-1], CandleData)
    assert (day.trades, day.high, day.volume) == (2, "65000.00", "0.75000000")


async def test_snapshots_every_n_and_the_book_rebuilt_from_snapshot_plus_history(
    started: Engine,
) -> None:
    gw = Gateway(started, settings=GatewaySettings(book_snapshot_every=5), clock=Clock())
    for i in range(12):
        await gw.apply_book_units("BTC-USD", [(6_500_000 - i * 100, 1000 + i)], [])
    snap = await started.snapshot("book:BTC-USD")
    assert snap is not None and snap.seq == 11  # stored with publications 1, 6 and 11
    # a node that does not publish the book, and a publisher started afresh, rebuild it
    # from snapshot 11 plus update 12
    local = await gw.book_view("BTC-USD", 100)
    other = Gateway(started, clock=Clock())
    assert await other.book_view("BTC-USD", 100) == local
    pub = await other.apply_book_units("BTC-USD", [(6_500_000, 0)], [])
    assert pub is not None and pub.seq == 13
    assert decode(pub, BookData).checksum == (await other.book_view("BTC-USD", 100)).checksum
    # a restarted publisher stores a snapshot with its first publication
    snap = await started.snapshot("book:BTC-USD")
    assert snap is not None and snap.seq == 13


async def test_a_wanted_snapshot_comes_with_the_next_update(started: Engine) -> None:
    gw = Gateway(started, settings=GatewaySettings(book_snapshot_every=1000), clock=Clock())
    await gw.apply_book_units("BTC-USD", [(6_500_000, 1000)], [])
    await gw.apply_book_units("BTC-USD", [(6_499_900, 1000)], [])
    assert (await started.snapshot("book:BTC-USD")).seq == 1  # type: ignore[union-attr]
    await started.request_snapshot("book:BTC-USD")
    await gw.apply_book_units("BTC-USD", [(6_499_800, 1000)], [])
    snap = await started.snapshot("book:BTC-USD")
    assert snap is not None and snap.seq == 3
    assert len(decode(snap, BookData).bids) == 3  # type: ignore[arg-type]


async def test_a_failed_sentiment_message_that_closes_periods_changes_nothing(
    started: Engine,
) -> None:
    from tickwire.engine import MemoryEngine

    switch = Switch(started)
    gw = Gateway(started, clock=Clock())
    reference = Gateway(MemoryEngine(), clock=Clock())
    t0 = T0 - 120_000
    for g in (gw, reference):
        for i in range(30):
            await g.publish_sentiment("AAPL", f"u{i}", 0.5 - i / 40, 1.0 + i, ts=t0 + i * 700)
    switch.on = True
    with pytest.raises(EngineUnavailable):  # closes seconds and a minute, then fails
        await gw.publish_sentiment("AAPL", "late", 0.9, 3.0, ts=t0 + 65_000)
    switch.on = False
    ours = await gw.publish_sentiment("AAPL", "u", -0.2, 2.0, ts=t0 + 66_000)
    theirs = await reference.publish_sentiment("AAPL", "u", -0.2, 2.0, ts=t0 + 66_000)
    assert [p.data for p in ours] == [p.data for p in theirs]

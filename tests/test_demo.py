"""The demo market: deterministic, deep books, trades that agree with the book."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import msgspec
import pytest

from tests.conftest import Recorder
from tickwire.engine import EngineUnavailable, MemoryEngine
from tickwire.ingest.demo import MIN_LEVELS, DemoMarket
from tickwire.ingest.gateway import Gateway
from tickwire.model.book import OrderBook
from tickwire.model.markets import default_registry
from tickwire.model.payloads import BookData, TradeData
from tickwire.model.publication import Publication

T0 = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


async def run_demo(seed: int, steps: int) -> tuple[Gateway, DemoMarket, Recorder, Clock]:
    engine = MemoryEngine()
    rec = Recorder()
    await engine.start(rec)
    reg = default_registry()
    channels = [f"{k}:{m.id}" for m in reg.markets for k in ("book", "trades", "ticker")]
    channels += [f"candles:{m.id}:1m" for m in reg.markets]
    channels += [f"sentiment:{t}" for t in reg.sentiment_tickers]
    await engine.subscribe(channels)
    clock = Clock()
    gw = Gateway(engine, reg, clock=clock)
    demo = DemoMarket(gw, seed=seed)
    for _ in range(steps):
        await demo.step()
        clock.now += 100
    return gw, demo, rec, clock


def stream(rec: Recorder) -> list[tuple[str, bytes]]:
    return [(p.channel, bytes(p.data)) for p in rec.pubs if not p.channel.startswith("ticker")]


async def test_same_seed_same_market() -> None:
    _, _, a, _ = await run_demo(7, 300)
    _, _, b, _ = await run_demo(7, 300)
    _, _, c, _ = await run_demo(8, 300)
    assert stream(a) == stream(b)
    assert stream(a) != stream(c)


async def test_books_are_deep_and_match_the_gateway() -> None:
    gw, demo, rec, _ = await run_demo(3, 1500)
    assert len(demo.books) == 3
    for sim in demo.books:
        bids, asks = sim.book.bids(), sim.book.asks()
        assert len(bids) >= MIN_LEVELS and len(asks) >= MIN_LEVELS
        assert bids[0][0] < asks[0][0]
        view = await gw.book_view(sim.market.id, 1000)
        assert view.bids == [(sim.market.price(p), sim.market.size(s)) for p, s in bids]
        assert view.asks == [(sim.market.price(p), sim.market.size(s)) for p, s in asks]
        assert view.checksum == sim.book.checksum()
    # The price moves: the best bid is not where it started for every market.
    moved = [
        sim.book.best_bid() != (sim.mid - sim.grid, sim.book.size_at(True, sim.mid - sim.grid))
        for sim in demo.books
    ]
    assert any(moved)
    kinds = {p.channel.split(":")[0] for p in rec.pubs}
    assert kinds == {"book", "trades", "ticker", "candles", "sentiment"}
    types = {msgspec.json.decode(p.data)["type"] for p in rec.pubs if p.channel.startswith("sent")}
    assert "user" in types


async def test_trades_hit_the_touch_and_take_size_off_it() -> None:
    _, demo, rec, _ = await run_demo(11, 1500)
    reg = default_registry()
    books = {m.id: OrderBook() for m in reg.markets}
    pending: dict[str, tuple[bool, int, int, int]] = {}
    trades = 0
    for pub in rec.pubs:
        kind, market = pub.channel.split(":")[:2]
        if kind not in ("trades", "book"):
            continue
        mk = reg.require(market)
        if kind == "trades":
            trade = msgspec.json.decode(pub.data, type=TradeData)
            price, size = mk.parse_price(trade.price), mk.parse_size(trade.size)
            book = books[market]
            is_bid = trade.side == "sell"  # a sell hits the bid, a buy lifts the ask
            touch = book.best_bid() if is_bid else book.best_ask()
            assert touch is not None and touch[0] == price and 0 < size <= touch[1]
            pending[market] = (is_bid, price, touch[1], size)
            trades += 1
        elif kind == "book":
            update = msgspec.json.decode(pub.data, type=BookData)
            bids = [(mk.parse_price(p), mk.parse_size(s)) for p, s in update.bids]
            asks = [(mk.parse_price(p), mk.parse_size(s)) for p, s in update.asks]
            books[market].apply(bids, asks)
            assert books[market].checksum() == update.checksum
            if market in pending:
                is_bid, price, before, size = pending.pop(market)
                assert (price, before - size) in (bids if is_bid else asks)
    assert trades > 100
    for sim in demo.books:
        assert books[sim.market.id].bids() == sim.book.bids()


async def test_run_until_cancelled() -> None:
    engine = MemoryEngine()
    rec = Recorder()
    await engine.start(rec)
    await engine.subscribe(["trades:BTC-USD"])
    demo = DemoMarket(Gateway(engine), seed=1, rate=50.0)
    task = asyncio.create_task(demo.run())
    await rec.wait(lambda: len(rec.pubs) >= 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert demo.steps > 0 and all(isinstance(p, Publication) for p in rec.pubs)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate"):
        DemoMarket(Gateway(MemoryEngine()), rate=0)


class Outage(MemoryEngine):
    """The memory engine, refusing every publication while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.refused = 0
        self.refusing = asyncio.Event()

    def _check(self) -> None:
        if self.down:
            self.refused += 1
            self.refusing.set()
            raise EngineUnavailable("engine down (test)")

    async def publish(
        self, channel: str, data: bytes, *, snapshot: bytes | None = None, ts: int | None = None
    ) -> Publication:
        self._check()
        return await super().publish(channel, data, snapshot=snapshot, ts=ts)

    async def publish_many(
        self, items: Sequence[tuple[str, bytes, bytes | None]], *, ts: int | None = None
    ) -> list[Publication]:
        self._check()
        return await super().publish_many(items, ts=ts)


async def test_the_demo_pauses_while_the_engine_is_down_and_goes_on_after() -> None:
    engine = Outage()
    rec = Recorder()
    await engine.start(rec)
    reg = default_registry()
    await engine.subscribe([f"book:{m.id}" for m in reg.markets])
    gw = Gateway(engine, reg)
    demo = DemoMarket(gw, seed=3, rate=20)
    task = asyncio.create_task(demo.run())
    try:
        await rec.wait(lambda: len(rec.pubs) >= 10)
        engine.down = True
        async with asyncio.timeout(10):
            while engine.refused < 3:  # refused, and tried again (after a backoff) twice
                engine.refusing.clear()
                await engine.refusing.wait()
        assert not task.done()  # the run outlived the outage's errors
        before = len(rec.pubs)
        engine.down = False
        await rec.wait(lambda: len(rec.pubs) >= before + 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # nothing half applied: each market's book stream stays contiguous, and the
    # simulation's book is the gateway's (what clients saw)
    for m in reg.markets:
        seqs = [p.seq for p in rec.pubs if p.channel == f"book:{m.id}"]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    for sim in demo.books:
        view = await gw.book_view(sim.market.id, 1000)
        assert view.bids == [(sim.market.price(p), sim.market.size(s)) for p, s in sim.book.bids()]
        assert view.asks == [(sim.market.price(p), sim.market.size(s)) for p, s in sim.book.asks()]
        assert view.checksum == sim.book.checksum()

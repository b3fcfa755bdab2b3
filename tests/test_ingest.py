"""The ingest gateway's Python API: what it publishes, what it refuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from tests.conftest import Recorder
from tickwire.engine import Engine, MemoryEngine
from tickwire.ingest.gateway import Gateway, GatewaySettings, IngestError, Op
from tickwire.model.book import OrderBook
from tickwire.model.payloads import BookData, CandleData, OrderData, TickerData, TradeData
from tickwire.model.publication import Publication, Snapshot

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000  # a UTC midnight


class Clock:
    def __init__(self, now: int = T0 + 3_600_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def make(settings: GatewaySettings | None = None) -> tuple[Gateway, MemoryEngine, Clock]:
    engine = MemoryEngine()
    clock = Clock()
    return Gateway(engine, settings=settings, clock=clock), engine, clock


async def published(engine: MemoryEngine, channel: str) -> list[Publication]:
    res = await engine.history(
        channel, msgspec.structs.replace(await engine.position(channel), seq=0)
    )
    return res.publications


def data(pub: Publication | Snapshot, type_: type[Any]) -> Any:
    return msgspec.json.decode(pub.data, type=type_)


async def test_book_update_shape_snapshot_and_ticker() -> None:
    gw, engine, _ = await make()
    pub = await gw.apply_book("BTC-USD", [["65000", "1.5"], ["64999.5", "0.25"]], [["65001", "2"]])
    assert pub is not None and pub.channel == "book:BTC-USD" and pub.seq == 1
    update = data(pub, BookData)
    assert update.bids == [("65000.00", "1.50000000"), ("64999.50", "0.25000000")]
    assert update.asks == [("65001.00", "2.00000000")]
    snap = await engine.snapshot("book:BTC-USD")
    assert snap is not None and snap.seq == 1
    assert data(snap, BookData) == update  # first update = whole book
    ticker = data(await engine.snapshot("ticker:BTC-USD"), TickerData)  # type: ignore[arg-type]
    assert (ticker.best_bid, ticker.best_bid_size) == ("65000.00", "1.50000000")
    assert (ticker.best_ask, ticker.best_ask_size) == ("65001.00", "2.00000000")
    assert ticker.last is None and ticker.volume_24h == "0.00000000"

    pub = await gw.apply_book("BTC-USD", [["64999.50", "0"]], [])
    assert pub is not None and pub.seq == 2
    update = data(pub, BookData)
    assert update.bids == [("64999.50", "0.00000000")] and update.asks == []
    # a one-level change stores no snapshot (one every book_snapshot_every): new
    # subscribers start from snapshot 1 plus this update
    assert (await engine.snapshot("book:BTC-USD")).seq == 1  # type: ignore[union-attr]
    # Not a top-of-book change: no new ticker.
    assert (await engine.position("ticker:BTC-USD")).seq == 1
    # Nothing changes: nothing is published.
    assert await gw.apply_book("BTC-USD", [["65000", "1.5"]]) is None
    assert (await engine.position("book:BTC-USD")).seq == 2


async def test_snapshot_depth_is_bounded() -> None:
    gw, engine, _ = await make(GatewaySettings(book_snapshot_depth=3))
    await gw.apply_book_units("ETH-USD", [(300000 - i, 10) for i in range(6)], [(300100, 1)])
    snap = data(await engine.snapshot("book:ETH-USD"), BookData)  # type: ignore[arg-type]
    assert len(snap.bids) == 3 and snap.bids[0] == ("3000.00", "0.0010")
    view = await gw.book_view("ETH-USD", 5)
    assert len(view.bids) == 5 and view.seq == 1


async def test_trade_publishes_trade_ticker_and_candles() -> None:
    gw, engine, clock = await make()
    await gw.apply_book("BTC-USD", [["100", "1"]], [["101", "1"]])
    pub = await gw.publish_trade("BTC-USD", "101", "0.5", "buy", ts=T0 + 1000)
    trade = data(pub, TradeData)
    assert trade == TradeData(1, "101.00", "0.50000000", "buy", T0 + 1000)
    await gw.publish_trade("BTC-USD", "99.5", "0.25", "sell", ts=T0 + 61_000)
    await gw.publish_trade("BTC-USD", "100.5", "1", "sell", ts=T0 + 62_000, id=500)
    pub = await gw.publish_trade("BTC-USD", "100", "1", "buy", ts=T0 + 63_000)
    assert data(pub, TradeData).id == 501
    ticker = data(await engine.snapshot("ticker:BTC-USD"), TickerData)  # type: ignore[arg-type]
    assert ticker.last == "100.00" and ticker.last_size == "1.00000000"
    assert (ticker.open_24h, ticker.high_24h, ticker.low_24h) == ("101.00", "101.00", "99.50")
    assert ticker.volume_24h == "2.75000000"
    assert ticker.quote_volume_24h == "275.8750000000"  # 50.5 + 24.875 + 100.5 + 100
    assert ticker.change_24h == "-1.00" and ticker.change_pct_24h == "-0.99"
    one_min = [data(p, CandleData) for p in await published(engine, "candles:BTC-USD:1m")]
    assert [c.start for c in one_min] == [T0, T0 + 60_000, T0 + 60_000, T0 + 60_000]
    last = one_min[-1]
    assert (last.open, last.high, last.low, last.close) == ("99.50", "100.50", "99.50", "100.00")
    assert (last.volume, last.trades, last.interval) == ("2.25000000", 3, "1m")
    day = data(await engine.snapshot("candles:BTC-USD:1d"), CandleData)  # type: ignore[arg-type]
    assert (day.start, day.open, day.high, day.low, day.close, day.trades) == (
        T0,
        "101.00",
        "101.00",
        "99.50",
        "100.00",
        4,
    )
    assert ticker.ts == clock.now


async def test_ticker_window_rolls_after_24h() -> None:
    gw, engine, clock = await make()
    await gw.publish_trade("SOL-USD", "150", "1", "buy", ts=T0)
    await gw.publish_trade("SOL-USD", "160", "2", "buy", ts=T0 + 3_600_000)
    clock.now = T0 + 86_400_000 + 5_000
    await gw.publish_trade("SOL-USD", "155", "3", "sell", ts=clock.now)
    ticker = data(await engine.snapshot("ticker:SOL-USD"), TickerData)  # type: ignore[arg-type]
    # The first trade's minute left the window; the second's is still in it.
    assert (ticker.open_24h, ticker.high_24h, ticker.low_24h) == ("160.000", "160.000", "155.000")
    assert ticker.volume_24h == "5.00" and ticker.change_24h == "-5.000"
    assert ticker.change_pct_24h == "-3.13"
    await gw.publish_trade("SOL-USD", "159.999", "1", "sell", ts=clock.now)
    ticker = data(await engine.snapshot("ticker:SOL-USD"), TickerData)  # type: ignore[arg-type]
    assert (ticker.change_24h, ticker.change_pct_24h) == ("-0.001", "0.00")


async def test_out_of_order_trade_refused() -> None:
    gw, engine, _ = await make()
    await gw.publish_trade("BTC-USD", "100", "1", "buy", ts=T0 + 61_000)
    # Inside the open minute, earlier trades are fine: they do not set the close.
    await gw.publish_trade("BTC-USD", "90", "1", "buy", ts=T0 + 60_500)
    candle = data(await engine.snapshot("candles:BTC-USD:1m"), CandleData)  # type: ignore[arg-type]
    assert (candle.close, candle.low) == ("100.00", "90.00")
    with pytest.raises(IngestError) as info:
        await gw.publish_trade("BTC-USD", "100", "1", "buy", ts=T0 + 59_999)
    assert info.value.code == "trade_out_of_order" and info.value.field == "ts"
    assert (await engine.position("trades:BTC-USD")).seq == 2


@pytest.mark.parametrize(
    ("call", "code", "field"),
    [
        (lambda gw: gw.apply_book("DOGE-USD", [["1", "1"]]), "unknown_market", "market"),
        (lambda gw: gw.apply_book("BTC-USD", [["1.001", "1"]]), "wrong_precision", "bids[0][0]"),
        (lambda gw: gw.apply_book("BTC-USD", [], [["1", "-1"]]), "negative_size", "asks[0][1]"),
        (lambda gw: gw.apply_book("BTC-USD", [["1", "x"]]), "not_a_number", "bids[0][1]"),
        (lambda gw: gw.apply_book("BTC-USD", [["1", 1]]), "not_a_number", "bids[0][1]"),
        (lambda gw: gw.apply_book("BTC-USD", [["0", "1"]]), "bad_price", "bids[0][0]"),
        (lambda gw: gw.apply_book("BTC-USD", [["1"]]), "bad_level", "bids[0]"),
        (lambda gw: gw.apply_book("BTC-USD", [["2", "1"]], [["2", "1"]]), "crossed_book", "bids"),
        (lambda gw: gw.publish_trade("BTC-USD", "1", "0", "buy"), "bad_size", "size"),
        (lambda gw: gw.publish_trade("BTC-USD", "1", "1", "up"), "bad_value", "side"),
        (
            lambda gw: gw.publish_trade("BTC-USD", "1", "1", "buy", ts=T0 + 10**8),
            "bad_timestamp",
            "ts",
        ),
        (lambda gw: gw.publish_trade("BTC-USD", "1", "1", "buy", id=-1), "bad_id", "id"),
        (lambda gw: gw.publish_sentiment("IBM", "u", 0.1, 1.0), "unknown_ticker", "ticker"),
        (lambda gw: gw.publish_sentiment("AAPL", "u", 1.5, 1.0), "out_of_range", "sentiment"),
        (
            lambda gw: gw.publish_sentiment("AAPL", "u", float("nan"), 1.0),
            "out_of_range",
            "sentiment",
        ),
        (lambda gw: gw.publish_sentiment("AAPL", "u", 0.5, -1.0), "out_of_range", "user_score"),
        (lambda gw: gw.publish_sentiment("AAPL", "", 0.5, 1.0), "bad_id", "user_id"),
    ],
)
async def test_refusals_name_code_and_field(
    call: Callable[[Gateway], Any], code: str, field: str
) -> None:
    gw, engine, _ = await make()
    with pytest.raises(IngestError) as info:
        await call(gw)
    assert (info.value.code, info.value.field) == (code, field)
    assert not engine._streams or all(s.seq == 0 for s in engine._streams.values())


async def test_batch_is_all_or_nothing() -> None:
    gw, engine, _ = await make()
    await gw.apply_book("BTC-USD", [["100", "1"]], [["102", "1"]])
    before = await gw.book_view("BTC-USD", 10)
    ops: list[Op] = [
        gw.book_op("BTC-USD", [["101", "1"]], []),
        gw.trade_op("BTC-USD", "101", "1", "sell", ts=T0),
        gw.book_op("BTC-USD", [], [["101", "5"]]),  # locks the book after the first op
    ]
    with pytest.raises(IngestError) as info:
        await gw.publish_ops(ops)
    assert (info.value.code, info.value.index, info.value.field) == ("crossed_book", 2, "asks")
    assert await gw.book_view("BTC-USD", 10) == before
    assert (await engine.position("trades:BTC-USD")).seq == 0

    ops = [
        gw.trade_op("ETH-USD", "100", "1", "sell", ts=T0 + 120_000),
        gw.book_op("ETH-USD", [["99", "1"]], []),
        gw.trade_op("ETH-USD", "100", "1", "sell", ts=T0 + 1_000),  # closed by the first
    ]
    with pytest.raises(IngestError) as info:
        await gw.publish_ops(ops)
    assert (info.value.code, info.value.index) == ("trade_out_of_order", 2)
    assert (await engine.position("book:ETH-USD")).seq == 0
    assert (await engine.position("trades:ETH-USD")).seq == 0

    pubs = await gw.publish_ops([*ops[:2], gw.book_op("ETH-USD", [["99", "0"]], [])])
    assert [p.channel for p in pubs[:2]] == ["trades:ETH-USD", "ticker:ETH-USD"]
    assert (await engine.position("book:ETH-USD")).seq == 2
    assert (await gw.book_view("ETH-USD", 5)).bids == []


async def test_book_view_and_reload_from_engine_snapshot() -> None:
    gw, engine, _ = await make()
    await gw.apply_book("SOL-USD", [["150", "3"], ["149.5", "1"]], [["151", "2"]])
    await gw.apply_book("SOL-USD", [["150", "4"]], [])
    view = await gw.book_view("SOL-USD", 1)
    assert (view.market, view.seq, view.bids, view.asks) == (
        "SOL-USD",
        2,
        [("150.000", "4.00")],
        [("151.000", "2.00")],
    )
    # A second gateway (another process) answers from the engine's snapshot ...
    other = Gateway(engine)
    assert await other.book_view("SOL-USD", 1) == view
    # ... and continues the same book when it publishes.
    pub = await other.apply_book("SOL-USD", [["149.5", "0"]], [])
    assert pub is not None and pub.seq == 3
    assert data(pub, BookData).checksum == (await other.book_view("SOL-USD", 10)).checksum
    assert (await other.book_view("SOL-USD", 10)).bids == [("150.000", "4.00")]


async def test_reset_replaces_the_book() -> None:
    gw, _, _ = await make()
    await gw.apply_book("BTC-USD", [["100", "1"], ["99", "1"]], [["102", "1"]])
    pub = await gw.apply_book("BTC-USD", [["100", "2"]], [["101", "1"]], reset=True)
    assert pub is not None
    update = data(pub, BookData)
    assert update.bids == [("100.00", "2.00000000"), ("99.00", "0.00000000")]
    assert update.asks == [("101.00", "1.00000000"), ("102.00", "0.00000000")]


async def test_private_orders_and_trades() -> None:
    gw, engine, _ = await make()
    rec = Recorder()
    await engine.start(rec)
    await engine.subscribe(["user:42:orders", "user:42:trades"])
    pub = await gw.publish_order(
        "42",
        id="o-1",
        market="BTC-USD",
        side="buy",
        state="open",
        size="2",
        price="100",
        filled="0.5",
        avg_price="100",
        client_id="c-9",
        trades_count=1,
    )
    assert pub.channel == "user:42:orders"
    order = data(pub, OrderData)
    assert (order.size, order.filled, order.remaining, order.price) == (
        "2.00000000",
        "0.50000000",
        "1.50000000",
        "100.00",
    )
    assert (order.type, order.state, order.created_at, order.updated_at) == (
        "limit",
        "open",
        gw.clock(),
        gw.clock(),
    )
    pub = await gw.publish_user_trade(
        "42",
        id=7,
        order_id="o-1",
        market="BTC-USD",
        side="buy",
        price="100.5",
        size="0.5",
        liquidity="taker",
    )
    assert pub.channel == "user:42:trades"
    assert msgspec.json.decode(pub.data)["total"] == "50.2500000000"
    assert [p.channel for p in rec.pubs] == ["user:42:orders", "user:42:trades"]
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"price": None}, "missing_field", "price"),
        ({"filled": "3"}, "bad_size", "filled"),
        ({"state": "done"}, "bad_value", "state"),
        ({"market": "X-Y"}, "unknown_market", "market"),
    ]
    for kwargs, code, field in cases:
        args: dict[str, Any] = {
            "id": "o-2",
            "market": "BTC-USD",
            "side": "sell",
            "state": "open",
            "size": "2",
            "price": "100",
        }
        args.update(kwargs)
        with pytest.raises(IngestError) as info:
            await gw.publish_order("42", **args)
        assert (info.value.code, info.value.field) == (code, field)
    with pytest.raises(IngestError) as info:
        await gw.publish_order(
            "bad:uid", id="o", market="BTC-USD", side="buy", state="open", size="1", price="1"
        )
    assert info.value.code == "bad_user_id"


async def test_sentiment_message_is_published() -> None:
    gw, _, _ = await make()
    pubs = await gw.publish_sentiment("AAPL", "u1", 0.25, 0.8, ts=T0 + 5)
    assert [p.channel for p in pubs] == ["sentiment:AAPL"]
    assert msgspec.json.decode(pubs[-1].data) == {
        "type": "user",
        "ts": T0 + 5,
        "ticker": "AAPL",
        "user_id": "u1",
        "sentiment": 0.25,
        "user_score": 0.8,
    }


async def test_tick_publishes_closed_sentiment_points() -> None:
    gw, _, clock = await make()
    start = clock.now - clock.now % 60_000
    await gw.publish_sentiment("NVDA", "u1", 0.5, 1.0, ts=start + 10)
    await gw.publish_sentiment("NVDA", "u2", -0.1, 3.0, ts=start + 20)
    assert await gw.tick(start + 999) == []
    pubs = await gw.tick(start + 60_000)
    kinds = [msgspec.json.decode(p.data)["type"] for p in pubs]
    assert kinds == ["mp"] * 60 + ["crowd"]
    crowd = msgspec.json.decode(pubs[-1].data)
    assert crowd["ts"] == start and crowd["volume"] == 2
    assert crowd["crowd_sentiment"] == pytest.approx(0.2)
    first_mp = msgspec.json.decode(pubs[0].data)
    assert first_mp["mp_sentiment"] == pytest.approx((0.5 - 0.3) / 4)
    assert all(p.channel == "sentiment:NVDA" for p in pubs)


async def test_gateway_on_every_engine(engine: tuple[Engine, Recorder]) -> None:
    eng, rec = engine
    await eng.subscribe(["book:ETH-USD", "trades:ETH-USD"])
    gw = Gateway(eng)
    await gw.apply_book("ETH-USD", [["3000", "1"], ["2999.5", "2"]], [["3001", "1"]])
    await gw.publish_trade("ETH-USD", "3001", "0.5", "buy")
    await gw.apply_book("ETH-USD", [], [["3001", "0.5"]])
    view = await gw.book_view("ETH-USD", 10)
    assert view.seq == 2 and view.asks == [("3001.00", "0.5000")]
    # A new gateway (a restarted publisher) continues the book from the engine snapshot.
    again = Gateway(eng)
    pub = await again.apply_book("ETH-USD", [["2999.5", "0"]], [])
    assert pub is not None and pub.seq == 3
    await rec.wait(lambda: len(rec.pubs) >= 4)
    replay = OrderBook()
    mk = again.market("ETH-USD")
    for p in rec.pubs:
        if p.channel == "book:ETH-USD":
            d = data(p, BookData)
            replay.apply(
                [(mk.parse_price(a), mk.parse_size(b)) for a, b in d.bids],
                [(mk.parse_price(a), mk.parse_size(b)) for a, b in d.asks],
            )
            assert replay.checksum() == d.checksum
    assert [p.seq for p in rec.pubs if p.channel == "book:ETH-USD"] == [1, 2, 3]
    assert (await again.book_view("ETH-USD", 10)).bids == [("3000.00", "1.0000")]

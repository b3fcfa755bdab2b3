"""Peatio's RabbitMQ messages mapped onto the gateway (no broker: the consumer's
``handle`` with Peatio's exact routing keys and bodies, a real gateway and engine)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from tickwire.engine import HistorySettings, MemoryEngine
from tickwire.ingest.amqp import AmqpSettings, PeatioIngest, amqp_url, redact_url
from tickwire.ingest.gateway import Gateway
from tickwire.model.payloads import BookData, OrderData, TradeData, UserTradeData
from tickwire.model.publication import Position

NOW = 1_700_000_000


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


@pytest.fixture
async def ingest() -> PeatioIngest:
    engine = MemoryEngine(HistorySettings(size=1000, ttl=60))
    gateway = Gateway(engine, clock=lambda: NOW * 1000 + 5_000)
    return PeatioIngest(gateway, AmqpSettings(url="amqp://guest:guest@127.0.0.1:1/"))


async def last(ingest: PeatioIngest, channel: str) -> Any:
    snap = await ingest.gateway.engine.snapshot(channel)
    assert snap is not None
    return snap


async def test_book_trades_orders_and_user_trades_map_onto_the_gateway(
    ingest: PeatioIngest,
) -> None:
    engine = ingest.gateway.engine
    snap = {"asks": [["101.0", "1.5"], ["102.0", "2.0"]], "bids": [["100.0", "3.0"]], "sequence": 7}
    assert await ingest.handle("public.btcusd.ob-snap", body(snap)) == "applied"
    assert await ingest.handle("public.btcusd.ob-inc", body({"bids": ["99.5", "1"], "sequence": 8}))
    assert await ingest.handle("public.btcusd.ob-inc", body({"asks": ["101.0", ""], "sequence": 9}))
    view = await ingest.gateway.book_view("BTC-USD", 10)
    assert view.asks == [("102.00", "2.00000000")]
    assert view.bids == [("100.00", "3.00000000"), ("99.50", "1.00000000")]
    last_pub = await engine.history("book:BTC-USD", (await engine.position("book:BTC-USD")))
    assert last_pub.recovered
    position = await engine.position("book:BTC-USD")
    latest = await engine.history("book:BTC-USD", Position(position.epoch, position.seq - 1))
    book = msgspec.json.decode(latest.publications[-1].data, type=BookData)
    assert book.checksum == view.checksum  # the last update's checksum is the book's
    trades = {
        "trades": [{"tid": 5, "taker_type": "sell", "date": NOW, "price": "100.0", "amount": "0.5"}]
    }
    assert await ingest.handle("public.btcusd.trades", body(trades)) == "applied"
    pos = await engine.position("trades:BTC-USD")
    [pub] = (await engine.history("trades:BTC-USD", type(pos)(pos.epoch, 0))).publications
    assert msgspec.json.decode(pub.data, type=TradeData) == TradeData(
        5, "100.00", "0.50000000", "sell", NOW * 1000
    )
    # a redelivered trade is not published twice
    assert await ingest.handle("public.btcusd.trades", body(trades)) == "ignored"
    assert (await engine.position("trades:BTC-USD")).seq == 1
    candle = json.loads(bytes((await last(ingest, "candles:BTC-USD:1m")).data))
    assert (candle["close"], candle["volume"]) == ("100.00", "0.50000000")
    order = {
        "id": 41,
        "market": "btcusd",
        "kind": "bid",
        "side": "buy",
        "ord_type": "limit",
        "price": "100.0",
        "avg_price": "0.0",
        "state": "wait",
        "origin_volume": "2.0",
        "remaining_volume": "1.5",
        "executed_volume": "0.5",
        "at": NOW,
        "created_at": NOW,
        "updated_at": NOW,
        "trades_count": 1,
    }
    assert await ingest.handle("private.IDABC.order", body(order)) == "applied"
    pos = await engine.position("user:IDABC:orders")
    [pub] = (await engine.history("user:IDABC:orders", type(pos)(pos.epoch, 0))).publications
    got = msgspec.json.decode(pub.data, type=OrderData)
    assert (got.id, got.state, got.size, got.filled, got.remaining, got.avg_price) == (
        "41",
        "open",
        "2.00000000",
        "0.50000000",
        "1.50000000",
        None,
    )
    utrade = {
        "id": 5,
        "price": "100.0",
        "amount": "0.5",
        "total": "50.0",
        "market": "btcusd",
        "side": "buy",
        "taker_type": "sell",
        "created_at": NOW,
        "order_id": 41,
    }
    assert await ingest.handle("private.IDABC.trade", body(utrade)) == "applied"
    assert await ingest.handle("private.IDABC.trade", body(utrade)) == "ignored"
    pos = await engine.position("user:IDABC:trades")
    [pub] = (await engine.history("user:IDABC:trades", type(pos)(pos.epoch, 0))).publications
    ut = msgspec.json.decode(pub.data, type=UserTradeData)
    assert (ut.liquidity, ut.total, ut.order_id) == ("maker", "50.0000000000", "41")
    # tickers and klines are derived by tickwire from the trades: well-formed, not applied
    kline = [NOW, 100.0, 100.0, 100.0, 100.0, 0.5]
    assert await ingest.handle("public.btcusd.kline-1m", body(kline)) == "ignored"
    assert await ingest.handle("public.global.tickers", body({"btcusd": {}})) == "ignored"
    s = ingest.stats
    assert (s.received, s.applied, s.ignored, s.rejected) == (10, 6, 4, {})


async def test_bad_messages_are_counted_by_reason_and_change_nothing(
    ingest: PeatioIngest, caplog: pytest.LogCaptureFixture
) -> None:
    engine = ingest.gateway.engine
    await ingest.handle(
        "public.btcusd.ob-snap",
        body({"asks": [["101.0", "1"]], "bids": [["100.0", "1"]], "sequence": 1}),
    )
    before = await engine.position("book:BTC-USD")
    bad: list[tuple[str, bytes, str]] = [
        ("public.btcusd.ob-inc", b"{not json", "malformed"),
        ("public.btcusd.ob-inc", body({"asks": "101.0", "sequence": 2}), "malformed"),
        ("public.btcusd.ob-inc", body({"sequence": 2}), "malformed"),
        ("public.btcusd.ob-inc", body({"asks": [1, 2], "sequence": 2}), "malformed"),
        (
            "public.btcusd.ob-inc",
            body({"bids": ["100.001", "1"], "sequence": 2}),
            "wrong_precision",
        ),
        ("public.btcusd.ob-inc", body({"bids": ["101.5", "1"], "sequence": 2}), "crossed_book"),
        ("public.btcusd.ob-inc", body({"bids": ["abc", "1"], "sequence": 2}), "not_a_number"),
        ("public.dogeusd.trades", body({"trades": []}), "unknown_market"),
        ("public.btcusd.weather", body({}), "unknown_routing_key"),
        ("public.global.news", body({}), "unknown_routing_key"),
        ("secret.btcusd.trades", body({}), "unknown_routing_key"),
        ("public.btcusd", body({}), "unknown_routing_key"),
        ("private.ID1.balance", body({}), "unknown_routing_key"),
        (
            "private.bad uid!.order",
            body({"id": 1, "market": "btcusd", "side": "buy", "origin_volume": "1", "price": "1"}),
            "bad_user_id",
        ),
        ("private.ID1.order", body({"id": 1, "market": "btcusd", "state": "weird"}), "bad_value"),
        ("private.ID1.trade", body({"id": "x"}), "malformed"),
        ("public.btcusd.trades", body({"trades": [{"tid": 1}]}), "malformed"),
        ("public.btcusd.kline-1m", b"[1,", "malformed"),
    ]
    for key, raw, reason in bad:
        assert await ingest.handle(key, raw) == "rejected", key
        assert reason in ingest.stats.rejected, (key, ingest.stats.rejected)
    assert sum(ingest.stats.rejected.values()) == len(bad)
    assert await engine.position("book:BTC-USD") == before
    assert "public.btcusd.ob-inc rejected (crossed_book)" in caplog.text
    # and the consumer goes on: a good message after all that applies
    assert await ingest.handle("public.btcusd.ob-inc", body({"bids": ["99.0", "1"], "sequence": 2}))
    assert (await engine.position("book:BTC-USD")).seq == before.seq + 1


async def test_sequence_gaps_are_counted_and_redeliveries_skipped(ingest: PeatioIngest) -> None:
    await ingest.handle("public.btcusd.ob-snap", body({"asks": [], "bids": [], "sequence": 10}))
    assert await ingest.handle("public.btcusd.ob-inc", body({"bids": ["1.0", "1"], "sequence": 11}))
    assert (
        await ingest.handle("public.btcusd.ob-inc", body({"bids": ["1.0", "2"], "sequence": 11}))
        == "ignored"
    )
    assert ingest.stats.sequence_gaps == 0
    assert await ingest.handle("public.btcusd.ob-inc", body({"bids": ["2.0", "1"], "sequence": 14}))
    assert ingest.stats.sequence_gaps == 1
    # Peatio's periodic ob-snap repairs the book: the difference is published
    snap = {"asks": [], "bids": [["1.0", "1"], ["3.0", "1"]], "sequence": 20}
    assert await ingest.handle("public.btcusd.ob-snap", body(snap)) == "applied"
    view = await ingest.gateway.book_view("BTC-USD", 10)
    assert view.bids == [("3.00", "1.00000000"), ("1.00", "1.00000000")]


def test_urls() -> None:
    assert amqp_url("mq", 5673, "pe@tio", "p:w/d", "/") == "amqp://pe%40tio:p%3Aw%2Fd@mq:5673/%2F"
    assert redact_url("amqp://u:secret@h:5672/v") == "amqp://u:***@h:5672/v"
    assert redact_url("amqp://h:5672/") == "amqp://h:5672/"


async def test_role_gated_routing_keys_are_published_as_they_are() -> None:
    engine = MemoryEngine(HistorySettings(size=1000, ttl=60))
    gateway = Gateway(engine, clock=lambda: NOW * 1000)
    settings = AmqpSettings(url="amqp://guest:guest@127.0.0.1:1/", prefixes=frozenset({"admin"}))
    ingest = PeatioIngest(gateway, settings)
    note = body({"halt": "btcusd", "at": NOW})
    assert await ingest.handle("admin.btcusd.trades", note) == "applied"
    pos = await engine.position("scoped:admin:btcusd.trades")
    [pub] = (
        await engine.history("scoped:admin:btcusd.trades", Position(pos.epoch, 0))
    ).publications
    assert bytes(pub.data) == note
    assert await ingest.handle("admin.btcusd.trades", b"{not json") == "rejected"
    assert await ingest.handle("root.btcusd.trades", note) == "rejected"  # not configured
    assert await ingest.handle("admin.btc.usd.trades", note) == "rejected"  # four parts
    assert ingest.stats.rejected == {"malformed": 1, "unknown_routing_key": 2}
    assert ingest.stats.applied == 1

"""/metrics counts what an operator needs even with no subscriber connected."""

from __future__ import annotations

import pytest

from tickwire.engine import EngineUnavailable
from tickwire.engine.redis import RedisEngine
from tickwire.model.channels import CANDLE_INTERVALS
from tickwire.server.data_routes import GATEWAY_KEY

from .harness import Gateway, run_gateway


async def scrape(gw: Gateway) -> dict[str, float]:
    async with gw.session.get(gw.http + "/metrics") as resp:
        text = await resp.text()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def test_publications_are_counted_by_kind_with_nobody_subscribed() -> None:
    async with run_gateway() as gw:
        before = await scrape(gw)
        assert before.get('tickwire_publications_ingested_total{kind="trades"}', 0) == 0
        gateway = gw.runner.app[GATEWAY_KEY]
        await gateway.publish_trade("BTC-USD", "65000", "0.5", "buy")
        await gateway.apply_book("BTC-USD", [["64999", "1"]], [["65001", "1"]])
        after = await scrape(gw)
        assert after['tickwire_publications_ingested_total{kind="trades"}'] == 1
        candles = after['tickwire_publications_ingested_total{kind="candles"}']
        assert candles == len(CANDLE_INTERVALS)  # one per interval
        assert after['tickwire_publications_ingested_total{kind="book"}'] == 1
        assert after['tickwire_publications_ingested_total{kind="ticker"}'] == 2
        assert after["tickwire_publications_delivered_total"] == 0  # nobody listens
        assert after["tickwire_connections"] == 0
        assert after["tickwire_publish_errors_total"] == 0


async def test_latency_and_connections_by_dialect_are_exposed() -> None:
    async with run_gateway() as gw:
        c = await gw.connect()
        await c.subscribe("trades:BTC-USD")
        for i in range(3):
            await gw.publish("trades:BTC-USD", {"i": i})
            await c.recv_type("pub")
        metrics = await scrape(gw)
        assert metrics["tickwire_delivery_latency_seconds_count"] == 3
        assert metrics['tickwire_delivery_latency_seconds_bucket{le="+Inf"}'] == 3
        assert metrics['tickwire_connections_by_dialect{dialect="native"}'] == 1
        assert metrics["tickwire_queue_bytes"] >= 0


async def test_publish_errors_are_counted() -> None:
    engine = RedisEngine("redis://127.0.0.1:1/0", timeout=0.5)  # nothing listens there
    try:
        with pytest.raises(EngineUnavailable):
            await engine.publish("trades:X", b"{}")
        with pytest.raises(EngineUnavailable):
            await engine.publish_many([("trades:X", b"{}", None)])
        assert engine.stats.publish_errors == 2
        assert engine.stats.published == {}
    finally:
        await engine.close()

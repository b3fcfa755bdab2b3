"""The live dashboard's HTTP side: the market registry it reads its pickers from."""

from __future__ import annotations

from .harness import run_gateway


async def test_market_registry_lists_markets_tickers_and_intervals() -> None:
    specs = [
        {
            "id": "XBT-EUR",
            "base": "XBT",
            "quote": "EUR",
            "price_increment": "0.5",
            "size_increment": "0.0001",
        }
    ]
    async with run_gateway(
        markets=["ETH-USD", "XBT-EUR", "DOGE-USD"], tickers=["TSLA", "AAPL"], market_specs=specs
    ) as gw:
        async with gw.session.get(gw.http + "/api/v1/markets") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            body = await resp.json()
    assert body == {
        "markets": [
            {
                "id": "ETH-USD",
                "base": "ETH",
                "quote": "USD",
                "price_increment": "0.01",
                "size_increment": "0.0001",
            },
            {
                "id": "XBT-EUR",
                "base": "XBT",
                "quote": "EUR",
                "price_increment": "0.5",
                "size_increment": "0.0001",
            },
            # named without a definition: the generic increments
            {
                "id": "DOGE-USD",
                "base": "DOGE",
                "quote": "USD",
                "price_increment": "0.01",
                "size_increment": "0.00000001",
            },
        ],
        "tickers": ["AAPL", "TSLA"],
        "candle_intervals": ["1m", "5m", "15m", "1h", "6h", "1d"],
    }

"""The Coinbase Advanced Trade surface: the WebSocket feed and the public product REST
routes clients load before they subscribe (docs/dialects.md, "Coinbase").

``GET /api/v3/brokerage/market/products`` → ``{"products": [...], "num_products": n}``;
``GET /api/v3/brokerage/market/products/{product_id}`` → one product, or 404
``{"error": "NOT_FOUND", "error_details", "message"}`` as the upstream answers.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from tickwire.dialects.coinbase import Coinbase
from tickwire.engine.base import EngineError
from tickwire.model.decimals import format_scaled, parse_scaled
from tickwire.model.markets import (
    GENERIC_INCREMENTS,
    Market,
    MarketConfig,
    MarketRegistry,
    make_market,
)
from tickwire.model.payloads import TickerData
from tickwire.server.config import Config
from tickwire.server.node import Node
from tickwire.server.ws import mount

PRODUCTS_PATH = "/api/v3/brokerage/market/products"
_decode_ticker = msgspec.json.Decoder(TickerData).decode


def product(market: Market, ticker: TickerData | None) -> dict[str, Any]:
    """One product in the upstream's REST shape; prices from the market's ticker."""
    last = ticker.last if ticker is not None else None
    bid = ticker.best_bid if ticker is not None else None
    ask = ticker.best_ask if ticker is not None else None
    mid = ""
    if bid is not None and ask is not None:
        places = market.price_places + 1  # the mid of two prices needs one more place
        mid = format_scaled(parse_scaled(bid, places) + parse_scaled(ask, places), places)
        mid = format_scaled(parse_scaled(mid, places) // 2, places)
    pid = market.alias("coinbase")
    return {
        "product_id": pid,
        "price": last or "",
        "price_percentage_change_24h": (ticker.change_pct_24h if ticker else None) or "",
        "volume_24h": ticker.volume_24h if ticker is not None else "0",
        "volume_percentage_change_24h": "",
        "base_increment": market.size_increment.text,
        "quote_increment": market.price_increment.text,
        "quote_min_size": market.price_increment.text,
        "quote_max_size": "",
        "base_min_size": market.size_increment.text,
        "base_max_size": "",
        "base_name": market.base,
        "quote_name": market.quote,
        "watched": False,
        "is_disabled": False,
        "new": False,
        "status": "online",
        "cancel_only": False,
        "limit_only": False,
        "post_only": False,
        "trading_disabled": False,
        "auction_mode": False,
        "product_type": "SPOT",
        "quote_currency_id": market.quote,
        "base_currency_id": market.base,
        "mid_market_price": mid,
        "alias": "",
        "alias_to": [],
        "base_display_symbol": market.base,
        "quote_display_symbol": market.quote,
        "view_only": False,
        "price_increment": market.price_increment.text,
        "display_name": f"{market.base}-{market.quote}",
        "product_venue": "CBE",
    }


def add_product_routes(app: web.Application, node: Node, markets: MarketRegistry) -> None:
    """The two public product routes over ``markets``."""

    async def ticker(market: Market) -> TickerData | None:
        try:
            snap = await node.engine.snapshot(f"ticker:{market.id}")
        except EngineError:
            return None  # the registry answers; prices are left empty
        if snap is None:
            return None
        try:
            return _decode_ticker(snap.data)
        except msgspec.DecodeError:
            return None

    async def products(request: web.Request) -> web.Response:
        items = [product(m, await ticker(m)) for m in markets.markets]
        return web.json_response({"products": items, "num_products": len(items)})

    async def one(request: web.Request) -> web.Response:
        pid = request.match_info["product_id"]
        market = markets.by_alias("coinbase", pid)
        if market is None:
            text = f"product {pid[:64]!r} does not exist"
            body = {"error": "NOT_FOUND", "error_details": text, "message": text}
            return web.json_response(body, status=404)
        return web.json_response(product(market, await ticker(market)))

    app.router.add_get(PRODUCTS_PATH, products)
    app.router.add_get(PRODUCTS_PATH + "/{product_id}", one)


def install_coinbase(
    app: web.Application, config: Config, node: Node, markets: MarketRegistry
) -> None:
    """Mount the Coinbase feed on ``config.coinbase_paths`` and add the product routes.
    The benchmark publisher's symbols (``--synthetic``) are products too."""
    extra = [
        make_market(MarketConfig(sym, sym, "USD", *GENERIC_INCREMENTS))
        for sym in sorted(node.markets)
        if sym not in markets and markets.by_alias("coinbase", sym) is None
    ]
    if extra:
        markets = MarketRegistry([*markets.markets, *extra], markets.sentiment_tickers)
    dialect = Coinbase.configure(markets, config.coinbase_max_product_ids)
    mount(app, node, dialect, config.coinbase_paths, compression=config.coinbase_compression)
    add_product_routes(app, node, markets)

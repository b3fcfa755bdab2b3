"""How data gets in: the gateway's Python API, the HTTP publish API and the demo market."""

from tickwire.ingest.gateway import (
    BookOp,
    BookView,
    Gateway,
    GatewaySettings,
    IngestError,
    Op,
    OrderOp,
    SentimentOp,
    TradeOp,
    UserTradeOp,
)

__all__ = [
    "BookOp",
    "BookView",
    "Gateway",
    "GatewaySettings",
    "IngestError",
    "Op",
    "OrderOp",
    "SentimentOp",
    "TradeOp",
    "UserTradeOp",
]

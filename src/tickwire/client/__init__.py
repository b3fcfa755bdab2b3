"""Clients: the Python SDK (``tickwire.connect``) and the ``tickwire`` command line.

The SDK's names are imported on first use, so the command line (which lives here too)
starts without loading aiohttp's client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tickwire.client.backoff import Backoff
    from tickwire.client.book import BookMismatch, Level, LocalBook
    from tickwire.client.connection import (
        Client,
        ClientStats,
        EventHandler,
        Subscription,
        TokenProvider,
        connect,
    )
    from tickwire.client.errors import (
        ConnectError,
        Forbidden,
        InvalidChannel,
        InvalidURL,
        RequestError,
        ServerClosed,
        TickwireError,
        TokenProviderError,
        Unauthorized,
    )
    from tickwire.client.messages import (
        AnyMessage,
        BookUpdate,
        Candle,
        Connected,
        Event,
        Item,
        Malformed,
        Message,
        Order,
        Reconnecting,
        Recovered,
        Resynced,
        Sentiment,
        Ticker,
        TokenRefreshed,
        Trade,
        UserTrade,
    )
    from tickwire.model.publication import Position

#: Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["Backoff"], "tickwire.client.backoff"),
    **dict.fromkeys(["BookMismatch", "Level", "LocalBook"], "tickwire.client.book"),
    **dict.fromkeys(
        ["Client", "ClientStats", "EventHandler", "Subscription", "TokenProvider", "connect"],
        "tickwire.client.connection",
    ),
    **dict.fromkeys(
        [
            "ConnectError",
            "Forbidden",
            "InvalidChannel",
            "InvalidURL",
            "RequestError",
            "ServerClosed",
            "TickwireError",
            "TokenProviderError",
            "Unauthorized",
        ],
        "tickwire.client.errors",
    ),
    **dict.fromkeys(
        [
            "AnyMessage",
            "BookUpdate",
            "Candle",
            "Connected",
            "Event",
            "Item",
            "Malformed",
            "Message",
            "Order",
            "Reconnecting",
            "Recovered",
            "Resynced",
            "Sentiment",
            "Ticker",
            "TokenRefreshed",
            "Trade",
            "UserTrade",
        ],
        "tickwire.client.messages",
    ),
    "Position": "tickwire.model.publication",
}

__all__ = [
    "AnyMessage",
    "Backoff",
    "BookMismatch",
    "BookUpdate",
    "Candle",
    "Client",
    "ClientStats",
    "ConnectError",
    "Connected",
    "Event",
    "EventHandler",
    "Forbidden",
    "InvalidChannel",
    "InvalidURL",
    "Item",
    "Level",
    "LocalBook",
    "Malformed",
    "Message",
    "Order",
    "Position",
    "Reconnecting",
    "Recovered",
    "RequestError",
    "Resynced",
    "Sentiment",
    "ServerClosed",
    "Subscription",
    "Ticker",
    "TickwireError",
    "TokenProvider",
    "TokenProviderError",
    "TokenRefreshed",
    "Trade",
    "Unauthorized",
    "UserTrade",
    "connect",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tickwire.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

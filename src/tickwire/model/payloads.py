"""The data of each channel's publications and snapshots: the contract dialects render from.

Every publication's ``data`` is one of these structs encoded once as JSON. Prices and
sizes are decimal strings at the market's precision; timestamps are UNIX milliseconds.
Decode with ``msgspec.json.decode(pub.data, type=TradeData)`` and so on.

===========================  ==================================  ===========================
channel                      publication ``data``                snapshot ``data``
===========================  ==================================  ===========================
``book:<market>``            :class:`BookData` (changed levels)  :class:`BookData` (levels)
``trades:<market>``          :class:`TradeData`                  (none: not a state channel)
``ticker:<market>``          :class:`TickerData`                 the same :class:`TickerData`
``ticker_batch:<market>``    :class:`TickerData` (every 5 s)     the same :class:`TickerData`
``candles:<market>:<iv>``    :class:`CandleData` (open candle)   the same :class:`CandleData`
``sentiment:<ticker>``       :data:`SentimentData`               (none)
``user:<uid>:orders``        :class:`OrderData`                  (none)
``user:<uid>:trades``        :class:`UserTradeData`              (none)
``user:<uid>:open_orders``   :class:`OrderData`                  :class:`OpenOrdersData`
===========================  ==================================  ===========================
"""

from __future__ import annotations

from typing import Literal

import msgspec

#: ``[price, size]`` as decimal strings.
LevelRow = tuple[str, str]
Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market"]
OrderState = Literal["pending", "open", "filled", "cancelled", "expired", "rejected"]


class BookData(msgspec.Struct, frozen=True):
    """``book:<market>``. As a publication: the levels that changed, with their new
    absolute size (``"0.00"``-style zero = level removed). As a snapshot: every level up to
    the snapshot depth. Bids best (highest) first, asks best (lowest) first. ``checksum``
    is the CRC32 of the top 10 levels after the change (Kraken's algorithm)."""

    bids: list[LevelRow]
    asks: list[LevelRow]
    checksum: int


class TradeData(msgspec.Struct, frozen=True):
    """``trades:<market>``: one public trade. ``side`` is the taker's (aggressor's) side;
    ``id`` rises per market."""

    id: int
    price: str
    size: str
    side: Side
    ts: int


class TickerData(msgspec.Struct, frozen=True):
    """``ticker:<market>``: the whole ticker, published on every trade and every change of
    the best bid or ask. 24 h figures cover the trades of the last 1440 minutes (the
    current minute included); they are null while that window holds no trade.
    ``change_pct_24h`` is a percentage with 2 decimals."""

    last: str | None
    last_size: str | None
    best_bid: str | None
    best_bid_size: str | None
    best_ask: str | None
    best_ask_size: str | None
    open_24h: str | None
    high_24h: str | None
    low_24h: str | None
    volume_24h: str
    quote_volume_24h: str
    change_24h: str | None
    change_pct_24h: str | None
    ts: int


class CandleData(msgspec.Struct, frozen=True):
    """``candles:<market>:<interval>``: the open candle after the latest trade. ``start``
    is the candle's opening time (ms, aligned to the interval in UTC). A publication with
    a later ``start`` means the previous candle closed as last published."""

    interval: str
    start: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    trades: int


class OrderData(msgspec.Struct, frozen=True):
    """``user:<uid>:orders``: the full current state of one of the user's orders."""

    id: str
    market: str
    side: Side
    type: OrderType
    state: OrderState
    price: str | None
    size: str
    filled: str
    remaining: str
    avg_price: str | None
    client_id: str | None
    trades_count: int
    created_at: int
    updated_at: int


class OpenOrdersData(msgspec.Struct, frozen=True):
    """The snapshot of ``user:<uid>:open_orders``: the user's orders whose state is
    ``pending`` or ``open``, oldest first (at most ``open_orders_max`` of them)."""

    orders: list[OrderData]


class UserTradeData(msgspec.Struct, frozen=True):
    """``user:<uid>:trades``: a fill of one of the user's orders. ``side`` is the user's
    side, ``liquidity`` whether the user was maker or taker, ``total`` = price * size at
    price places + size places."""

    id: int
    order_id: str
    market: str
    side: Side
    price: str
    size: str
    total: str
    liquidity: Literal["maker", "taker"]
    ts: int


class UserSentiment(msgspec.Struct, frozen=True, tag_field="type", tag="user"):
    """``sentiment:<ticker>``: one scored message as received (``ts`` = message time)."""

    ts: int
    ticker: str
    user_id: str
    sentiment: float
    user_score: float


class CrowdSentiment(msgspec.Struct, frozen=True, tag_field="type", tag="crowd"):
    """``sentiment:<ticker>``: the crowd series, one point per closed minute (``ts`` = the
    minute's start). Definitions in docs/market-data.md; null where undefined."""

    ts: int
    ticker: str
    crowd_sentiment: float | None
    crowd_sentiment_moving_average: float | None
    crowd_sentiment_z_score: float | None
    crowd_sentiment_z_score_moving_average: float | None
    volume: int
    buzz: float | None


class MarketSentiment(msgspec.Struct, frozen=True, tag_field="type", tag="mp"):
    """``sentiment:<ticker>``: the market ("mp") series, one point per closed second
    (``ts`` = the second's start). Definitions in docs/market-data.md."""

    ts: int
    ticker: str
    mp_sentiment: float | None
    mp_sentiment_moving_average: float | None
    mp_sentiment_z_score: float | None
    mp_sentiment_z_score_moving_average: float | None


#: Any publication on ``sentiment:<ticker>``; ``type`` tells which.
SentimentData = UserSentiment | CrowdSentiment | MarketSentiment

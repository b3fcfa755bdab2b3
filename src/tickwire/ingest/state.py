"""What the gateway keeps per market, and how an operation's changes are put back."""

from __future__ import annotations

from collections.abc import Callable

from tickwire.model.book import Level, OrderBook
from tickwire.model.candles import CandleSeries
from tickwire.model.channels import CANDLE_INTERVALS
from tickwire.model.markets import Market
from tickwire.model.ticker import Rolling24h

#: ``(channel, data, snapshot)`` ready for :meth:`Engine.publish`.
Item = tuple[str, bytes, bytes | None]

#: Puts back a piece of state an operation changed (run newest first on failure).
Undo = Callable[[], None]


class MarketState:
    """What the gateway keeps of one market: its book, ticker statistics, candles, last
    trade id and channel names."""

    __slots__ = (
        "book",
        "book_channel",
        "book_loaded",
        "book_local",
        "bytes_since_snapshot",
        "candle_channels",
        "candles",
        "last_trade_id",
        "market",
        "pubs_since_snapshot",
        "stats",
        "ticker_batch_channel",
        "ticker_channel",
        "ticker_unbatched",
        "top",
        "trades_channel",
    )

    def __init__(self, market: Market, max_levels: int) -> None:
        self.market = market
        price, size = market.price, market.size

        def render(p: int, s: int) -> bytes:
            return f'["{price(p)}","{size(s)}"]'.encode()

        self.book = OrderBook(max_levels, render)
        self.book_loaded = False
        self.book_local = False
        #: book publications (and their bytes) since the last stored snapshot; None
        #: until this gateway stored one (its first publication always stores one)
        self.pubs_since_snapshot: int | None = None
        self.bytes_since_snapshot = 0
        self.stats = Rolling24h()
        self.candles = [CandleSeries(iv) for iv in CANDLE_INTERVALS]
        self.last_trade_id = 0
        self.top: tuple[Level | None, Level | None] = (None, None)
        self.book_channel = f"book:{market.id}"
        self.trades_channel = f"trades:{market.id}"
        self.ticker_channel = f"ticker:{market.id}"
        self.ticker_batch_channel = f"ticker_batch:{market.id}"
        #: the ticker published since the last ``ticker_batch`` one (None: no change)
        self.ticker_unbatched: bytes | None = None
        self.candle_channels = [f"candles:{market.id}:{iv}" for iv in CANDLE_INTERVALS]


def roll_back(undo: list[Undo]) -> None:
    """Run ``undo`` newest first: the state as it was before the operation."""
    for back in reversed(undo):
        back()

"""Candles (OHLCV) aggregated from trades, one series per market and interval."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tickwire.model.channels import CANDLE_INTERVALS
from tickwire.model.errors import TickwireError


class CandleError(TickwireError, ValueError):
    """A trade the candles refuse; ``code`` is stable."""


@dataclass(slots=True)
class Candle:
    """One candle in integer units. ``last_ts`` is the newest trade time seen in it."""

    start: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    trades: int
    last_ts: int


class CandleSeries:
    """The open candle of one interval. Trades for an already closed candle are refused;
    trades out of order inside the open candle count toward high, low and volume but only
    the newest (by time) sets the close."""

    def __init__(self, interval: str) -> None:
        if interval not in CANDLE_INTERVALS:
            raise ValueError(f"unknown candle interval {interval!r}")
        self.interval = interval
        self.length_ms = CANDLE_INTERVALS[interval] * 1000
        self.current: Candle | None = None

    def start_of(self, ts: int) -> int:
        """The start (ms) of the candle holding time ``ts``."""
        return ts - ts % self.length_ms

    def checkpoint(self) -> Callable[[], None]:
        """A function that puts the open candle back as it is now."""
        current = self.current
        if current is None:

            def undo_none() -> None:
                self.current = None

            return undo_none
        c = current
        saved = (c.high, c.low, c.close, c.volume, c.trades, c.last_ts)

        def undo() -> None:
            c.high, c.low, c.close, c.volume, c.trades, c.last_ts = saved
            self.current = c

        return undo

    def check(self, ts: int) -> None:
        """Raise ``trade_out_of_order`` if a trade at ``ts`` belongs to a closed candle."""
        current = self.current
        if current is not None and ts < current.start:
            raise CandleError(
                "trade_out_of_order",
                f"trade time {ts} falls in a closed {self.interval} candle "
                f"(the open one started at {current.start})",
            )

    def add(self, ts: int, price: int, size: int) -> Candle:
        """Count a trade; returns the open candle after it (a new one if ``ts`` is past
        the current candle's end)."""
        self.check(ts)
        current = self.current
        start = self.start_of(ts)
        if current is None or start > current.start:
            current = self.current = Candle(start, price, price, price, price, size, 1, ts)
            return current
        if price > current.high:
            current.high = price
        if price < current.low:
            current.low = price
        current.volume += size
        current.trades += 1
        if ts >= current.last_ts:
            current.close = price
            current.last_ts = ts
        return current

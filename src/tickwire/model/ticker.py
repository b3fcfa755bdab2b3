"""Rolling 24-hour trade statistics for a ticker, in integer units.

The window is the 1440 one-minute buckets ending with the minute of the newest trade
(that minute included). Statistics move with trade time, not wall-clock time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

BUCKET_MS = 60_000
WINDOW_BUCKETS = 1440


@dataclass(slots=True)
class _Bucket:
    start: int
    open: int
    high: int
    low: int
    volume: int
    quote_volume: int


@dataclass(frozen=True, slots=True)
class Stats24h:
    """Window statistics. ``open``/``high``/``low`` are None when the window is empty.
    ``quote_volume`` is in units of price places + size places."""

    open: int | None
    high: int | None
    low: int | None
    volume: int
    quote_volume: int


class Rolling24h:
    """Last trade and rolling 24 h open/high/low/volume. O(1) per trade; the closed
    buckets' high and low are recomputed once per new minute."""

    def __init__(self, window_buckets: int = WINDOW_BUCKETS, bucket_ms: int = BUCKET_MS) -> None:
        self.window_buckets = window_buckets
        self.bucket_ms = bucket_ms
        self._buckets: deque[_Bucket] = deque()
        self._volume = 0
        self._quote_volume = 0
        self._closed_high: int | None = None
        self._closed_low: int | None = None
        self.last_price: int | None = None
        self.last_size: int | None = None
        self.last_ts: int | None = None

    def add(self, ts: int, price: int, size: int) -> None:
        """Count a trade. Its minute must not be older than the newest bucket's."""
        start = ts - ts % self.bucket_ms
        buckets = self._buckets
        if not buckets or start > buckets[-1].start:
            buckets.append(_Bucket(start, price, price, price, 0, 0))
            self._expire(start)
            self._recompute_closed()
        elif start < buckets[-1].start:
            raise ValueError("trade older than the newest minute bucket")
        bucket = buckets[-1]
        if price > bucket.high:
            bucket.high = price
        if price < bucket.low:
            bucket.low = price
        bucket.volume += size
        bucket.quote_volume += price * size
        self._volume += size
        self._quote_volume += price * size
        if self.last_ts is None or ts >= self.last_ts:
            self.last_price, self.last_size, self.last_ts = price, size, ts

    def checkpoint(self, ts: int) -> Callable[[], None]:
        """A function that puts the statistics back as they are now, before a trade at
        ``ts`` is added. O(1) within a minute; a trade opening a new minute copies the
        (at most 1440) bucket references."""
        buckets = self._buckets
        scalars = (
            self._volume,
            self._quote_volume,
            self._closed_high,
            self._closed_low,
            self.last_price,
            self.last_size,
            self.last_ts,
        )
        start = ts - ts % self.bucket_ms
        if buckets and start <= buckets[-1].start:
            last = buckets[-1]
            saved = (last.high, last.low, last.volume, last.quote_volume)

            def undo_within() -> None:
                last.high, last.low, last.volume, last.quote_volume = saved
                self._restore(scalars)

            return undo_within
        kept = deque(buckets)

        def undo_new_minute() -> None:
            self._buckets = kept
            self._restore(scalars)

        return undo_new_minute

    def _restore(self, scalars: tuple[int | None, ...]) -> None:
        (
            self._volume,
            self._quote_volume,
            self._closed_high,
            self._closed_low,
            self.last_price,
            self.last_size,
            self.last_ts,
        ) = scalars  # type: ignore[assignment]

    def _expire(self, newest_start: int) -> None:
        oldest_kept = newest_start - (self.window_buckets - 1) * self.bucket_ms
        buckets = self._buckets
        while buckets and buckets[0].start < oldest_kept:
            old = buckets.popleft()
            self._volume -= old.volume
            self._quote_volume -= old.quote_volume

    def _recompute_closed(self) -> None:
        closed = list(self._buckets)[:-1]
        self._closed_high = max((b.high for b in closed), default=None)
        self._closed_low = min((b.low for b in closed), default=None)

    def stats(self) -> Stats24h:
        """The window's statistics as of the newest trade."""
        buckets = self._buckets
        if not buckets:
            return Stats24h(None, None, None, 0, 0)
        cur = buckets[-1]
        high = cur.high if self._closed_high is None else max(cur.high, self._closed_high)
        low = cur.low if self._closed_low is None else min(cur.low, self._closed_low)
        return Stats24h(buckets[0].open, high, low, self._volume, self._quote_volume)

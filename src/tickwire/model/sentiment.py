"""Sentiment analytics per ticker, computed incrementally from raw scored messages.

A message is ``(ts, user_id, sentiment in [-1, 1], user_score >= 0)``. Two series come
out of them, one point per closed period, as defined in docs/market-data.md:

- crowd (per minute): ``crowd_sentiment`` = mean sentiment of the minute's messages;
  its moving average, z-score and z-score moving average; ``volume`` = the minute's
  message count; ``buzz`` = volume / moving average of volume.
- market, "mp" (per second): ``mp_sentiment`` = user-score-weighted mean sentiment of
  the messages in the trailing ``mp_window`` seconds; its moving average, z-score and
  z-score moving average.

Windows count points (periods) of their own series and include the current point.
Moving averages and z-scores use the non-null values in the window; the running mean
and variance are updated with Welford's add/remove steps and recomputed exactly once per
window length so rounding cannot drift.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tickwire.model.payloads import CrowdSentiment, MarketSentiment, SentimentData, UserSentiment

MINUTE_MS = 60_000
SECOND_MS = 1_000


@dataclass(frozen=True, slots=True)
class SentimentSettings:
    """Window lengths in points of each series (minutes for crowd, seconds for mp)."""

    crowd_ma_window: int = 10
    crowd_z_window: int = 60
    crowd_z_ma_window: int = 10
    volume_ma_window: int = 60
    #: Seconds of messages that make up one mp_sentiment value.
    mp_window: int = 60
    mp_ma_window: int = 60
    mp_z_window: int = 300
    mp_z_ma_window: int = 60
    #: A window whose sample standard deviation is below this gives no z-score.
    min_std: float = 1e-6

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if name != "min_std" and (not isinstance(value, int) or value < 1):
                raise ValueError(f"sentiment setting {name} must be a positive integer")
        if not self.min_std > 0:
            raise ValueError("sentiment setting min_std must be positive")

    @property
    def crowd_horizon(self) -> int:
        """Minutes after the last message until every crowd window is empty."""
        return max(
            self.crowd_ma_window, self.crowd_z_window, self.crowd_z_ma_window, self.volume_ma_window
        )

    @property
    def mp_horizon(self) -> int:
        """Seconds after the last message until every mp window is empty."""
        return self.mp_window + max(self.mp_ma_window, self.mp_z_window, self.mp_z_ma_window)


class RollingWindow:
    """Mean and sample standard deviation of the non-null values among the last ``size``
    points pushed (Welford add/remove, with an exact recomputation every ``size`` pushes)."""

    __slots__ = ("_m2", "_mean", "_n", "_pushes", "points", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.points: deque[float | None] = deque()
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._pushes = 0

    def push(self, value: float | None) -> None:
        """Add the newest point (None = no value), dropping the oldest past ``size``."""
        points = self.points
        if len(points) == self.size:
            old = points.popleft()
            if old is not None:
                self._remove(old)
        points.append(value)
        if value is not None:
            self._add(value)
        self._pushes += 1
        if self._pushes >= self.size:
            self._pushes = 0
            self._refresh()

    def checkpoint(self) -> Callable[[], None]:
        """A function that puts the window back as it is now (copies its points: C
        speed, at most ``size`` references)."""
        saved = (deque(self.points), self._n, self._mean, self._m2, self._pushes)

        def undo() -> None:
            points, self._n, self._mean, self._m2, self._pushes = saved
            self.points = points

        return undo

    def _add(self, x: float) -> None:
        self._n += 1
        delta = x - self._mean
        self._mean += delta / self._n
        self._m2 += delta * (x - self._mean)

    def _remove(self, x: float) -> None:
        n = self._n - 1
        if n == 0:
            self._n, self._mean, self._m2 = 0, 0.0, 0.0
            return
        delta = x - self._mean
        self._mean -= delta / n
        self._m2 = max(0.0, self._m2 - delta * (x - self._mean))
        self._n = n

    def _refresh(self) -> None:
        values = [v for v in self.points if v is not None]
        self._n = len(values)
        if not values:
            self._mean = self._m2 = 0.0
            return
        self._mean = math.fsum(values) / len(values)
        self._m2 = math.fsum((v - self._mean) ** 2 for v in values)

    @property
    def count(self) -> int:
        """Non-null values in the window."""
        return self._n

    @property
    def mean(self) -> float | None:
        """Mean of the non-null values, None if there are none."""
        return self._mean if self._n else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1) of the non-null values; None below 2."""
        return math.sqrt(self._m2 / (self._n - 1)) if self._n >= 2 else None

    def z_score(self, value: float | None, min_std: float) -> float | None:
        """``(value - mean) / std``; None without a value or with std below ``min_std``."""
        std = self.std
        if value is None or std is None or std < min_std:
            return None
        return (value - self._mean) / std


class _CrowdSeries:
    """Per-minute crowd points."""

    def __init__(self, ticker: str, s: SentimentSettings) -> None:
        self.ticker = ticker
        self.min_std = s.min_std
        self.horizon = s.crowd_horizon
        self.ma = RollingWindow(s.crowd_ma_window)
        self.z = RollingWindow(s.crowd_z_window)
        self.z_ma = RollingWindow(s.crowd_z_ma_window)
        # Volumes are integers: their window sum is kept exactly.
        self.volumes: deque[int] = deque(maxlen=s.volume_ma_window)
        self.volume_sum = 0
        self.count = 0
        self.total = 0.0

    def point(self, start: int) -> CrowdSentiment:
        crowd = self.total / self.count if self.count else None
        self.ma.push(crowd)
        self.z.push(crowd)
        z = self.z.z_score(crowd, self.min_std)
        self.z_ma.push(z)
        volumes = self.volumes
        if len(volumes) == volumes.maxlen:
            self.volume_sum -= volumes[0]
        volumes.append(self.count)
        self.volume_sum += self.count
        buzz = self.count * len(volumes) / self.volume_sum if self.volume_sum else None
        point = CrowdSentiment(
            start, self.ticker, crowd, self.ma.mean, z, self.z_ma.mean, self.count, buzz
        )
        self.count, self.total = 0, 0.0
        return point


class _MarketSeries:
    """Per-second mp points over a trailing window of per-second sums."""

    def __init__(self, ticker: str, s: SentimentSettings) -> None:
        self.ticker = ticker
        self.min_std = s.min_std
        self.horizon = s.mp_horizon
        self.window_ms = s.mp_window * SECOND_MS
        self.ma = RollingWindow(s.mp_ma_window)
        self.z = RollingWindow(s.mp_z_window)
        self.z_ma = RollingWindow(s.mp_z_ma_window)
        # Seconds in the trailing window that had weighted messages: (start, sum ws, sum w).
        self.seconds: deque[tuple[int, float, float]] = deque()
        # The open second's accumulators.
        self.ws = 0.0
        self.w = 0.0
        self.n = 0

    def point(self, start: int) -> MarketSentiment:
        seconds = self.seconds
        if self.n:
            seconds.append((start, self.ws, self.w))
            self.ws, self.w, self.n = 0.0, 0.0, 0
        oldest = start - self.window_ms
        while seconds and seconds[0][0] <= oldest:
            seconds.popleft()
        # At most mp_window per-second sums: summed exactly, so removing a second never
        # leaves rounding residue (weights may span many orders of magnitude).
        mp = None
        if seconds:
            mp = math.fsum(s[1] for s in seconds) / math.fsum(s[2] for s in seconds)
        self.ma.push(mp)
        self.z.push(mp)
        z = self.z.z_score(mp, self.min_std)
        self.z_ma.push(z)
        return MarketSentiment(start, self.ticker, mp, self.ma.mean, z, self.z_ma.mean)


class SentimentTracker:
    """The sentiment series of one ticker, fed message by message.

    Points are produced when their period closes: when a message of a later period
    arrives (:meth:`add`) or when time passes (:meth:`advance`). A message older than
    the open period counts toward the open period. A ticker quiet for longer than a
    series' horizon stops producing that series' points (they would all be empty and
    equal) until its next message.
    """

    def __init__(self, ticker: str, settings: SentimentSettings | None = None) -> None:
        self.ticker = ticker
        self.settings = s = settings or SentimentSettings()
        self._crowd = _CrowdSeries(ticker, s)
        self._mp = _MarketSeries(ticker, s)
        # Open period start and the last period that had a message, per series.
        self._crowd_open: int | None = None
        self._crowd_last = 0
        self._mp_open: int | None = None
        self._mp_last = 0

    def add(
        self, ts: int, user_id: str, sentiment: float, user_score: float
    ) -> list[SentimentData]:
        """Count one message; returns the points it closed, then the message's own event."""
        events = self.advance(ts)
        if self._crowd_open is None or self._mp_open is None:
            self._crowd_open = ts - ts % MINUTE_MS
            self._mp_open = ts - ts % SECOND_MS
        self._crowd_last = self._crowd_open
        self._mp_last = self._mp_open
        crowd = self._crowd
        crowd.count += 1
        crowd.total += sentiment
        if user_score > 0:
            mp = self._mp
            mp.ws += user_score * sentiment
            mp.w += user_score
            mp.n += 1
        events.append(UserSentiment(ts, self.ticker, user_id, sentiment, user_score))
        return events

    def closes_period(self, ts: int) -> bool:
        """True when :meth:`add` or :meth:`advance` at ``ts`` would close a period (or
        open the first): the rolling windows change, not only the open accumulators."""
        if self._crowd_open is None or self._mp_open is None:
            return True
        return ts - ts % SECOND_MS > self._mp_open or ts - ts % MINUTE_MS > self._crowd_open

    def checkpoint(self, ts: int) -> Callable[[], None]:
        """A function that puts the tracker back as it is now, before a message (or an
        :meth:`advance`) at ``ts``: O(1) unless that closes a period, then a copy of the
        windows' points (a few hundred references, about once a second)."""
        crowd, mp = self._crowd, self._mp
        saved = (
            crowd.count,
            crowd.total,
            mp.ws,
            mp.w,
            mp.n,
            self._crowd_open,
            self._crowd_last,
            self._mp_open,
            self._mp_last,
        )
        windows: list[Callable[[], None]] = []
        if self.closes_period(ts):
            for series in (crowd, mp):
                windows += [series.ma.checkpoint(), series.z.checkpoint(), series.z_ma.checkpoint()]
            volumes, volume_sum, seconds = (
                deque(crowd.volumes, crowd.volumes.maxlen),
                crowd.volume_sum,
                deque(mp.seconds),
            )

            def undo_windows() -> None:
                crowd.volumes, crowd.volume_sum, mp.seconds = volumes, volume_sum, seconds

            windows.append(undo_windows)

        def undo() -> None:
            (
                crowd.count,
                crowd.total,
                mp.ws,
                mp.w,
                mp.n,
                self._crowd_open,
                self._crowd_last,
                self._mp_open,
                self._mp_last,
            ) = saved
            for back in windows:
                back()

        return undo

    def advance(self, now: int) -> list[SentimentData]:
        """Close every period that ended by ``now``; returns their points in order of
        closing time."""
        if self._crowd_open is None or self._mp_open is None:
            return []
        crowd_points: list[CrowdSentiment] = []
        target = now - now % MINUTE_MS
        start = self._crowd_open
        while start < target:
            if (start - self._crowd_last) // MINUTE_MS >= self._crowd.horizon:
                start = target
                break
            crowd_points.append(self._crowd.point(start))
            start += MINUTE_MS
        self._crowd_open = start
        mp_points: list[MarketSentiment] = []
        target = now - now % SECOND_MS
        start = self._mp_open
        while start < target:
            if (start - self._mp_last) // SECOND_MS >= self._mp.horizon:
                start = target
                break
            mp_points.append(self._mp.point(start))
            start += SECOND_MS
        self._mp_open = start
        if not crowd_points:
            return list(mp_points)
        events: list[SentimentData] = []
        i = 0
        for cp in crowd_points:
            end = cp.ts + MINUTE_MS
            while i < len(mp_points) and mp_points[i].ts + SECOND_MS <= end:
                events.append(mp_points[i])
                i += 1
            events.append(cp)
        events.extend(mp_points[i:])
        return events

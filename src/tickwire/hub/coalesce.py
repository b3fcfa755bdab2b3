"""Adaptive write coalescing: how long the hub holds an iteration's writes.

Fan-out is bound by write syscalls: one write per connection per flush, whatever it
carries. When the flushes alone take a large share of the core, holding the next one a
little lets more frames (later ticks, other channels) ride on the same writes. The
window adapts to load: an idle or lightly loaded process flushes at the end of the
loop iteration as before (no added latency); a saturated one holds each flush for about
as long as the previous one took (so writing takes at most about half the core), never
longer than the budget (``max_write_delay``; 0: never hold).

Sans-I/O: the hub reports each flush (:meth:`WriteCoalescer.flushed`, its start and
duration on a monotonic clock) and asks :meth:`WriteCoalescer.hold` for the window of the
next one, so tests drive it with a clock of their own.
"""

from __future__ import annotations

#: Share of the wall time spent in flushes (smoothed) above which writes are held ...
HOLD_ABOVE = 0.5
#: ... and below which they are no longer held (hysteresis: holding lowers the share).
RELEASE_BELOW = 0.25
#: Weight of the newest flush in the smoothed share and cost.
SMOOTHING = 0.25


class WriteCoalescer:
    """Decides the hold window of the hub's next flush from the flushes before it."""

    __slots__ = ("budget", "cost", "holding", "last_start", "share")

    def __init__(self, budget: float) -> None:
        if budget < 0:
            raise ValueError(f"max_write_delay must be >= 0 seconds, got {budget!r}")
        self.budget = budget
        #: smoothed share of the time between flush starts spent flushing
        self.share = 0.0
        #: smoothed duration of a flush (seconds)
        self.cost = 0.0
        self.holding = False
        self.last_start: float | None = None

    def flushed(self, start: float, duration: float) -> None:
        """A flush started at ``start`` and took ``duration`` seconds."""
        last, self.last_start = self.last_start, start
        self.cost += SMOOTHING * (duration - self.cost)
        if last is None:
            return
        interval = start - last
        share = 1.0 if interval <= duration else duration / interval
        if share < RELEASE_BELOW / 2:  # a quiet spell: forget the load before it
            self.share = share
        else:
            self.share += SMOOTHING * (share - self.share)
        if self.holding:
            self.holding = self.share >= RELEASE_BELOW
        else:
            self.holding = self.share > HOLD_ABOVE

    def hold(self) -> float:
        """Seconds to hold the next flush: 0 unless the process is saturated with
        writes, then about one flush's duration, at most the budget."""
        if not self.holding:
            return 0.0
        return min(self.budget, self.cost)

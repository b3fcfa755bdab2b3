"""Latency histograms and the numbers a run reports."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Log-linear buckets over microseconds: values below 64 are exact; above, each power
# of two is split into 32 buckets (at most ~3% error). 1344 buckets reach ~70 minutes.
_EXACT = 64
_SUB_BITS = 5
_SUB = 1 << _SUB_BITS
_SHIFTS = 37
SIZE = _EXACT + _SHIFTS * _SUB
_MAX = (1 << (_SHIFTS + _SUB_BITS + 1)) - 1


def bucket(us: int) -> int:
    """The bucket index of a latency of ``us`` microseconds (negatives count as 0)."""
    if us < _EXACT:
        return us if us > 0 else 0
    if us > _MAX:
        us = _MAX
    shift = us.bit_length() - _SUB_BITS - 1
    return _EXACT + (shift - 1) * _SUB + ((us >> shift) - _SUB)


def bucket_value(index: int) -> float:
    """A representative latency (µs) for bucket ``index``: its midpoint."""
    if index < _EXACT:
        return float(index)
    shift = (index - _EXACT) // _SUB + 1
    low = ((index - _EXACT) % _SUB + _SUB) << shift
    return low + ((1 << shift) - 1) / 2


class Histogram:
    """Counts of latency samples; cheap to add to, merge and send between processes."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * SIZE
        self.total = 0

    def add(self, us: int) -> None:
        """Record one sample of ``us`` microseconds."""
        self.counts[bucket(us)] += 1
        self.total += 1

    def merge(self, sparse: Mapping[int, int]) -> None:
        """Add counts sent by :meth:`sparse` (JSON object keys may be strings)."""
        counts = self.counts
        for index, n in sparse.items():
            counts[int(index)] += n
            self.total += n

    def sparse(self) -> dict[int, int]:
        """The non-zero buckets, small enough to pass between processes."""
        return {i: n for i, n in enumerate(self.counts) if n}

    def clear(self) -> None:
        """Forget every sample."""
        self.counts = [0] * SIZE
        self.total = 0

    def percentile(self, p: float) -> float | None:
        """The ``p``-th percentile (0-100) in microseconds, or None without samples."""
        if not self.total:
            return None
        rank = max(1, int(self.total * p / 100.0 + 0.999999))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return bucket_value(index)
        return bucket_value(SIZE - 1)  # pragma: no cover - rank <= total

    def max(self) -> float | None:
        """The largest sample's bucket value, or None without samples."""
        for index in range(SIZE - 1, -1, -1):
            if self.counts[index]:
                return bucket_value(index)
        return None

    def summary(self) -> dict[str, float | int | None]:
        """Percentiles in milliseconds, as reported."""

        def ms(v: float | None) -> float | None:
            return None if v is None else round(v / 1000.0, 3)

        return {
            "samples": self.total,
            "p50_ms": ms(self.percentile(50)),
            "p90_ms": ms(self.percentile(90)),
            "p99_ms": ms(self.percentile(99)),
            "p999_ms": ms(self.percentile(99.9)),
            "max_ms": ms(self.max()),
        }


def merged(parts: Iterable[Mapping[int, int]]) -> Histogram:
    """One histogram from several sparse ones."""
    h = Histogram()
    for part in parts:
        h.merge(part)
    return h

"""The one token bucket: connections' request limits and per-address credential limits."""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` held; time is passed in (seconds).

    Pure arithmetic, so it serves any clock (``time.monotonic`` for connections, an
    injectable clock for the per-address limiter) and is tested without sleeping.
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("token bucket: rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def level(self, now: float) -> float:
        """Tokens available at ``now``."""
        return min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        tokens = self.level(now)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False

    def give_back(self, now: float) -> None:
        """Return one token (the attempt it paid for did not count)."""
        self.tokens = min(self.burst, self.level(now) + 1.0)
        self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until the next token."""
        return max(0.0, (1.0 - self.level(now)) / self.rate)

"""Per-client-address rate limiting of credential checks (``POST /jwt``, ``POST /login``).

A token bucket per address. Each attempt takes a token before it is checked, so concurrent
guesses cannot all slip through; a successful attempt gives its token back, so only failures
count. The number of addresses tracked is bounded (least recently seen dropped first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from tickwire.auth import codes
from tickwire.auth.principal import AuthError
from tickwire.model.ratelimit import TokenBucket


class RateLimited(AuthError):
    """Too many attempts; ``retry_after`` is in seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            codes.RATE_LIMITED, f"too many attempts from this address; retry in {retry_after:.0f} s"
        )
        self.retry_after = retry_after


class SharedLimit(Protocol):
    """The same buckets kept where every node sees them (see
    :class:`tickwire.auth.redis_state.RedisRateLimit`), so the limit holds per cluster,
    not per node."""

    async def acquire(self, address: str) -> None:
        """Take one attempt for ``address``, or raise :class:`RateLimited`."""

    async def refund(self, address: str) -> None:
        """Give back the attempt taken by :meth:`acquire`."""


class RateLimiter:
    """``burst`` attempts at once, refilled at ``per_minute``, per address."""

    def __init__(
        self,
        burst: int,
        per_minute: float,
        *,
        clock: Callable[[], float],
        max_addresses: int = 100_000,
    ) -> None:
        if burst < 1 or per_minute <= 0:
            raise ValueError("rate limit: burst must be >= 1 and per_minute > 0")
        self.burst = burst
        self.rate = per_minute / 60.0
        self._clock = clock
        self._max = max_addresses
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        #: with a Redis engine, the cluster's buckets (consulted after this node's own)
        self.shared: SharedLimit | None = None

    async def take(self, address: str) -> None:
        """:meth:`acquire` here, then in the cluster's shared buckets (if any)."""
        self.acquire(address)
        if self.shared is not None:
            await self.shared.acquire(address)

    async def give_back(self, address: str) -> None:
        """:meth:`refund` here and in the cluster's shared buckets (if any)."""
        self.refund(address)
        if self.shared is not None:
            await self.shared.refund(address)

    def acquire(self, address: str) -> None:
        """Take one attempt for ``address``, or raise :class:`RateLimited`."""
        now = self._clock()
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket(self.rate, self.burst, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
        if not bucket.take(now):
            raise RateLimited(bucket.wait(now))

    def refund(self, address: str) -> None:
        """Give back the attempt taken by :meth:`acquire` (it succeeded)."""
        bucket = self._buckets.get(address)
        if bucket is not None:
            bucket.give_back(self._clock())

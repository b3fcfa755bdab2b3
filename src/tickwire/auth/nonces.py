"""A bounded memory of used nonces, each kept until the credential that carried it expires.

Bounded twice: in total and per scope (a key or a user), so one client cannot push out
everyone else's nonces. When a scope or the whole cache is full of still-valid nonces, a new
one is refused (``nonce_cache_full``) rather than an old one forgotten: forgetting would let
a captured credential be replayed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Protocol

from tickwire.auth import codes
from tickwire.auth.principal import AuthError


class NonceCache:
    """Remembers ``(scope, nonce)`` pairs until their expiry (UNIX seconds)."""

    def __init__(self, max_entries: int, max_per_scope: int, *, clock: Callable[[], float]) -> None:
        if max_entries < 1 or max_per_scope < 1:
            raise ValueError("nonce cache sizes must be at least 1")
        self.max_entries = max_entries
        self.max_per_scope = max_per_scope
        self._clock = clock
        self._expiry: dict[tuple[str, str], float] = {}
        self._per_scope: dict[str, int] = {}
        self._heap: list[tuple[float, str, str]] = []

    def __len__(self) -> int:
        self._purge(self._clock())
        return len(self._expiry)

    def _purge(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            exp, scope, nonce = heapq.heappop(heap)
            if self._expiry.get((scope, nonce)) == exp:
                del self._expiry[(scope, nonce)]
                left = self._per_scope[scope] - 1
                if left:
                    self._per_scope[scope] = left
                else:
                    del self._per_scope[scope]

    def use(self, scope: str, nonce: str, expires_at: float) -> None:
        """Record ``nonce`` as used in ``scope`` until ``expires_at``.

        Raises :class:`AuthError` ``nonce_reused`` if it was already used and has not expired,
        or ``nonce_cache_full`` if no room is left.
        """
        now = self._clock()
        self._purge(now)
        key = (scope, nonce)
        if key in self._expiry:
            raise AuthError(codes.NONCE_REUSED, "nonce: already used")
        if expires_at <= now:
            return  # nothing to remember: the credential is already dead
        if self._per_scope.get(scope, 0) >= self.max_per_scope:
            raise AuthError(
                codes.NONCE_CACHE_FULL, "nonce: too many outstanding for this key, retry later"
            )
        if len(self._expiry) >= self.max_entries:
            raise AuthError(codes.NONCE_CACHE_FULL, "nonce: server nonce cache full, retry later")
        self._expiry[key] = expires_at
        self._per_scope[scope] = self._per_scope.get(scope, 0) + 1
        heapq.heappush(self._heap, (expires_at, scope, nonce))


class SharedNonces(Protocol):
    """A record of used nonces that every node of a cluster consults (see
    :class:`tickwire.auth.redis_state.RedisNonces`): a nonce taken on one node is refused on
    every other one until the credential that carried it expires."""

    async def use(self, scope: str, nonce: str, expires_at: float, now: float) -> None:
        """Record ``nonce`` in ``scope`` until ``expires_at`` (UNIX seconds), or raise
        :class:`AuthError` ``nonce_reused`` when any node recorded it first."""

    async def close(self) -> None:
        """Release the connections."""

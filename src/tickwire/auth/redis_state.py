"""Auth state shared by every node through Redis: the nonces of client-signed credentials.

With a Redis engine each used nonce (of a Coinbase-style client-signed JWT, or of an
InstaMrkt ``?id=&n=&h=`` digest) is also written to Redis with ``SET key 1 NX PX <ms>``:
the first node to write it wins, every other node finds it there and refuses the replay
with ``nonce_reused``, and Redis forgets it when the credential would have expired anyway.
The key is ``<prefix>:nonce:<sha256(scope NUL nonce)>`` (a fixed size whatever the
client sent). The node's own bounded :class:`~tickwire.auth.nonces.NonceCache` is checked
first, so its per-key and total bounds also bound what one node writes to Redis.

Fail closed: when Redis cannot be reached the credential is refused (``unavailable``), since
accepting it would let it be replayed on a node that cannot check.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from tickwire.auth import codes
from tickwire.auth.principal import AuthError


class RedisNonces:
    """Nonces recorded in one Redis (``client`` is a ``redis.asyncio.Redis``)."""

    def __init__(self, client: Any, prefix: str = "tickwire") -> None:
        self._client = client
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = "tickwire") -> RedisNonces:
        """Over a ``redis://``, ``rediss://`` or ``unix://`` URL (without ``prefix``)."""
        import redis.asyncio as aioredis

        return cls(aioredis.Redis.from_url(url), prefix)

    def key(self, scope: str, nonce: str) -> str:
        digest = hashlib.sha256(f"{scope}\0{nonce}".encode()).hexdigest()
        return f"{self.prefix}:nonce:{digest}"

    async def use(self, scope: str, nonce: str, expires_at: float, now: float) -> None:
        ttl_ms = math.ceil((expires_at - now) * 1000)
        if ttl_ms <= 0:
            return  # the credential is already dead: nothing to remember
        from redis.exceptions import RedisError

        try:
            fresh = await self._client.set(self.key(scope, nonce), b"1", nx=True, px=ttl_ms)
        except (RedisError, OSError) as exc:
            why = type(exc).__name__
            raise AuthError(
                codes.UNAVAILABLE, f"nonce: the shared nonce record is unreachable ({why})"
            ) from None
        if not fresh:
            raise AuthError(codes.NONCE_REUSED, "nonce: already used (on this or another node)")

    async def close(self) -> None:
        await self._client.aclose()

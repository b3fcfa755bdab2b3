"""Auth state shared by every node through Redis: the nonces of client-signed credentials
and the per-address rate limits of ``POST /jwt``, ``POST /login`` and the publish API.

With a Redis engine each used nonce (of a Coinbase-style client-signed JWT, or of an
InstaMrkt ``?id=&n=&h=`` digest) is also written to Redis with ``SET key 1 NX PX <ms>``:
the first node to write it wins, every other node finds it there and refuses the replay
with ``nonce_reused``, and Redis forgets it when the credential would have expired anyway.
The key is ``<prefix>:nonce:<sha256(scope NUL nonce)>`` (a fixed size whatever the
client sent). The node's own bounded :class:`~tickwire.auth.nonces.NonceCache` is checked
first, so its per-key and total bounds also bound what one node writes to Redis.

Rate limits: the same token bucket as :class:`~tickwire.auth.ratelimit.RateLimiter`,
kept in a Redis hash ``<prefix>:rl:<sha256(address)>`` and updated by one Lua script on
Redis's clock, so N nodes cannot multiply the attempts an address gets. It fails open (the
node's own bucket still applies) when Redis is unreachable: a rate limit is a brake, not a
credential check.

Fail closed: when Redis cannot be reached the credential is refused (``unavailable``), since
accepting it would let it be replayed on a node that cannot check.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any

from tickwire.auth import codes
from tickwire.auth.principal import AuthError
from tickwire.auth.ratelimit import RateLimited

log = logging.getLogger("tickwire.auth")

#: KEYS[1] the bucket; ARGV rate (tokens/s), burst, "take" or "give". Returns
#: {1, "0"} when taken or given back, {0, "<seconds until the next token>"} when refused.
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'k', 's')
local tokens = tonumber(v[1]) or burst
local stamp = tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local ok = 1
if ARGV[3] == 'take' then
  if tokens >= 1 then tokens = tokens - 1 else ok = 0 end
else
  tokens = math.min(burst, tokens + 1)
end
redis.call('HSET', KEYS[1], 'k', tostring(tokens), 's', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
if ok == 1 then return {1, '0'} end
return {0, tostring((1 - tokens) / rate)}
"""


class RedisNonces:
    """Nonces recorded in one Redis (``client`` is a ``redis.asyncio.Redis``)."""

    def __init__(self, client: Any, prefix: str = "tickwire") -> None:
        self.client = client
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
            fresh = await self.client.set(self.key(scope, nonce), b"1", nx=True, px=ttl_ms)
        except (RedisError, OSError) as exc:
            why = type(exc).__name__
            raise AuthError(
                codes.UNAVAILABLE, f"nonce: the shared nonce record is unreachable ({why})"
            ) from None
        if not fresh:
            raise AuthError(codes.NONCE_REUSED, "nonce: already used (on this or another node)")

    async def close(self) -> None:
        await self.client.aclose()


class RedisRateLimit:
    """Per-address token buckets (``burst``, refilled at ``per_minute``) in one Redis."""

    def __init__(self, client: Any, burst: int, per_minute: float, prefix: str = "tickwire"):
        self._client = client
        self.burst = burst
        self.rate = per_minute / 60.0
        self.prefix = prefix
        self._script = client.register_script(_BUCKET)

    def key(self, address: str) -> str:
        return f"{self.prefix}:rl:{hashlib.sha256(address.encode()).hexdigest()[:32]}"

    async def _run(self, address: str, op: str) -> tuple[bool, float]:
        from redis.exceptions import RedisError

        try:
            ok, wait = await self._script(
                keys=[self.key(address)], args=[self.rate, self.burst, op]
            )
        except (RedisError, OSError) as exc:
            log.warning(
                "auth: shared rate limit unreachable (%s): node limit only", type(exc).__name__
            )
            return True, 0.0
        return bool(ok), float(wait)

    async def acquire(self, address: str) -> None:
        ok, wait = await self._run(address, "take")
        if not ok:
            raise RateLimited(wait)

    async def refund(self, address: str) -> None:
        await self._run(address, "give")

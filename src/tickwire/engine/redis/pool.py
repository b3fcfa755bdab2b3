"""Connections to Redis: the command pool (plain or through Sentinel), which error replies
mean "not now" rather than "wrong", and the reconnect backoff."""

from __future__ import annotations

import random
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, ConnectionPool, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, OutOfMemoryError, ReadOnlyError, TryAgainError

from tickwire.engine.redis.url import RedisTarget

__all__ = ["Backoff", "connect_node", "make_cluster", "make_pool", "server_refused"]

#: Redis error replies that mean "this server cannot take the write now" (HTTP 503), not
#: "the request was wrong" (redis-py strips the code from some of them).
_UNAVAILABLE_ERRORS = (OutOfMemoryError, ReadOnlyError, ClusterDownError, TryAgainError)
_UNAVAILABLE_REPLIES = ("OOM", "READONLY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def server_refused(exc: BaseException) -> bool:
    """True for an error reply that means "not now" (out of memory, read-only replica…)."""
    text = str(exc)
    return (
        isinstance(exc, _UNAVAILABLE_ERRORS)
        or text.startswith(_UNAVAILABLE_REPLIES)
        or "maxmemory" in text
        or "READONLY" in text
    )


def make_pool(
    target: RedisTarget, *, node_id: str, timeout: float, max_connections: int
) -> ConnectionPool:
    """The pool of command connections for ``target`` (also the factory of the pub/sub
    connection). No silent retries: a publish is not idempotent, the caller decides."""
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "client_name": f"tickwire:{node_id}",
    }
    if target.master is None:
        return aioredis.BlockingConnectionPool.from_url(
            target.url, max_connections=max_connections, timeout=timeout, **common
        )
    options = dict(target.options)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    if "sentinel_password" in options:
        sentinel_kwargs["password"] = options.pop("sentinel_password")
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=sentinel_kwargs
    )
    return SentinelConnectionPool(  # type: ignore[no-untyped-call]
        target.master, sentinel, max_connections=max_connections, **common, **options
    )


def _common(node_id: str, timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "client_name": f"tickwire:{node_id}",
    }


def make_cluster(target: RedisTarget, *, node_id: str, timeout: float) -> RedisCluster:
    """redis-py's cluster client for a ``redis+cluster://`` target: commands go to the
    master of their keys' slot; MOVED/ASK are followed, nothing else is retried."""
    common = _common(node_id, timeout)
    common.pop("retry")
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.cluster],
        retry=Retry(NoBackoff(), 0),
        **common,
        **target.options,
    )


def connect_node(
    target: RedisTarget, host: str, port: int, *, node_id: str, timeout: float
) -> AbstractConnection:
    """An unconnected connection to one node of the cluster (for sharded pub/sub)."""
    options = dict(target.options)
    if options.pop("ssl", False):
        return SSLConnection(host=host, port=port, **_common(node_id, timeout), **options)
    return Connection(host=host, port=port, **_common(node_id, timeout), **options)


class Backoff:
    """Exponential backoff with full jitter, capped."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return random.uniform(delay / 2, delay)

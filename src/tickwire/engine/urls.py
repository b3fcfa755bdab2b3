"""Engine URLs without the Redis client: which value names a Redis engine, and how to show
one without its password. The server reads these for every engine, ``memory`` included, so
they must not import ``redis`` (an optional dependency: ``tickwire[redis]``)."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

#: URL schemes :class:`tickwire.engine.redis.RedisEngine` accepts.
SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "sentinel",
    "redis+cluster",
    "rediss+cluster",
)


def is_engine_url(value: str) -> bool:
    """True when ``value`` names a Redis engine (as opposed to ``memory``)."""
    return urlsplit(value).scheme.lower() in SCHEMES


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log and to show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = quote(unquote(parts.username or ""), safe="")
    netloc = f"{user}:***@{parts.netloc.rsplit('@', 1)[1]}"
    return parts._replace(netloc=netloc).geturl()

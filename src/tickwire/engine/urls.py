"""Engine URLs without the Redis client: which value names a Redis engine, and how to show
one without its password. The server reads these for every engine, ``memory`` included, so
they must not import ``redis`` (an optional dependency: ``tickwire[redis]``).

An engine value may name several Redis URLs separated by whitespace (a sharded engine,
docs/scaling.md): a URL holds no unencoded whitespace, and the comma stays free for the
host lists of Sentinel and Cluster URLs."""

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


def engine_urls(value: str) -> list[str]:
    """The URLs of an engine value: one, or several separated by whitespace (shards)."""
    return value.split()


def is_engine_url(value: str) -> bool:
    """True when ``value`` names a Redis engine (as opposed to ``memory``): one Redis URL,
    or several separated by whitespace (a sharded engine)."""
    urls = engine_urls(value)
    return bool(urls) and all(urlsplit(u).scheme.lower() in SCHEMES for u in urls)


def redact(url: str) -> str:
    """``url`` (or several, separated by whitespace) with any password replaced by
    ``***`` (safe to log and to show)."""
    urls = engine_urls(url)
    if len(urls) > 1:
        return " ".join(_redact_one(u) for u in urls)
    return _redact_one(url)


def _redact_one(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = quote(unquote(parts.username or ""), safe="")
    netloc = f"{user}:***@{parts.netloc.rsplit('@', 1)[1]}"
    return parts._replace(netloc=netloc).geturl()

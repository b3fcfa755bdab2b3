"""Engine URL parsing: where Redis is and how to reach it (see docs/scaling.md)::

redis://[[user]:password@]host[:port][/db][?prefix=tickwire]
rediss://…                                    (TLS; ?ssl_cert_reqs=none etc.)
unix:///path/to/redis.sock[?db=0]
redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/master[/db]
sentinel://…                                  (same)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qs, parse_qsl, unquote, urlencode, urlsplit

from tickwire.engine.urls import SCHEMES, redact

__all__ = ["RedisTarget", "parse_engine_url"]


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed engine URL: where Redis is and how to reach it."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: the ``?prefix=`` of the URL (taken out of ``url``), if any
    prefix: str | None = None
    #: Redis Cluster startup nodes (``redis+cluster://``); empty otherwise
    cluster: tuple[tuple[str, int], ...] = ()


#: tickwire's own URL options, taken out before redis-py sees the URL: ``prefix``, and
#: ``shard`` (a shard's name, read by :mod:`~tickwire.engine.redis.shards`; one URL alone
#: is the plain engine, which ignores it)
OWN_OPTIONS = ("prefix", "shard")


def _take_prefix(url: str) -> tuple[str, str | None]:
    """Split tickwire's own options off the URL's query (redis-py would reject them);
    returns the URL without them and the ``prefix``, if any."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(k in OWN_OPTIONS for k, _ in query):
        return url, None
    prefixes = [v for k, v in query if k == "prefix"]
    rest = urlencode([(k, v) for k, v in query if k not in OWN_OPTIONS])
    return parts._replace(query=rest).geturl(), prefixes[-1] if prefixes else None


def parse_engine_url(url: str) -> RedisTarget:
    """Parse a ``redis://``, ``rediss://`` or ``redis+sentinel://`` URL.

    Sentinel form: ``redis+sentinel://[[user]:password@]h1[:26379][,h2[:p2]…]/<master>[/db]``
    (``rediss+sentinel://`` for TLS to the master; ``sentinel://`` is an alias). The
    password is the master's; ``?sentinel_password=…`` authenticates to the sentinels.
    Every form takes ``?prefix=…``: the namespace of tickwire's keys (default ``tickwire``).
    Raises :class:`ValueError` naming what is wrong.
    """
    url, prefix = _take_prefix(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"engine URL scheme must be one of {', '.join(SCHEMES)}; got {scheme or 'none'!r}"
        )
    if scheme in ("redis", "rediss", "unix"):
        if scheme != "unix" and not parts.hostname:
            raise ValueError(f"engine URL {redact(url)!r} has no host")
        if scheme == "unix" and not parts.path:
            raise ValueError(f"engine URL {redact(url)!r} has no socket path")
        return RedisTarget(url, prefix=prefix)
    if scheme.endswith("+cluster"):
        return _parse_cluster(url, parts, prefix)
    hosts = parts.netloc.rsplit("@", 1)[-1]
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        host = host or item
        try:
            sentinels.append((host.strip("[]"), int(port) if port else 26379))
        except ValueError:
            raise ValueError(f"sentinel address {item!r} has a bad port") from None
    if not sentinels:
        raise ValueError(f"sentinel URL {redact(url)!r} names no sentinel host")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path:
        raise ValueError(f"sentinel URL {redact(url)!r} has no master name (…/<master>)")
    options: dict[str, Any] = {}
    if len(path) > 1:
        try:
            options["db"] = int(path[1])
        except ValueError:
            raise ValueError(f"sentinel URL database {path[1]!r} is not a number") from None
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items() if v}
    if "sentinel_password" in query:
        options["sentinel_password"] = query.pop("sentinel_password")
    if scheme.startswith("rediss"):
        options["ssl"] = True
        if "ssl_cert_reqs" in query:
            options["ssl_cert_reqs"] = query.pop("ssl_cert_reqs")
        if "ssl_ca_certs" in query:
            options["ssl_ca_certs"] = query.pop("ssl_ca_certs")
    if query:
        raise ValueError(f"sentinel URL option(s) not supported: {', '.join(sorted(query))}")
    return RedisTarget(url, tuple(sentinels), path[0], options, prefix)


def _hosts(netloc: str, default_port: int, what: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for item in netloc.rsplit("@", 1)[-1].split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        host = host or item
        try:
            found.append((host.strip("[]"), int(port) if port else default_port))
        except ValueError:
            raise ValueError(f"{what} address {item!r} has a bad port") from None
    return found


def _parse_cluster(url: str, parts: SplitResult, prefix: str | None) -> RedisTarget:
    """``redis+cluster://[[user]:password@]h1[:6379][,h2[:p2]…]``: startup nodes of a
    Redis Cluster (any reachable one is enough; the client learns the rest)."""
    nodes = _hosts(parts.netloc, 6379, "cluster node")
    if not nodes:
        raise ValueError(f"cluster URL {redact(url)!r} names no node")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"cluster URL {redact(url)!r}: a Redis Cluster has only database 0")
    options: dict[str, Any] = {}
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items() if v}
    if parts.scheme.lower().startswith("rediss"):
        options["ssl"] = True
        for name in ("ssl_cert_reqs", "ssl_ca_certs"):
            if name in query:
                options[name] = query.pop(name)
    if query:
        raise ValueError(f"cluster URL option(s) not supported: {', '.join(sorted(query))}")
    return RedisTarget(url, options=options, prefix=prefix, cluster=tuple(nodes))

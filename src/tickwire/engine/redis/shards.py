"""Sharded Redis: several independent Redis servers (each plain, TLS, unix or Sentinel),
every channel kept whole on one of them (docs/scaling.md, "Sharded Redis").

**Placement.** A shard's *name* is its URL's ``?shard=<name>`` or, without one, where it
is: ``<host>:<port>/<db>`` (``unix:<path>/<db>``, ``sentinel:<master>/<db>``) — no
scheme, user, password or options, so turning on TLS or changing a password moves
nothing. A channel's *placement key* is its market or symbol (``trades:BTC-USD``,
``book:BTC-USD``, ``candles:BTC-USD:1m`` … all place by ``BTC-USD``), ``user:<uid>`` for
a user's private streams, and the whole name otherwise (``scoped:…``, names
:func:`~tickwire.model.channels.parse_channel` refuses). The channel lives on the shard
with the highest score ``BLAKE2b-64(name + "\\0" + key)`` (big-endian; rendezvous
hashing), so placement depends only on the set of names — not on their order, the node
or the process — and adding a shard moves exactly the channels whose new score is the
highest: about 1/(n+1) of them, every one *to* the new shard.

**A moved channel** finds no meta on its new shard: it starts a new epoch there, so a
client resuming with the old epoch gets ``recovered: false`` and a fresh snapshot. Each
shard records the set of shard names it was last started with (``<prefix>:shards``; a
plain one-Redis engine records an empty set). A node whose set differs deletes, on each
shard, the keys of the channels that no longer place there — and every channel key of a
shard that another shard of the set last served without — so that a channel that comes
back to a shard cannot resume the stale epoch it left there.

**publish_many** whose items all place on one shard (one market's trade: trades, ticker,
candles, book) is that shard's all-or-nothing transaction. One that spans shards
(``ticker_batch`` of several markets) is checked on every shard it touches first (the
check of :data:`~tickwire.engine.redis.scripts.CHECK_ITEMS`, writing nothing: a refused
item or an unreachable shard publishes none of it), then each shard's part is published
as that shard's own transaction, concurrently. If a shard fails between its check and
its publish, the other shards' parts stay published and the error says which were.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from redis.exceptions import RedisError

from tickwire.engine.base import (
    Engine,
    EngineError,
    EngineHandler,
    EngineStats,
    HistoryResult,
    HistorySettings,
)
from tickwire.engine.redis.engine import RedisEngine
from tickwire.engine.redis.url import parse_engine_url
from tickwire.engine.urls import redact
from tickwire.model.channels import ChannelError, parse_channel
from tickwire.model.publication import Position, Publication, Snapshot, now_ms

__all__ = [
    "ShardSpec",
    "ShardedRedisEngine",
    "home_shard",
    "parse_shards",
    "place",
    "placement_key",
]

log = logging.getLogger("tickwire.engine.redis")

#: The URL option naming a shard (taken out before the URL reaches redis-py).
SHARD_OPTION = "shard"
#: The key (under the prefix) where each shard records the shard names it last served.
RECORD = "shards"
#: Placements remembered per engine (a bounded cache: hashing is cheap, not free).
PLACEMENT_CACHE = 65_536


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """One shard: its placement name and the URL its :class:`RedisEngine` connects to."""

    name: str
    url: str


def _take_shard(url: str) -> tuple[str, str | None]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [v for k, v in query if k == SHARD_OPTION]
    if not names:
        return url, None
    rest = urlencode([(k, v) for k, v in query if k != SHARD_OPTION])
    return parts._replace(query=rest).geturl(), names[-1]


def _location(url: str) -> str:
    """Where ``url`` points, without scheme, credentials or options (a shard's default
    name). Raises ValueError for a URL that cannot be a shard."""
    target = parse_engine_url(url)
    if target.cluster:
        raise ValueError(
            f"engine URL {redact(url)!r}: a Redis Cluster cannot be one shard of several "
            "(it shards by itself: give its one redis+cluster:// URL)"
        )
    if target.sentinels:
        return f"sentinel:{target.master}/{target.options.get('db', 0)}"
    parts = urlsplit(target.url)
    query = dict(parse_qsl(parts.query))
    if parts.scheme.lower() == "unix":
        return f"unix:{unquote(parts.path)}/{query.get('db', '0')}"
    db = parts.path.strip("/") or query.get("db", "0")
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port or 6379}/{db}"


def parse_shards(urls: Iterable[str]) -> list[ShardSpec]:
    """The shards named by ``urls`` (each a Redis engine URL, optionally with
    ``?shard=<name>``), sorted by name. Raises ValueError naming what is wrong: no URL, a
    Redis Cluster URL, a bad URL, two shards of one name, shards of different prefixes."""
    specs: list[ShardSpec] = []
    prefixes: set[str | None] = set()
    for raw in urls:
        url, name = _take_shard(raw)
        location = _location(url)  # validates the URL
        if name is not None and not name.strip():
            raise ValueError(f"engine URL {redact(raw)!r}: ?shard= names no shard")
        specs.append(ShardSpec(name.strip() if name is not None else location, url))
        prefixes.add(parse_engine_url(url).prefix)
    if not specs:
        raise ValueError("a sharded engine needs at least one Redis URL")
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.name in seen:
            raise ValueError(
                f"engine URLs {redact(seen[spec.name])!r} and {redact(spec.url)!r} are the "
                f"same shard {spec.name!r}: give each a distinct ?shard=<name>"
            )
        seen[spec.name] = spec.url
    if len(prefixes) > 1:
        shown = ", ".join(sorted(repr(p or "tickwire") for p in prefixes))
        raise ValueError(f"every shard URL must have the same ?prefix=; got {shown}")
    return sorted(specs, key=lambda s: s.name)


def placement_key(channel: str) -> str:
    """What places ``channel``: its market or symbol, ``user:<uid>`` for private
    streams, else the whole name (see the module's docs)."""
    try:
        parsed = parse_channel(channel)
    except ChannelError:
        return channel
    if parsed.user_id is not None:
        return f"user:{parsed.user_id}"
    if parsed.kind == "scoped":
        return channel
    return parsed.symbol


def _score(name: str, key: str) -> int:
    digest = hashlib.blake2b(f"{name}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def place(key: str, names: Iterable[str]) -> str:
    """The name among ``names`` with the highest rendezvous score for ``key`` (ties, of
    chance 2^-64, go to the greater name)."""
    return max(names, key=lambda name: (_score(name, key), name))


def home_shard(urls: Iterable[str]) -> str:
    """The URL (``?shard=`` taken out) of the shard that holds node-wide keys (the auth
    layer's shared nonces and rate limits): placed like a channel, by the key ``auth``."""
    specs = {s.name: s.url for s in parse_shards(urls)}
    return specs[place("auth", specs)]


class ShardedRedisEngine(Engine):
    """Channels spread over several Redis servers, each an ordinary :class:`RedisEngine`
    (its own pool, publish batcher and pub/sub connection); every call about a channel
    goes to the channel's shard. ``options`` are given to every shard's engine."""

    name = "redis"

    def __init__(
        self,
        urls: Iterable[str],
        settings: HistorySettings | None = None,
        *,
        prefix: str | None = None,
        **options: Any,
    ) -> None:
        specs = parse_shards(urls)
        self.settings = settings or HistorySettings()
        self.stats = EngineStats()
        #: shard name -> its engine, in name order
        self.shards: dict[str, RedisEngine] = {}
        for spec in specs:
            shard = RedisEngine(spec.url, self.settings, prefix=prefix, **options)
            shard.stats = self.stats  # one count for the node, whichever shard took it
            shard.solo = False  # the records of the shard set are this engine's
            self.shards[spec.name] = shard
        self.names: tuple[str, ...] = tuple(self.shards)
        self.prefix = next(iter(self.shards.values())).prefix
        self._where = ", ".join(redact(s.url) for s in specs)
        self._place = functools.lru_cache(maxsize=PLACEMENT_CACHE)(self._compute_place)
        #: keys deleted at start because their channel no longer belongs to that shard
        self.forgotten = 0

    def _compute_place(self, channel: str) -> str:
        return place(placement_key(channel), self.names)

    def shard_name(self, channel: str) -> str:
        """The name of the shard ``channel`` lives on."""
        return self._place(channel)

    def shard_for(self, channel: str) -> RedisEngine:
        """The engine of the shard ``channel`` lives on."""
        return self.shards[self._place(channel)]

    def _group(self, channels: Iterable[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for channel in channels:
            groups.setdefault(self._place(channel), []).append(channel)
        return groups

    # -- connections ----------------------------------------------------------------------

    @property
    def reconnects(self) -> int:
        """Pub/sub reconnects over every shard (each followed by a resync)."""
        return sum(s.reconnects for s in self.shards.values())

    @property
    def malformed(self) -> int:
        return sum(s.malformed for s in self.shards.values())

    @property
    def subscribed(self) -> frozenset[str]:
        """Channels this node is subscribed to, over every shard."""
        return frozenset().union(*(s.subscribed for s in self.shards.values()))

    def key(self, channel: str, suffix: str) -> str:
        return self.shard_for(channel).key(channel, suffix)

    async def start(self, handler: EngineHandler) -> None:
        """Start every shard (each its own pub/sub loop delivering to ``handler``; a
        reconnect of one calls ``handler.on_resync()``, which checks every channel), then
        forget what a shard holds that may be stale (:meth:`_forget_moved`). Any shard
        failing fails the start."""
        shards = list(self.shards.items())
        results = await asyncio.gather(
            *(self._record(shard) for _, shard in shards), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        records = {
            name: None if isinstance(r, BaseException) else r
            for (name, _), r in zip(shards, results, strict=True)
        }
        if not failed:
            results = await asyncio.gather(
                *(s.start(handler) for _, s in shards), return_exceptions=True
            )
            failed = [r for r in results if isinstance(r, BaseException)]
        if not failed:
            try:
                await asyncio.gather(
                    *(self._forget_moved(name, shard, records) for name, shard in shards)
                )
            except BaseException as exc:
                failed.append(exc)
        if failed:
            await self.close()
            raise failed[0]

    async def _record(self, shard: RedisEngine) -> tuple[str, ...] | None:
        """The shard names ``shard`` last served (``()``: it served alone, as the one
        Redis of a plain engine; None: never recorded)."""
        try:
            raw = await shard._redis.get(f"{shard.prefix}:{RECORD}")
        except (RedisError, OSError) as exc:
            raise shard._scripts.unavailable(exc, "start") from exc
        if raw is None:
            return None
        return tuple(bytes(raw).decode(errors="replace").split())

    async def _forget_moved(
        self, name: str, shard: RedisEngine, records: dict[str, tuple[str, ...] | None]
    ) -> None:
        """Delete what ``shard`` holds that may be stale, by the shard names each shard
        recorded at its last start:

        - another shard of the set last served without this one (or served alone): every
          channel of this shard was placed elsewhere meanwhile, so all its channel keys
          go;
        - else, this shard last served another set: the keys of the channels that no
          longer place on it go (they start a new epoch where they live now; left here,
          they would be resumed if the channel came back).

        Then the shard records the current set."""
        client = shard._redis
        current = " ".join(self.names)
        own = records.get(name)
        absent = any(
            rec is not None and name not in rec for other, rec in records.items() if other != name
        )
        if not absent and own == self.names:
            return
        head = f"{shard.prefix}{{"
        pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in head) + "*"
        stale: list[str] = []
        try:
            async for raw in client.scan_iter(match=pattern, count=1000):
                key = bytes(raw).decode(errors="replace")
                end = key.rfind("}:")
                if end <= len(head):
                    continue
                if absent or self._place(key[len(head) : end]) != name:
                    stale.append(key)
            for i in range(0, len(stale), 500):
                await client.unlink(*stale[i : i + 500])
            await client.set(f"{shard.prefix}:{RECORD}", current)
        except (RedisError, OSError) as exc:
            raise shard._scripts.unavailable(exc, "start") from exc
        if stale:
            self.forgotten += len(stale)
            log.warning(
                "sharded Redis engine: shard %s served %s before; deleted %d keys of "
                "channels that may be stale on it",
                name,
                "without this set" if absent else "another set of shards",
                len(stale),
            )

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.shards.values()), return_exceptions=True)

    # -- publishing -----------------------------------------------------------------------

    async def publish(
        self, channel: str, data: bytes, *, snapshot: bytes | None = None, ts: int | None = None
    ) -> Publication:
        return await self.shard_for(channel).publish(channel, data, snapshot=snapshot, ts=ts)

    async def publish_many(
        self, items: Sequence[tuple[str, bytes, bytes | None]], *, ts: int | None = None
    ) -> list[Publication]:
        """One shard's items: that shard's all-or-nothing ``publish_many``. Items on
        several shards: checked on each first (nothing is published if one is refused or
        a shard is unreachable), then each shard's part published as its own
        transaction (see the module's docs for a shard failing in between)."""
        if not items:
            return []
        groups: dict[str, list[int]] = {}
        for i, (channel, _, _) in enumerate(items):
            groups.setdefault(self._place(channel), []).append(i)
        if len(groups) == 1:
            return await self.shards[next(iter(groups))].publish_many(items, ts=ts)
        ts = now_ms() if ts is None else ts
        try:
            await asyncio.gather(
                *(
                    self.shards[name].check_publishable([items[i][0] for i in idx])
                    for name, idx in groups.items()
                )
            )
        except EngineError:
            self.stats.publish_errors += 1
            raise
        parts = list(groups.items())
        results = await asyncio.gather(
            *(
                self.shards[name].publish_many([items[i] for i in idx], ts=ts)
                for name, idx in parts
            ),
            return_exceptions=True,
        )
        out: list[Publication | None] = [None] * len(items)
        failures: list[tuple[str, BaseException]] = []
        published: list[str] = []
        for (name, idx), result in zip(parts, results, strict=True):
            if isinstance(result, BaseException):
                failures.append((name, result))
                continue
            for i, pub in zip(idx, result, strict=True):
                out[i] = pub
                published.append(pub.channel)
        if failures:
            name, first = failures[0]
            if not published:
                raise first
            raise EngineError(
                f"sharded Redis engine publish_many: the part on shard {name!r} failed "
                f"({first}); published nonetheless on the other shards: "
                f"{', '.join(published)}"
            ) from first
        return [pub for pub in out if pub is not None]

    # -- reading --------------------------------------------------------------------------

    async def history(
        self, channel: str, since: Position, *, limit: int | None = None
    ) -> HistoryResult:
        return await self.shard_for(channel).history(channel, since, limit=limit)

    async def position(self, channel: str) -> Position:
        return await self.shard_for(channel).position(channel)

    async def snapshot(self, channel: str) -> Snapshot | None:
        return await self.shard_for(channel).snapshot(channel)

    async def request_snapshot(self, channel: str) -> None:
        await self.shard_for(channel).request_snapshot(channel)

    def snapshot_wanted(self, channel: str) -> bool:
        return self.shard_for(channel).snapshot_wanted(channel)

    # -- node subscriptions ---------------------------------------------------------------

    async def subscribe(self, channels: Iterable[str]) -> None:
        """Subscribe on each channel's shard (concurrently); all or nothing: when one
        shard fails, what this call added on the others is unsubscribed again."""
        groups = self._group(channels)
        if len(groups) == 1:
            name, chans = next(iter(groups.items()))
            await self.shards[name].subscribe(chans)
            return
        added = {
            name: [c for c in chans if c not in self.shards[name].subscribed]
            for name, chans in groups.items()
        }
        results = await asyncio.gather(
            *(self.shards[name].subscribe(chans) for name, chans in groups.items()),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if not failed:
            return
        for name, result in zip(groups, results, strict=True):
            if not isinstance(result, BaseException) and added[name]:
                await self.shards[name].unsubscribe(added[name])
        raise failed[0]

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        groups = self._group(channels)
        await asyncio.gather(*(self.shards[n].unsubscribe(c) for n, c in groups.items()))

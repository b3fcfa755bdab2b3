"""The Redis engine: many gateway nodes share sequence numbers, history and snapshots.

Every publication is one Lua script run (see :mod:`tickwire.engine.redis_lua`): the
channel's epoch is created if missing, its seq incremented, the publication appended to
the channel's stream (entry id ``<seq>-0``, trimmed by size and age), the snapshot of a
state channel stored, TTLs refreshed and the publication PUBLISHed to the nodes — all or
nothing. History is read back with ``XRANGE``.

Each node holds one pub/sub connection and subscribes to a channel only while it has
local subscribers. When that connection breaks the node reconnects with backoff,
resubscribes, and then calls ``handler.on_resync()`` so the hub recovers whatever was
published meanwhile (from history, or with a reset and a snapshot).

URLs (see :func:`parse_engine_url` and docs/scaling.md)::

    redis://[[user]:password@]host[:port][/db][?prefix=tickwire]
    rediss://…                                    (TLS; ?ssl_cert_reqs=none etc.)
    unix:///path/to/redis.sock[?db=0]
    redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/master[/db]
    sentinel://…                                  (same)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tickwire.engine import redis_lua
from tickwire.engine.base import (
    Engine,
    EngineError,
    EngineHandler,
    EngineStats,
    EngineUnavailable,
    HistoryResult,
    HistorySettings,
)
from tickwire.engine.urls import SCHEMES, redact
from tickwire.model.publication import Position, Publication, Snapshot, now_ms

log = logging.getLogger(__name__)

#: Redis error replies that mean "this server cannot take the write now" (HTTP 503), not
#: "the request was wrong" (redis-py strips the code from some of them).
_UNAVAILABLE_ERRORS = (OutOfMemoryError, ReadOnlyError, ClusterDownError, TryAgainError)
_UNAVAILABLE_REPLIES = ("OOM", "READONLY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def _server_refused(exc: BaseException) -> bool:
    """True for an error reply that means "not now" (out of memory, read-only replica…)."""
    text = str(exc)
    return (
        isinstance(exc, _UNAVAILABLE_ERRORS)
        or text.startswith(_UNAVAILABLE_REPLIES)
        or "maxmemory" in text
        or "READONLY" in text
    )


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed engine URL: where Redis is and how to reach it."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: the ``?prefix=`` of the URL (taken out of ``url``), if any
    prefix: str | None = None


def _take_prefix(url: str) -> tuple[str, str | None]:
    """Split tickwire's own ``prefix`` option off the URL's query (redis-py would reject it)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [v for k, v in query if k == "prefix"]
    if not prefixes:
        return url, None
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return parts._replace(query=rest).geturl(), prefixes[-1]


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


#: One script call: its keys and its arguments.
_Call = tuple[list[str], list[Any]]


def _copy_error(exc: Exception) -> Exception:
    """A fresh exception of the same kind, for each of several waiters."""
    if isinstance(exc, EngineError):
        return type(exc)(str(exc))
    return exc


def _candidate_epoch() -> str:
    """8 random hex characters, the epoch a script creates if the channel has none. Sent
    with every call, used rarely: the PRNG (seeded from the OS) saves a syscall."""
    return f"{random.getrandbits(32):08x}"


class _Backoff:
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


class RedisEngine(Engine):
    """Sequences, history and snapshots in Redis; delivery to nodes over pub/sub.

    ``prefix`` namespaces every key and pub/sub channel (several deployments, or test
    runs, can share one Redis); it defaults to the URL's ``?prefix=`` or ``tickwire``.
    ``meta_ttl`` is how long a channel's epoch, seq and snapshot survive without
    publications (history lives ``settings.ttl``).
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        settings: HistorySettings | None = None,
        *,
        prefix: str | None = None,
        meta_ttl: float = 30 * 86400.0,
        timeout: float = 5.0,
        max_connections: int = 64,
        ping_interval: float = 5.0,
        backoff: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        self.target = parse_engine_url(url)
        prefix = prefix or self.target.prefix or "tickwire"
        if "{" in prefix or "}" in prefix:
            raise ValueError("Redis key prefix must not contain '{' or '}' (hash tags)")
        self.settings = settings or HistorySettings()
        self.stats = EngineStats()
        self.prefix = prefix
        self.meta_ttl = max(1, int(meta_ttl))
        self.timeout = timeout
        self.ping_interval = ping_interval
        self._backoff = _Backoff(*backoff)
        self._where = redact(url)
        self._pubsub_prefix = f"{prefix}:p:".encode()
        #: names this node's connections in ``CLIENT LIST`` (``tickwire:<node_id>``)
        self.node_id = secrets.token_hex(4)
        self._pool = self._make_pool(max_connections)
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._sha: dict[str, str] = {}
        self._batch: list[tuple[_Call, asyncio.Future[Any]]] = []
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._handler: EngineHandler | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # pub/sub state (one connection per node)
        self._conn: AbstractConnection | None = None
        self._connected = asyncio.Event()
        self._subscribed: set[str] = set()
        #: per pub/sub channel name, one entry per SUBSCRIBE sent and not yet confirmed
        self._confirm: dict[bytes, deque[asyncio.Future[None] | None]] = {}
        self._names: dict[bytes, str] = {}
        #: state channels whose publisher (in this process) is asked for a snapshot
        self._wanted: set[str] = set()
        #: for tests and metrics
        self.reconnects = 0
        self.malformed = 0

    # -- connections ----------------------------------------------------------------------

    def _make_pool(self, max_connections: int) -> ConnectionPool:
        common: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            # no silent retries: a publish is not idempotent, the caller decides
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
            "client_name": f"tickwire:{self.node_id}",
        }
        target = self.target
        if target.master is None:
            return aioredis.BlockingConnectionPool.from_url(
                target.url, max_connections=max_connections, timeout=self.timeout, **common
            )
        options = dict(target.options)
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
        }
        if "sentinel_password" in options:
            sentinel_kwargs["password"] = options.pop("sentinel_password")
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels), sentinel_kwargs=sentinel_kwargs
        )
        return SentinelConnectionPool(  # type: ignore[no-untyped-call]
            target.master, sentinel, max_connections=max_connections, **common, **options
        )

    def _unavailable(self, exc: BaseException, what: str) -> EngineUnavailable:
        return EngineUnavailable(f"Redis engine at {self._where} is unavailable ({what}): {exc}")

    def key(self, channel: str, suffix: str) -> str:
        """The Redis key of ``channel``'s meta hash (``m``) or history stream (``h``)."""
        return f"{self.prefix}{{{channel}}}:{suffix}"

    def pubsub_channel(self, channel: str) -> bytes:
        """The Redis pub/sub channel a publication on ``channel`` is sent to."""
        return self._pubsub_prefix + channel.encode()

    async def _eval(self, name: str, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        sha = self._sha.get(name)
        try:
            if sha is not None:
                try:
                    return await self._redis.evalsha(sha, len(keys), *keys, *args)
                except NoScriptError:
                    pass  # Redis restarted or its script cache was flushed: load again
            sha = await self._redis.script_load(script)
            self._sha[name] = sha
            return await self._redis.evalsha(sha, len(keys), *keys, *args)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise self._unavailable(exc, name) from exc
        except ResponseError as exc:
            raise self._error(exc, name) from exc

    async def start(self, handler: EngineHandler) -> None:
        """Check that Redis answers, open the pub/sub connection and start delivering."""
        self._handler = handler
        self._closing = False
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, "start") from exc
        self._task = asyncio.create_task(self._pubsub_loop(), name="tickwire-redis-pubsub")
        waiter = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait(
                {waiter, self._task}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if not self._connected.is_set():
            await self.close()
            raise EngineUnavailable(f"Redis engine at {self._where}: pub/sub did not connect")

    async def close(self) -> None:
        """Stop the pub/sub loop and close every connection."""
        self._closing = True
        # publications already requested finish (or fail) before the connections go
        while self._batch or self._batch_tasks:
            if self._batch:
                self._send_batch()
            await asyncio.gather(*self._batch_tasks, return_exceptions=True)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._handler = None
        await self._redis.aclose()
        await self._pool.disconnect()

    # -- publishing -----------------------------------------------------------------------

    def _publish_args(
        self, channel: str, data: bytes, snapshot: bytes | None, ts: int, now: int
    ) -> _Call:
        settings = self.settings
        keys = [self.key(channel, "m"), self.key(channel, "h")]
        ttl_ms = max(1, int(settings.ttl * 1000))
        args: list[Any] = [
            data,
            ts,
            now - ttl_ms,
            settings.size,
            ttl_ms,
            self.meta_ttl,
            _candidate_epoch(),
            self.pubsub_channel(channel),
            "0" if snapshot is None else "1",
            b"" if snapshot is None else snapshot,
        ]
        return keys, args

    async def publish(
        self, channel: str, data: bytes, *, snapshot: bytes | None = None, ts: int | None = None
    ) -> Publication:
        """Publish one item. Publications requested in the same event-loop iteration
        (concurrent publishers) travel to Redis together in one pipeline, in the order
        they were requested; each is its own atomic script run."""
        now = now_ms()
        ts = now if ts is None else ts
        call = self._publish_args(channel, data, snapshot, ts, now)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._batch.append((call, fut))
        if len(self._batch) == 1:
            asyncio.get_running_loop().call_soon(self._send_batch)
        try:
            epoch, seq, wanted = await fut
        except EngineError:
            self.stats.publish_errors += 1
            raise
        self.stats.count(channel)
        self._note_wanted(channel, snapshot is not None, wanted)
        return Publication(channel, int(seq), epoch.decode(), ts, msgspec.Raw(data))

    def _note_wanted(self, channel: str, stored: bool, wanted: int) -> None:
        if stored:
            self._wanted.discard(channel)
        elif wanted:
            self._wanted.add(channel)

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.ensure_future(self._run_batch(batch))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)

    async def _run_batch(self, batch: list[tuple[_Call, asyncio.Future[Any]]]) -> None:
        try:
            if len(batch) == 1:
                keys, args = batch[0][0]
                results: list[Any] = [await self._eval("publish", redis_lua.PUBLISH, keys, args)]
            else:
                results = await self._pipeline([call for call, _ in batch], transaction=False)
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    if isinstance(exc, Exception):
                        fut.set_exception(_copy_error(exc))
                    else:  # the loop is shutting down: say so, not "cancelled"
                        fut.set_exception(self._unavailable(exc, "publish interrupted"))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(self._error(result, "publish"))
            else:
                fut.set_result(result)

    async def _pipeline(self, calls: list[_Call], *, transaction: bool) -> list[Any]:
        """Run the publish script once per call in one round trip; returns each call's
        result or its error reply (a failure of the connection raises)."""
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            try:
                sha = self._sha.get("publish")
                if sha is None:
                    sha = self._sha["publish"] = await self._redis.script_load(redis_lua.PUBLISH)
                async with self._redis.pipeline(transaction=transaction) as pipe:
                    for i in todo:
                        keys, args = calls[i]
                        pipe.evalsha(sha, len(keys), *keys, *args)
                    replies = await pipe.execute(raise_on_error=False)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                raise self._unavailable(exc, "publish") from exc
            except ResponseError as exc:
                raise self._error(exc, "publish") from exc
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                results[i] = reply
                if isinstance(reply, NoScriptError):
                    missing.append(i)
            if not missing or attempt == 1:
                break
            # Redis restarted or its script cache was flushed: these did not run
            self._sha.pop("publish", None)
            if transaction and len(missing) != len(todo):
                raise EngineError("Redis engine: script cache flushed inside a transaction")
            todo = missing
        return results

    def _error(self, exc: BaseException, what: str) -> EngineError:
        if _server_refused(exc):
            return self._unavailable(exc, what)
        return EngineError(f"Redis engine {what} failed: {exc}")

    async def publish_many(
        self, items: Sequence[tuple[str, bytes, bytes | None]], *, ts: int | None = None
    ) -> list[Publication]:
        """Publish every item in one round trip, as one MULTI/EXEC transaction: nothing
        interleaves with the batch, and a lost connection leaves all of it applied or none
        (an item Redis refuses, e.g. a key of the wrong type, does not undo the others)."""
        if not items:
            return []
        now = now_ms()
        ts = now if ts is None else ts
        calls = [self._publish_args(c, d, s, ts, now) for c, d, s in items]
        try:
            results = await self._pipeline(calls, transaction=True)
        except EngineError:
            self.stats.publish_errors += 1
            raise
        for result in results:
            if isinstance(result, Exception):
                self.stats.publish_errors += 1
                raise self._error(result, "publish_many") from result
        pubs = []
        for (channel, data, snap), (epoch, seq, wanted) in zip(items, results, strict=True):
            self.stats.count(channel)
            self._note_wanted(channel, snap is not None, wanted)
            pubs.append(Publication(channel, int(seq), epoch.decode(), ts, msgspec.Raw(data)))
        return pubs

    # -- reading --------------------------------------------------------------------------

    async def history(
        self, channel: str, since: Position, *, limit: int | None = None
    ) -> HistoryResult:
        settings = self.settings
        cutoff = now_ms() - int(settings.ttl * 1000)
        keys = [self.key(channel, "m"), self.key(channel, "h")]
        args = [
            since.epoch,
            since.seq,
            -1 if limit is None else limit,
            cutoff,
            settings.size,
            _candidate_epoch(),
            self.meta_ttl,
        ]
        epoch_b, seq, recovered, entries = await self._eval(
            "history", redis_lua.HISTORY, keys, args
        )
        epoch = epoch_b.decode()
        position = Position(epoch, int(seq))
        if not recovered:
            return HistoryResult(False, position, [])
        pubs = []
        for entry_id, fields in entries:
            # entry id b"<seq>-0"; fields [b"t", ts, b"d", data]
            pubs.append(
                Publication(
                    channel,
                    int(entry_id[:-2]),
                    epoch,
                    int(fields[1]),
                    msgspec.Raw(fields[3]),
                )
            )
        return HistoryResult(True, position, pubs)

    async def position(self, channel: str) -> Position:
        keys = [self.key(channel, "m"), self.key(channel, "h")]
        epoch, seq = await self._eval(
            "position", redis_lua.POSITION, keys, [_candidate_epoch(), self.meta_ttl]
        )
        return Position(epoch.decode(), int(seq))

    async def request_snapshot(self, channel: str) -> None:
        keys = [self.key(channel, "m"), self.key(channel, "h")]
        args = [_candidate_epoch(), self.meta_ttl]
        await self._eval("request_snapshot", redis_lua.REQUEST_SNAPSHOT, keys, args)
        self._wanted.add(channel)  # a publisher on this node knows at once

    def snapshot_wanted(self, channel: str) -> bool:
        return channel in self._wanted

    async def snapshot(self, channel: str) -> Snapshot | None:
        try:
            fields: list[bytes | None] = await self._redis.hmget(  # type: ignore[assignment]
                self.key(channel, "m"), ["e", "n", "nt", "nd"]
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise self._unavailable(exc, "snapshot") from exc
        epoch, seq, ts, data = fields
        if epoch is None or seq is None or ts is None or data is None:
            return None
        return Snapshot(channel, int(seq), epoch.decode(), int(ts), msgspec.Raw(data))

    # -- node subscriptions ---------------------------------------------------------------

    async def subscribe(self, channels: Iterable[str]) -> None:
        """Subscribe this node to ``channels``; returns once Redis confirmed, so every
        publication made after this returns reaches the handler."""
        conn = self._conn
        if conn is None:
            raise EngineUnavailable(f"Redis engine at {self._where} is reconnecting")
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[None]] = []
        new: list[bytes] = []
        for channel in channels:
            if channel in self._subscribed:
                continue
            name = self.pubsub_channel(channel)
            fut: asyncio.Future[None] = loop.create_future()
            self._confirm.setdefault(name, deque()).append(fut)
            self._subscribed.add(channel)
            self._names[name] = channel
            new.append(name)
            waits.append(fut)
        if not new:
            return
        try:
            await conn.send_command("SUBSCRIBE", *new, check_health=False)
            async with asyncio.timeout(self.timeout):
                await asyncio.gather(*waits)
        except BaseException as exc:
            for name in new:
                gone = self._names.pop(name, None)
                if gone is not None:
                    self._subscribed.discard(gone)
            if isinstance(exc, (RedisError, OSError, TimeoutError)):
                raise self._unavailable(exc, "subscribe") from exc
            raise

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        names = []
        for channel in channels:
            if channel in self._subscribed:
                self._subscribed.discard(channel)
                name = self.pubsub_channel(channel)
                self._names.pop(name, None)
                names.append(name)
        conn = self._conn
        if names and conn is not None:
            try:
                await conn.send_command("UNSUBSCRIBE", *names, check_health=False)
            except (RedisError, OSError) as exc:
                log.info(
                    "unsubscribe from %s failed (%s); the reconnect drops it", self._where, exc
                )

    @property
    def subscribed(self) -> frozenset[str]:
        """Channels this node is subscribed to."""
        return frozenset(self._subscribed)

    async def _pubsub_loop(self) -> None:
        first = True
        while not self._closing:
            conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
            reader: asyncio.Task[None] | None = None
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                self._conn = conn
                reader = asyncio.create_task(self._read(conn))
                names = [self.pubsub_channel(c) for c in sorted(self._subscribed)]
                if names:
                    loop = asyncio.get_running_loop()
                    waits: list[asyncio.Future[None]] = []
                    for name in names:
                        fut: asyncio.Future[None] = loop.create_future()
                        self._confirm.setdefault(name, deque()).append(fut)
                        waits.append(fut)
                    await conn.send_command("SUBSCRIBE", *names, check_health=False)
                    confirmed = asyncio.ensure_future(self._all(waits))
                    done, _ = await asyncio.wait(
                        {reader, confirmed}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if reader in done:
                        confirmed.cancel()
                        reader.result()
                        raise RedisConnectionError("pub/sub connection closed")
                    confirmed.result()
                self._connected.set()
                self._backoff.reset()
                if first:
                    first = False
                    log.info("Redis engine connected to %s", self._where)
                else:
                    self.reconnects += 1
                    log.warning("Redis engine reconnected to %s; resyncing", self._where)
                    if self._handler is not None:
                        try:
                            self._handler.on_resync()
                        except Exception:
                            log.exception("engine handler failed on resync")
                await reader
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, EngineError) as exc:
                if not self._closing:
                    log.warning("Redis engine pub/sub to %s lost: %s", self._where, exc)
            except Exception:  # a bug must not end delivery for good: log it and reconnect
                log.exception("Redis engine pub/sub loop failed; reconnecting")
            finally:
                self._connected.clear()
                self._conn = None
                if reader is not None:
                    reader.cancel()
                self._fail_confirmations()
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
            if self._closing:
                return
            await asyncio.sleep(self._backoff.next())

    @staticmethod
    async def _all(waits: list[asyncio.Future[None]]) -> None:
        for fut in waits:
            await fut

    def _fail_confirmations(self) -> None:
        confirm, self._confirm = self._confirm, {}
        for waiters in confirm.values():
            for fut in waiters:
                if fut is not None and not fut.done():
                    fut.set_exception(
                        EngineUnavailable(f"Redis engine at {self._where}: pub/sub lost")
                    )
                    fut.exception()  # retrieved here; the waiter gets it too

    async def _read(self, conn: AbstractConnection) -> None:
        """Read the pub/sub connection until it fails; deliver in arrival (= seq) order."""
        pinged = False
        while True:
            msg = await conn.read_response(
                timeout=self.ping_interval, disconnect_on_error=False, push_request=True
            )
            if msg is None:
                if pinged:
                    raise RedisTimeoutError("pub/sub connection stopped answering PING")
                await conn.send_command("PING", check_health=False)
                pinged = True
                continue
            pinged = False
            kind = msg[0]
            if kind == b"message":
                name = msg[1]
                channel = self._names.get(name)
                handler = self._handler
                if channel is None or handler is None:
                    continue  # unsubscribed meanwhile
                try:
                    epoch, seq, ts, data = msg[2].split(b" ", 3)
                    pub = Publication(channel, int(seq), epoch.decode(), int(ts), msgspec.Raw(data))
                except (ValueError, UnicodeDecodeError):
                    # not written by our script: someone else published on our prefix
                    self.malformed += 1
                    log.warning("Redis engine: malformed publication on %r ignored", name)
                    continue
                try:
                    handler.on_publication(pub)
                except Exception:
                    log.exception("engine handler failed on %s seq %d", channel, pub.seq)
            elif kind == b"subscribe":
                waiters = self._confirm.get(msg[1])
                if waiters:
                    fut = waiters.popleft()
                    if not waiters:
                        del self._confirm[msg[1]]
                    if fut is not None and not fut.done():
                        fut.set_result(None)
            elif kind == b"pong" or kind == b"unsubscribe":
                continue
            else:
                log.debug("Redis engine: unexpected pub/sub reply %r", msg[:1])

"""RedisEngine: the Redis engine's public class, composed of one part per concern."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tickwire.engine.base import (
    Engine,
    EngineError,
    EngineHandler,
    EngineStats,
    EngineUnavailable,
    HistoryResult,
    HistorySettings,
)
from tickwire.engine.redis import scripts
from tickwire.engine.redis.batcher import Batcher
from tickwire.engine.redis.pool import Backoff, connect_node, make_cluster, make_pool
from tickwire.engine.redis.pubsub import PubSub
from tickwire.engine.redis.scripts import Call, ScriptRunner, candidate_epoch
from tickwire.engine.redis.sharded import ShardedPubSub
from tickwire.engine.redis.url import parse_engine_url
from tickwire.engine.urls import redact
from tickwire.model.publication import Position, Publication, Snapshot, now_ms

__all__ = ["RedisEngine"]

log = logging.getLogger("tickwire.engine.redis")


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
        self._where = redact(url)
        #: names this node's connections in ``CLIENT LIST`` (``tickwire:<node_id>``)
        self.node_id = secrets.token_hex(4)
        self._pool: ConnectionPool | None = None
        self._pubsub: PubSub | ShardedPubSub
        self._redis: Any  # aioredis.Redis, or RedisCluster on a redis+cluster:// URL
        self.sharded = bool(self.target.cluster)
        if self.sharded:
            self._redis = make_cluster(self.target, node_id=self.node_id, timeout=timeout)
            self._pubsub = ShardedPubSub(
                self._redis,
                partial(connect_node, self.target, node_id=self.node_id, timeout=timeout),
                prefix=prefix,
                where=self._where,
                timeout=timeout,
                ping_interval=ping_interval,
                backoff=Backoff(*backoff),
            )
        else:
            self._pool = make_pool(
                self.target, node_id=self.node_id, timeout=timeout, max_connections=max_connections
            )
            self._redis = aioredis.Redis(connection_pool=self._pool)
            self._pubsub = PubSub(
                self._pool,
                prefix=prefix,
                where=self._where,
                timeout=timeout,
                ping_interval=ping_interval,
                backoff=Backoff(*backoff),
            )
        self._scripts = ScriptRunner(self._redis, self._where, cluster=self.sharded)
        self._batcher = Batcher(self._scripts)
        self._task: asyncio.Task[None] | None = None
        #: state channels whose publisher (in this process) is asked for a snapshot
        self._wanted: set[str] = set()
        #: True for an engine of its own (not one shard of a sharded engine): its start
        #: records that this Redis served alone (an empty ``<prefix>:shards``), so that a
        #: sharded engine that later includes it knows the other shards' keys are stale
        self.solo = True

    # -- connections ----------------------------------------------------------------------

    def key(self, channel: str, suffix: str) -> str:
        """The Redis key of ``channel``'s meta hash (``m``) or history stream (``h``)."""
        return f"{self.prefix}{{{channel}}}:{suffix}"

    def pubsub_channel(self, channel: str) -> bytes:
        """The Redis pub/sub channel a publication on ``channel`` is sent to."""
        return self._pubsub.channel_name(channel)

    @property
    def reconnects(self) -> int:
        """How often the pub/sub connection was re-established (for tests and metrics)."""
        return self._pubsub.reconnects

    @property
    def malformed(self) -> int:
        """Pub/sub messages on this prefix not written by the publish script (ignored)."""
        return self._pubsub.malformed

    async def start(self, handler: EngineHandler) -> None:
        """Check that Redis answers, open the pub/sub connection and start delivering."""
        pubsub = self._pubsub
        pubsub.handler = handler
        pubsub.closing = False
        try:
            await self._redis.ping()
            if self.solo and not self.sharded:
                await self._redis.set(f"{self.prefix}:shards", b"")
        except (RedisError, OSError) as exc:
            raise self._scripts.unavailable(exc, "start") from exc
        self._task = asyncio.create_task(pubsub.run(), name="tickwire-redis-pubsub")
        waiter = asyncio.ensure_future(pubsub.connected.wait())
        try:
            await asyncio.wait(
                {waiter, self._task}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if not pubsub.connected.is_set():
            await self.close()
            raise EngineUnavailable(f"Redis engine at {self._where}: pub/sub did not connect")

    async def close(self) -> None:
        """Stop the pub/sub loop and close every connection."""
        self._pubsub.closing = True
        # publications already requested finish (or fail) before the connections go
        await self._batcher.drain()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._pubsub.handler = None
        await self._redis.aclose()
        if self._pool is not None:
            await self._pool.disconnect()

    # -- publishing -----------------------------------------------------------------------

    def _publish_args(
        self, channel: str, data: bytes, snapshot: bytes | None, ts: int, now: int
    ) -> Call:
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
            candidate_epoch(),
            self.pubsub_channel(channel),
            "0" if snapshot is None else "1",
            b"" if snapshot is None else snapshot,
            "1" if self.sharded else "0",
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
        fut = self._batcher.submit(self._publish_args(channel, data, snapshot, ts, now))
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

    async def publish_many(
        self, items: Sequence[tuple[str, bytes, bytes | None]], *, ts: int | None = None
    ) -> list[Publication]:
        """Publish every item in one round trip, as one MULTI/EXEC transaction: nothing
        interleaves with the batch, and it is applied whole or not at all, also when
        Redis refuses one item (see :meth:`ScriptRunner.publish_transaction`;
        docs/market-data.md). On Redis Cluster the items' channels live in different
        slots, which no transaction spans: each item is atomic on its own, sent in order
        in one pipeline."""
        if not items:
            return []
        now = now_ms()
        ts = now if ts is None else ts
        calls = [self._publish_args(c, d, s, ts, now) for c, d, s in items]
        try:
            if self.sharded:
                results = await self._scripts.publish_pipeline(calls, transaction=False)
            else:
                token = f"{self.prefix}:batch:{self.node_id}"
                channels = [c for c, _, _ in items]
                results = await self._scripts.publish_transaction(channels, calls, token)
        except EngineError:
            self.stats.publish_errors += 1
            raise
        for result in results:
            if isinstance(result, Exception):
                self.stats.publish_errors += 1
                raise self._scripts.error(result, "publish_many") from result
        pubs = []
        for (channel, data, snap), (epoch, seq, wanted) in zip(items, results, strict=True):
            self.stats.count(channel)
            self._note_wanted(channel, snap is not None, wanted)
            pubs.append(Publication(channel, int(seq), epoch.decode(), ts, msgspec.Raw(data)))
        return pubs

    async def check_publishable(self, channels: Sequence[str]) -> None:
        """Raise :class:`EngineError` naming the first of ``channels`` whose keys the
        publish script would refuse (wrong type, a seq that is not a number), or
        :class:`EngineUnavailable`; writes nothing. The sharded engine runs it on every
        shard of a ``publish_many`` before publishing any of it."""
        if not channels:
            return
        keys = [""] + [self.key(c, s) for c in channels for s in ("m", "h")]
        refused = await self._scripts.eval("check_items", scripts.CHECK_ITEMS, keys, [])
        if refused:
            raise EngineError(
                f"Redis engine publish_many refused {channels[int(refused) - 1]!r}: its keys "
                "are not this engine's (wrong type, or a seq that is not a number); nothing "
                "of the batch was published"
            )

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
            candidate_epoch(),
            self.meta_ttl,
        ]
        epoch_b, seq, recovered, entries = await self._scripts.eval(
            "history", scripts.HISTORY, keys, args
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
        epoch, seq = await self._scripts.eval(
            "position", scripts.POSITION, keys, [candidate_epoch(), self.meta_ttl]
        )
        return Position(epoch.decode(), int(seq))

    async def request_snapshot(self, channel: str) -> None:
        keys = [self.key(channel, "m"), self.key(channel, "h")]
        args = [candidate_epoch(), self.meta_ttl]
        await self._scripts.eval("request_snapshot", scripts.REQUEST_SNAPSHOT, keys, args)
        self._wanted.add(channel)  # a publisher on this node knows at once

    def snapshot_wanted(self, channel: str) -> bool:
        return channel in self._wanted

    async def snapshot(self, channel: str) -> Snapshot | None:
        try:
            fields: list[bytes | None] = await self._redis.hmget(
                self.key(channel, "m"), ["e", "n", "nt", "nd"]
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise self._scripts.unavailable(exc, "snapshot") from exc
        epoch, seq, ts, data = fields
        if epoch is None or seq is None or ts is None or data is None:
            return None
        return Snapshot(channel, int(seq), epoch.decode(), int(ts), msgspec.Raw(data))

    # -- node subscriptions ---------------------------------------------------------------

    async def subscribe(self, channels: Iterable[str]) -> None:
        """Subscribe this node to ``channels``; returns once Redis confirmed, so every
        publication made after this returns reaches the handler."""
        await self._pubsub.subscribe(channels)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        await self._pubsub.unsubscribe(channels)

    @property
    def subscribed(self) -> frozenset[str]:
        """Channels this node is subscribed to."""
        return frozenset(self._pubsub.subscribed)

"""The node's sharded pub/sub on Redis Cluster: one connection per master, SSUBSCRIBE of
each channel on the master that owns its slot, so a publication (SPUBLISH from the
publish script) travels only within its shard.

When any of these connections breaks, or Redis says a slot moved away (an unasked
``sunsubscribe``: a failover, a resharding), every connection is dropped, the topology
read again, every channel subscribed on its current owner, and then
``handler.on_resync()`` is called so the hub recovers whatever was published meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tickwire.engine.base import EngineError, EngineHandler, EngineUnavailable
from tickwire.engine.redis.delivery import Delivery
from tickwire.engine.redis.pool import Backoff
from tickwire.model.publication import Publication

__all__ = ["ShardedPubSub"]

log = logging.getLogger("tickwire.engine.redis")

#: Makes an unconnected connection to one cluster node.
Connect = Callable[[str, int], AbstractConnection]


class ShardedPubSub(Delivery):
    """Subscriptions of one node on a Redis Cluster (the interface of
    :class:`tickwire.engine.redis.pubsub.PubSub`)."""

    def __init__(
        self,
        cluster: RedisCluster,
        connect: Connect,
        *,
        prefix: str,
        where: str,
        timeout: float,
        ping_interval: float,
        backoff: Backoff,
    ) -> None:
        self.cluster = cluster
        self.connect = connect
        self.where = where
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.backoff = backoff
        self.handler: EngineHandler | None = None
        self.closing = False
        self._prefix = prefix
        self.connected = asyncio.Event()
        self.subscribed: set[str] = set()
        self._names: dict[bytes, str] = {}
        #: node name -> its connection, while connected
        self._conns: dict[str, AbstractConnection] = {}
        self._confirm: dict[bytes, asyncio.Future[None]] = {}
        #: False from a reconnect until on_resync() was called: what arrives meanwhile
        #: is held, so the handler hears of the resync before any publication after it
        self._live = False
        self._held: list[Publication] = []
        self.reconnects = 0
        self.malformed = 0

    def channel_name(self, channel: str) -> bytes:
        """The shard channel of ``channel``: hash-tagged like its keys (same slot)."""
        return f"{self._prefix}:p:{{{channel}}}".encode()

    def _conn_for(self, name: bytes) -> AbstractConnection:
        node = self.cluster.nodes_manager.get_node_from_slot(self.cluster.keyslot(name))
        conn = self._conns.get(node.name)
        if conn is None or not self.connected.is_set():
            raise EngineUnavailable(f"Redis engine at {self.where} is reconnecting")
        return conn

    async def subscribe(self, channels: Iterable[str]) -> None:
        loop = asyncio.get_running_loop()
        new: list[bytes] = []
        waits: list[asyncio.Future[None]] = []
        try:
            for channel in channels:
                if channel in self.subscribed:
                    continue
                name = self.channel_name(channel)
                conn = self._conn_for(name)
                fut: asyncio.Future[None] = loop.create_future()
                self._confirm[name] = fut
                self.subscribed.add(channel)
                self._names[name] = channel
                new.append(name)
                waits.append(fut)
                await conn.send_command("SSUBSCRIBE", name, check_health=False)
            if waits:
                async with asyncio.timeout(self.timeout):
                    await asyncio.gather(*waits)
        except BaseException as exc:
            for name in new:
                self._confirm.pop(name, None)
                gone = self._names.pop(name, None)
                if gone is not None:
                    self.subscribed.discard(gone)
            if isinstance(exc, (RedisError, OSError, TimeoutError)):
                raise EngineUnavailable(
                    f"Redis engine at {self.where} is unavailable (subscribe): {exc}"
                ) from exc
            raise

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        for channel in channels:
            if channel not in self.subscribed:
                continue
            self.subscribed.discard(channel)
            name = self.channel_name(channel)
            self._names.pop(name, None)
            try:
                conn = self._conn_for(name)
                await conn.send_command("SUNSUBSCRIBE", name, check_health=False)
            except (RedisError, OSError, EngineError) as exc:
                log.info("unsubscribe from %s failed (%s); the reconnect drops it", self.where, exc)

    async def run(self) -> None:
        first = True
        while not self.closing:
            readers: list[asyncio.Task[None]] = []
            conns: dict[str, AbstractConnection] = {}
            try:
                if not first:
                    await self.cluster.nodes_manager.initialize()  # where the slots are now
                for node in self.cluster.get_primaries():
                    conn = self.connect(node.host, int(node.port))
                    conns[node.name] = conn
                    await conn.connect()  # type: ignore[no-untyped-call]
                for conn in conns.values():
                    readers.append(asyncio.create_task(self._read(conn)))
                self._conns = conns
                loop = asyncio.get_running_loop()
                waits: list[asyncio.Future[None]] = []
                for channel in sorted(self.subscribed):
                    name = self.channel_name(channel)
                    node = self.cluster.nodes_manager.get_node_from_slot(self.cluster.keyslot(name))
                    fut: asyncio.Future[None] = loop.create_future()
                    self._confirm[name] = fut
                    waits.append(fut)
                    await conns[node.name].send_command("SSUBSCRIBE", name, check_health=False)
                if waits:
                    confirmed: asyncio.Future[None] = asyncio.ensure_future(self._all(waits))
                    pending: set[asyncio.Future[None]] = {confirmed, *readers}
                    done, _ = await asyncio.wait(
                        pending,
                        timeout=self.timeout,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if confirmed not in done:
                        confirmed.cancel()
                        for task in done:
                            task.result()
                        raise RedisTimeoutError("sharded pub/sub: SSUBSCRIBE not confirmed")
                    confirmed.result()
                self._connected(reconnect=not first, what=f"cluster {self.where}")
                first = False
                ended, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
                for task in ended:
                    task.result()
                raise RedisConnectionError("sharded pub/sub connection closed")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, EngineError) as exc:
                if not self.closing:
                    log.warning("Redis engine sharded pub/sub to %s lost: %s", self.where, exc)
            except Exception:  # a bug must not end delivery for good: log it and reconnect
                log.exception("Redis engine sharded pub/sub loop failed; reconnecting")
            finally:
                first = False
                self._gone()
                self.connected.clear()
                self._conns = {}
                for task in readers:
                    task.cancel()
                confirm, self._confirm = self._confirm, {}
                for fut in confirm.values():
                    if not fut.done():
                        fut.set_exception(
                            EngineUnavailable(f"Redis engine at {self.where}: pub/sub lost")
                        )
                        fut.exception()
                for conn in conns.values():
                    with contextlib.suppress(Exception):
                        await conn.disconnect(nowait=True)
            if self.closing:
                return
            await asyncio.sleep(self.backoff.next())

    async def _read(self, conn: AbstractConnection) -> None:
        async for msg in self._replies(conn):
            kind = msg[0]
            if kind == b"smessage":
                self._received(msg[1], msg[2])
            elif kind == b"ssubscribe":
                fut = self._confirm.pop(msg[1], None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif kind == b"sunsubscribe":
                if msg[1] in self._names:  # not asked for: the slot moved (failover)
                    raise RedisConnectionError(f"slot of {msg[1]!r} moved")
            elif kind == b"pong":
                continue
            else:
                log.debug("Redis engine: unexpected pub/sub reply %r", msg[:1])

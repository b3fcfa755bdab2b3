"""The node's one pub/sub connection: SUBSCRIBE while a channel has local subscribers,
deliver what arrives in arrival (= seq) order, and when the connection breaks reconnect
with backoff, resubscribe and call ``handler.on_resync()`` so the hub recovers whatever
was published meanwhile (from history, or with a reset and a snapshot)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from tickwire.engine.base import EngineError, EngineHandler, EngineUnavailable
from tickwire.engine.redis.delivery import Delivery
from tickwire.engine.redis.pool import Backoff
from tickwire.model.publication import Publication

__all__ = ["PubSub"]

log = logging.getLogger("tickwire.engine.redis")


class PubSub(Delivery):
    """Subscriptions of one node on one Redis, and the loop that reads them."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        prefix: str,
        where: str,
        timeout: float,
        ping_interval: float,
        backoff: Backoff,
    ) -> None:
        self.pool = pool
        self.where = where
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.backoff = backoff
        self.handler: EngineHandler | None = None
        self.closing = False
        self._prefix = f"{prefix}:p:".encode()
        self.conn: AbstractConnection | None = None
        self.connected = asyncio.Event()
        self.subscribed: set[str] = set()
        #: per pub/sub channel name, one entry per SUBSCRIBE sent and not yet confirmed
        self._confirm: dict[bytes, deque[asyncio.Future[None] | None]] = {}
        self._names: dict[bytes, str] = {}
        self._live = False
        self._held: list[Publication] = []
        #: for tests and metrics
        self.reconnects = 0
        self.malformed = 0

    def channel_name(self, channel: str) -> bytes:
        """The Redis pub/sub channel a publication on ``channel`` is sent to."""
        return self._prefix + channel.encode()

    async def subscribe(self, channels: Iterable[str]) -> None:
        conn = self.conn
        if conn is None:
            raise EngineUnavailable(f"Redis engine at {self.where} is reconnecting")
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[None]] = []
        new: list[bytes] = []
        for channel in channels:
            if channel in self.subscribed:
                continue
            name = self.channel_name(channel)
            fut: asyncio.Future[None] = loop.create_future()
            self._confirm.setdefault(name, deque()).append(fut)
            self.subscribed.add(channel)
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
                    self.subscribed.discard(gone)
            if isinstance(exc, (RedisError, OSError, TimeoutError)):
                raise EngineUnavailable(
                    f"Redis engine at {self.where} is unavailable (subscribe): {exc}"
                ) from exc
            raise

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        names = []
        for channel in channels:
            if channel in self.subscribed:
                self.subscribed.discard(channel)
                name = self.channel_name(channel)
                self._names.pop(name, None)
                names.append(name)
        conn = self.conn
        if names and conn is not None:
            try:
                await conn.send_command("UNSUBSCRIBE", *names, check_health=False)
            except (RedisError, OSError) as exc:
                log.info("unsubscribe from %s failed (%s); the reconnect drops it", self.where, exc)

    async def run(self) -> None:
        """Hold the connection until :attr:`closing`; reconnect whenever it breaks."""
        first = True
        while not self.closing:
            conn: AbstractConnection = self.pool.make_connection()  # type: ignore[no-untyped-call]
            reader: asyncio.Task[None] | None = None
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                self.conn = conn
                reader = asyncio.create_task(self._read(conn))
                names = [self.channel_name(c) for c in sorted(self.subscribed)]
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
                self._connected(reconnect=not first, what=self.where)
                first = False
                await reader
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, EngineError) as exc:
                if not self.closing:
                    log.warning("Redis engine pub/sub to %s lost: %s", self.where, exc)
            except Exception:  # a bug must not end delivery for good: log it and reconnect
                log.exception("Redis engine pub/sub loop failed; reconnecting")
            finally:
                self._gone()
                self.connected.clear()
                self.conn = None
                if reader is not None:
                    reader.cancel()
                self._fail_confirmations()
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
            if self.closing:
                return
            await asyncio.sleep(self.backoff.next())

    def _fail_confirmations(self) -> None:
        confirm, self._confirm = self._confirm, {}
        for waiters in confirm.values():
            for fut in waiters:
                if fut is not None and not fut.done():
                    fut.set_exception(
                        EngineUnavailable(f"Redis engine at {self.where}: pub/sub lost")
                    )
                    fut.exception()  # retrieved here; the waiter gets it too

    async def _read(self, conn: AbstractConnection) -> None:
        """Read the pub/sub connection until it fails; deliver in arrival (= seq) order."""
        async for msg in self._replies(conn):
            kind = msg[0]
            if kind == b"message":
                self._received(msg[1], msg[2])
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

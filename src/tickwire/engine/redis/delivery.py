"""What both pub/sub loops (one Redis: :mod:`.pubsub`; Redis Cluster: :mod:`.sharded`)
share: reading a pub/sub connection with keep-alive pings, decoding what the publish
script sent, and handing it to the hub in order, held from a (re)connect until the hub
was told to resync so that nothing reaches it ahead of the resync."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import msgspec
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import TimeoutError as RedisTimeoutError

from tickwire.engine.base import EngineHandler
from tickwire.engine.redis.pool import Backoff
from tickwire.model.publication import Publication

__all__ = ["MAX_HELD", "Delivery"]

log = logging.getLogger("tickwire.engine.redis")

#: Publications held between a (re)connect and the resync, at most (past it the resync
#: fills what was not held).
MAX_HELD = 100_000


class Delivery:
    """The delivering half of a pub/sub loop (a base of both loops)."""

    handler: EngineHandler | None
    subscribed: set[str]
    ping_interval: float
    connected: asyncio.Event
    backoff: Backoff
    reconnects: int
    #: pub/sub channel name -> tickwire channel, while subscribed
    _names: dict[bytes, str]
    #: False from a (re)connect until the hub was told to resync: what arrives meanwhile
    #: is held
    _live: bool
    _held: list[Publication]
    malformed: int

    def _resync(self) -> None:
        if self.handler is not None:
            try:
                self.handler.on_resync()
            except Exception:
                log.exception("engine handler failed on resync")

    def _connected(self, *, reconnect: bool, what: str) -> None:
        """Every channel is subscribed on the new connection: say so, tell the hub to
        resync after a reconnect, then deliver what was held meanwhile."""
        self.connected.set()
        self.backoff.reset()
        if reconnect:
            self.reconnects += 1
            log.warning("Redis engine reconnected to %s; resyncing", what)
        else:
            log.info("Redis engine connected to %s", what)
        self._go_live(resync=reconnect)

    def _go_live(self, *, resync: bool) -> None:
        """After a (re)connect: tell the hub to resync (``resync``), then deliver what
        was held meanwhile, in order."""
        if resync:
            self._resync()
        self._live = True
        held, self._held = self._held, []
        if len(held) >= MAX_HELD:
            self._resync()  # some were not held: the resync fills them
        for pub in held:
            self._deliver(pub)

    def _gone(self) -> None:
        """The connection ended: hold again until the next resync."""
        self._live = False
        self._held = []

    def _deliver(self, pub: Publication) -> None:
        handler = self.handler
        if handler is None or pub.channel not in self.subscribed:
            return  # unsubscribed meanwhile
        try:
            handler.on_publication(pub)
        except Exception:
            log.exception("engine handler failed on %s seq %d", pub.channel, pub.seq)

    def _received(self, name: bytes, payload: bytes) -> None:
        """A message on pub/sub channel ``name``: ``<epoch> <seq> <ts> <data>``."""
        channel = self._names.get(name)
        if channel is None or self.handler is None:
            return  # unsubscribed meanwhile
        try:
            epoch, seq, ts, data = payload.split(b" ", 3)
            pub = Publication(channel, int(seq), epoch.decode(), int(ts), msgspec.Raw(data))
        except (ValueError, UnicodeDecodeError):
            # not written by our script: someone else published on our prefix
            self.malformed += 1
            log.warning("Redis engine: malformed publication on %r ignored", name)
            return
        if self._live:
            self._deliver(pub)
        elif len(self._held) < MAX_HELD:
            self._held.append(pub)

    async def _replies(self, conn: AbstractConnection) -> AsyncIterator[list[bytes]]:
        """The pub/sub replies of ``conn``, pinging it when quiet; raises when it stops
        answering."""
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
            yield msg

    @staticmethod
    async def _all(waits: list[asyncio.Future[None]]) -> None:
        for fut in waits:
            await fut

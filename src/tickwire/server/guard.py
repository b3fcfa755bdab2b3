"""Transport-level limits aiohttp does not set: a header deadline and a cap on connections
per client address.

:class:`GuardedSite` listens like ``web.TCPSite`` but builds each connection's protocol
as a :class:`GuardedRequestHandler`: aiohttp's own handler, plus

- a deadline from accept to the first request's headers (``header_timeout``): a client
  that trickles its headers (slowloris) is closed when it passes;
- a count of open connections per address (``max_connections_per_address``): one over
  the cap is closed at once, before a byte of it is parsed;
- every WebSocket connection (each dialect's, Socket.IO's too) leaves aiohttp after its
  handshake (:meth:`GuardedRequestHandler.hand_over`, tickwire.server.wsconn) and keeps
  its place in the count until it ends; RFC 6455's rules (an unmasked frame closes with
  1002) are its own frame reader's (tickwire.server.wsframes).
- when ``send_buffer_bytes`` is set, a fixed ``SO_SNDBUF`` on each accepted socket, so
  that what the kernel holds for a client that does not read is bounded too (the hub's
  ``max_queue_bytes`` bounds only what the process holds).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)


class ConnectionGuard:
    """Per-address connection counts and the header deadline, shared by a site's
    connections."""

    def __init__(
        self, *, header_timeout: float, max_per_address: int, send_buffer: int = 0
    ) -> None:
        self.header_timeout = header_timeout
        self.max_per_address = max_per_address
        #: ``SO_SNDBUF`` of each accepted socket; 0: the kernel's autotuning
        self.send_buffer = send_buffer
        #: open connections per client address (addresses with none are removed)
        self.open: dict[str, int] = {}
        self.refused = 0
        self.timed_out = 0

    def admit(self, address: str) -> bool:
        count = self.open.get(address, 0)
        if self.max_per_address and count >= self.max_per_address:
            self.refused += 1
            return False
        self.open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self.open.get(address, 0) - 1
        if count > 0:
            self.open[address] = count
        else:
            self.open.pop(address, None)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's request handler with the guard's limits (see the module docstring)."""

    __slots__ = ("_address", "_deadline", "_guard", "_handed_over")

    def __init__(self, guard: ConnectionGuard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._handed_over = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self._guard.admit(address):
            log.debug("connection from %s refused: %d open", address, self._guard.max_per_address)
            if isinstance(transport, asyncio.WriteTransport):
                transport.abort()
            else:  # pragma: no cover - TCP transports are write transports
                transport.close()
            return
        self._address = address
        if self._guard.send_buffer:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._guard.send_buffer)
        # the header deadline is scheduled before aiohttp's first keep-alive check, which
        # runs as long (keepalive_timeout = header_timeout) and would otherwise close a
        # trickling client first, uncounted: now ours fires first and aiohttp's finds the
        # connection closing
        self._deadline = asyncio.get_running_loop().call_later(
            self._guard.header_timeout, self._headers_late
        )
        super().connection_made(transport)

    def _headers_late(self) -> None:
        self._deadline = None
        self._guard.timed_out += 1
        log.debug("connection from %s closed: no request headers in time", self._address)
        self.force_close()
        if self.transport is not None:
            self.transport.abort()

    def request_started(self) -> None:
        """The first request's headers arrived: the header deadline is met."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._address is None and not self._handed_over:
            return  # refused in connection_made: aiohttp never saw it
        if self._address is not None and not self._handed_over:
            self._guard.release(self._address)
        self._address = None
        self.request_started()
        super().connection_lost(exc)

    def hand_over(self) -> Callable[[], None]:
        """The connection moves to another protocol (tickwire.server.wsconn) and stays
        open when this handler is done: the returned function releases its place in the
        per-address count, once, when it ends."""
        self._handed_over = True
        address, guard = self._address, self._guard
        self.request_started()

        def release() -> None:
            if address is not None:
                guard.release(address)

        return release


@web.middleware
async def header_deadline_met(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    """Tells the connection's guard that a request's headers arrived."""
    protocol = request.protocol
    if isinstance(protocol, GuardedRequestHandler):
        protocol.request_started()
    response: web.StreamResponse = await handler(request)
    return response


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are :class:`GuardedRequestHandler`\\ s."""

    __slots__ = ("_guard", "_host", "_port", "_reuse_address", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        *,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._guard = guard
        self._reuse_address = reuse_address
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def guard(self) -> ConnectionGuard:
        return self._guard

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        # the handler's options as aiohttp's Server would pass them (keepalive_timeout...)
        options: dict[str, Any] = dict(getattr(server, "_kwargs", {}))

        def protocol() -> GuardedRequestHandler:
            return GuardedRequestHandler(self._guard, server, loop=loop, **options)

        self._server = await loop.create_server(
            protocol,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )

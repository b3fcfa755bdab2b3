"""Transport-level limits aiohttp does not set: a header deadline, a cap on connections
per client address, and RFC 6455's rule that every client frame is masked.

:class:`GuardedSite` listens like ``web.TCPSite`` but builds each connection's protocol
as a :class:`GuardedRequestHandler`: aiohttp's own handler, plus

- a deadline from accept to the first request's headers (``header_timeout``): a client
  that trickles its headers (slowloris) is closed when it passes;
- a count of open connections per address (``max_connections_per_address``): one over
  the cap is closed at once, before a byte of it is parsed;
- after a WebSocket upgrade that aiohttp goes on reading (the Socket.IO transport), a
  check of each frame header's MASK bit in front of aiohttp's frame reader (which accepts
  unmasked frames): the first unmasked frame stops the reading and the shell closes the
  connection with 1002. The raw WebSocket dialects leave aiohttp after the handshake
  (:meth:`GuardedRequestHandler.hand_over`, tickwire.server.wsconn) and their own frame
  reader refuses unmasked frames.
- when ``send_buffer_bytes`` is set, a fixed ``SO_SNDBUF`` on each accepted socket, so
  that what the kernel holds for a client that does not read is bounded too (the hub's
  ``max_queue_bytes`` bounds only what the process holds).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

#: Close code for a protocol violation (RFC 6455 7.4.1).
CLOSE_PROTOCOL_ERROR = 1002


class MaskCheck:
    """Follows frame boundaries in the client's byte stream and flags the first frame
    without the MASK bit (sans-I/O: bytes in, a verdict out)."""

    __slots__ = ("_head", "_skip", "violated")

    def __init__(self) -> None:
        self._head = b""  # an incomplete frame header
        self._skip = 0  # payload bytes of the current frame still to pass
        self.violated = False

    def feed(self, data: bytes) -> bool:
        """Account for ``data``; False once a frame is unmasked (and from then on)."""
        if self.violated:
            return False
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            need = 2 - len(self._head)
            if need > 0:
                self._head += bytes(view[pos : pos + need])
                pos += min(need, end - pos)
                if len(self._head) < 2:
                    return True
            b1 = self._head[1]
            if not b1 & 0x80:
                self.violated = True
                return False
            n = b1 & 0x7F
            ext = 2 if n == 126 else 8 if n == 127 else 0
            want = 2 + ext + 4  # header, extended length, masking key
            take = min(want - len(self._head), end - pos)
            self._head += bytes(view[pos : pos + take])
            pos += take
            if len(self._head) < want:
                return True
            if ext == 2:
                (n,) = struct.unpack_from("!H", self._head, 2)
            elif ext == 8:
                (n,) = struct.unpack_from("!Q", self._head, 2)
            self._head = b""
            self._skip = n
        return True


class _CheckedReader:
    """aiohttp's WebSocket reader behind a :class:`MaskCheck`."""

    __slots__ = ("check", "inner", "on_violation")

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.check = MaskCheck()
        self.on_violation: Callable[[], None] | None = None

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if not self.check.feed(data):
            if self.on_violation is not None:
                callback, self.on_violation = self.on_violation, None
                callback()
            return False, b""
        result: tuple[bool, bytes] = self.inner.feed_data(data)
        return result

    def feed_eof(self) -> None:
        self.inner.feed_eof()


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

    __slots__ = ("_address", "_deadline", "_guard", "_handed_over", "_reader")

    def __init__(self, guard: ConnectionGuard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._reader: _CheckedReader | None = None
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

    def set_parser(self, parser: Any, data_received_cb: Callable[[], None] | None = None) -> None:
        # WebSocket upgrade: every frame passes the mask check before aiohttp reads it
        self._reader = _CheckedReader(parser)
        super().set_parser(self._reader, data_received_cb)  # type: ignore[arg-type]

    def on_unmasked_frame(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when the client sends an unmasked frame (at once if it
        already has)."""
        reader = self._reader
        if reader is None:
            return
        if reader.check.violated:
            callback()
        else:
            reader.on_violation = callback


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

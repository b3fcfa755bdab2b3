"""A WebSocket connection after its handshake: our asyncio protocol on the raw transport.

aiohttp answers the upgrade request; then :func:`take_over` moves the connection off
aiohttp's per-connection objects (its request handler, request, WebSocket response,
reader and writer: most of what an idle connection used to hold) onto a
:class:`WebSocketProtocol`, which reads frames with :class:`~.wsframes.FrameReader` and
hands messages to a :class:`MessageSink`: the dialect's
:class:`~tickwire.dialects.core.ConnectionCore` for the raw dialects, a Socket.IO
session's WebSocket (:mod:`tickwire.server.socketio`). It closes the connection through
an :class:`Outlet` (the hub's :class:`~tickwire.hub.Connection` for the raw dialects).
The hub writes to the same transport as before, so what it sees of a connection does not
change.

An idle connection holds no task: one is started when a message arrives and ends when
the messages read so far are handled, in order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import hdrs, web
from aiohttp.http import WS_KEY, ws_ext_gen, ws_ext_parse
from aiohttp.web_protocol import RequestHandler

from tickwire.hub.connection import CLOSE_SLOW
from tickwire.hub.frames import close_frame
from tickwire.server.wsframes import (
    CLOSE_NORMAL,
    Binary,
    Close,
    Event,
    Failure,
    FrameReader,
    Ping,
    Pong,
    Text,
    pong_frame,
)

log = logging.getLogger(__name__)

#: Read messages not yet handled, in bytes, above which reading pauses (a client that
#: writes faster than its requests are answered is slowed down, not buffered for).
INBOX_BYTES = 256 * 1024

#: Close code when a bug of ours stops a connection's messages being handled.
CLOSE_INTERNAL = 1011


class MessageSink(Protocol):
    """Where a :class:`WebSocketProtocol` hands the client's messages, one at a time and
    in order (a :class:`~tickwire.dialects.core.ConnectionCore` is one)."""

    async def receive(self, text: str) -> None: ...

    async def receive_binary(self, data: bytes) -> None: ...

    def finish(self) -> None:
        """The connection ended, or is ending (our close frame is sent): called at least
        once, maybe more."""


class Outlet(Protocol):
    """How a :class:`WebSocketProtocol` closes its connection (a hub
    :class:`~tickwire.hub.Connection` is one)."""

    @property
    def id(self) -> int:
        """The connection's number in the logs."""

    @property
    def cap(self) -> int:
        """Bytes the transport may hold unsent before the client counts as slow."""

    @property
    def closed(self) -> bool:
        """Our close frame is sent (or about to be): the client's input is dropped until
        it answers."""

    def close(self, code: int, reason: str | None = None, *, drop: bool = False) -> None:
        """Send what is queued (unless ``drop``), then a close frame with ``code``."""


class OpenConnections:
    """The connections of one node that left aiohttp (which no longer waits for them
    when it shuts down): a node waits for them itself (:meth:`ended`)."""

    def __init__(self) -> None:
        self.protocols: set[WebSocketProtocol] = set()
        self._none_left: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self.protocols)

    def add(self, protocol: WebSocketProtocol) -> None:
        self.protocols.add(protocol)

    def discard(self, protocol: WebSocketProtocol) -> None:
        self.protocols.discard(protocol)
        waiter = self._none_left
        if not self.protocols and waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def ended(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every connection to end (after a drain: for
        each client to answer its close frame), then abort the others; returns how many
        were aborted."""
        if self.protocols:
            waiter = self._none_left = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(waiter), timeout)
            except TimeoutError:
                pass
            finally:
                self._none_left = None
        left = list(self.protocols)
        for protocol in left:
            protocol.transport.abort()
        return len(left)


class WebSocketProtocol(asyncio.Protocol):
    """One client's WebSocket connection after the handshake (see the module docstring).

    ``release`` is called once when the connection ends (the guard's count of open
    connections per address)."""

    __slots__ = (
        "conn",
        "core",
        "ended",
        "inbox",
        "inbox_bytes",
        "opened",
        "paused",
        "reader",
        "registry",
        "release",
        "task",
        "transport",
    )

    def __init__(
        self,
        core: MessageSink,
        conn: Outlet,
        reader: FrameReader,
        transport: asyncio.Transport,
        registry: OpenConnections | None = None,
    ) -> None:
        self.core = core
        self.conn = conn
        self.reader = reader
        self.transport = transport
        self.inbox: deque[Event] | None = None  # made when a message waits
        self.inbox_bytes = 0
        self.task: asyncio.Task[None] | None = None
        self.opened = False
        self.ended = False
        self.paused = False
        self.release: Callable[[], None] | None = None
        self.registry = registry
        if registry is not None:
            registry.add(self)

    async def open(self, opening: Awaitable[object] | None = None) -> None:
        """Await ``opening`` (the core's, say), then handle what the client sent meanwhile."""
        try:
            if opening is not None:
                await opening
        finally:
            self.opened = True
            if self.ended:
                self._finish()
            elif self.inbox:
                self._start()

    # -- asyncio.Protocol -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.ended:
            return
        conn = self.conn
        if self.reader.done:
            # the reader stopped at a failure (or the client's close frame), so no later
            # frame is read (its framing may be lost): what the client sends after our
            # close frame is its answer, or more of what broke the protocol; either way
            # the connection ends now rather than at the drain timeout's abort
            if conn.closed:
                self.transport.close()
            return
        for event in self.reader.feed(data):
            cls = event.__class__
            if cls is Ping:
                if not conn.closed:
                    self._pong(event.payload)  # type: ignore[union-attr]
            elif cls is Pong:
                continue
            elif conn.closed:
                # we sent a close frame: drop what the client still sends until it answers
                # (closing now would reset the connection and destroy what the client has
                # not read yet, our close frame included); then end the connection
                if cls is Close or cls is Failure:
                    self.transport.close()
            else:
                self._enqueue(event)  # handled in order, the client's close frame too

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        if self.task is None and self.opened:
            self._finish()

    # -- inside -----------------------------------------------------------------------

    def _pong(self, payload: bytes) -> None:
        transport = self.transport
        conn = self.conn
        if transport.get_write_buffer_size() + len(payload) + 2 > conn.cap:
            conn.close(CLOSE_SLOW, drop=True)  # pings it does not read the answers of
            return
        transport.write(pong_frame(payload))

    def _enqueue(self, event: Event) -> None:
        inbox = self.inbox
        if inbox is None:
            inbox = self.inbox = deque()
        inbox.append(event)
        self.inbox_bytes += _size(event)
        if self.inbox_bytes > INBOX_BYTES and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        if self.task is None and self.opened:
            self._start()

    def _start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._handle())

    async def _handle(self) -> None:
        """Handle the messages read so far, in order; then end (a later one starts anew)."""
        inbox = self.inbox
        assert inbox is not None
        core = self.core
        try:
            while inbox and not self.ended:
                event = inbox.popleft()
                self.inbox_bytes -= _size(event)
                if self.paused and self.inbox_bytes <= INBOX_BYTES // 2:
                    self.paused = False
                    self.transport.resume_reading()
                if self.conn.closed:
                    if event.__class__ is Close or event.__class__ is Failure:
                        self.transport.close()  # the client answered our close frame
                    continue  # dropped after our close frame (see data_received)
                if event.__class__ is Text:
                    await core.receive(event.data)
                elif event.__class__ is Binary:
                    await core.receive_binary(event.data)
                elif event.__class__ is Close:
                    self._client_closed()
                elif event.__class__ is Failure:
                    # what came before is answered; then the close frame with the code
                    self.conn.close(event.code, event.reason)
                    core.finish()  # its timers stop; the transport waits for the answer
        except Exception:
            log.exception("connection %d: handling a message failed", self.conn.id)
            self.conn.close(CLOSE_INTERNAL, "internal error")
        finally:
            self.task = None
            if self.ended:
                self._finish()
            elif inbox:  # pragma: no cover - only after an exception above
                inbox.clear()
                self.inbox_bytes = 0
            if not inbox:
                self.inbox = None

    def _client_closed(self) -> None:
        """The client closed first: leave the hub, answer its close frame, end."""
        self.core.finish()
        transport = self.transport
        if not transport.is_closing():
            transport.write(close_frame(CLOSE_NORMAL))
            transport.close()

    def _finish(self) -> None:
        self.core.finish()
        self.inbox = None
        release, self.release = self.release, None
        if release is not None:
            release()
        if self.registry is not None:
            self.registry.discard(self)


def _size(event: Event) -> int:
    if event.__class__ is Text:
        return len(event.data) + 64
    if event.__class__ is Binary:
        return len(event.data) + 64
    return 64


class _Tail:
    """Stands in for aiohttp's frame reader for one call: what the client sent right
    after its handshake goes to the protocol."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: WebSocketProtocol) -> None:
        self.protocol = protocol

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.protocol.data_received(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        pass


def take_over(request: web.Request, protocol: WebSocketProtocol) -> None:
    """Move an upgraded request's connection from aiohttp to ``protocol``.

    The bytes the client sent after its handshake (aiohttp holds them for a frame
    reader) go to ``protocol`` now, later ones straight from the transport; aiohttp
    forgets the connection once the handler returns (without closing it), so none of
    its per-connection objects outlive the handshake. A connection accepted by a
    :class:`~tickwire.server.guard.GuardedRequestHandler` keeps its place in the
    per-address count until ``protocol`` ends."""
    handler = request.protocol
    transport = protocol.transport
    if isinstance(handler, RequestHandler):
        release = getattr(handler, "hand_over", None)
        if release is not None:
            protocol.release = release()
        # what comes after the handshake is the protocol's (the frame reader checks masking)
        RequestHandler.set_parser(handler, _Tail(protocol))  # type: ignore[arg-type]
        # the transport is no longer the handler's: it ends its loop when the request is
        # done, without closing the transport (force_close closes only its own)
        handler.transport = None
        handler.force_close()
        task = asyncio.current_task()
        if task is not None:
            # aiohttp's own path for a connection that went away: it drops the handler
            # (and its parser, request and task) once the request is finished
            task.add_done_callback(lambda _: handler.connection_lost(None))
    transport.set_protocol(protocol)


def upgrade(request: web.Request, compress: bool) -> tuple[web.StreamResponse, int]:
    """The 101 response accepting ``request``'s WebSocket handshake (RFC 6455 4.2), and
    the permessage-deflate window bits negotiated with aiohttp's own parser (0: none;
    only when ``compress`` and the client offers it). Raises HTTP 400 as aiohttp's
    ``WebSocketResponse`` does for a request that is not a valid handshake; like it,
    selects no subprotocol."""
    headers = request.headers
    if headers.get(hdrs.UPGRADE, "").lower().strip() != "websocket":
        raise web.HTTPBadRequest(text="No WebSocket UPGRADE hdr: can upgrade only to WebSocket")
    connection = {t.strip() for t in headers.get(hdrs.CONNECTION, "").lower().split(",")}
    if "upgrade" not in connection:
        raise web.HTTPBadRequest(text="No CONNECTION upgrade hdr")
    version = headers.get(hdrs.SEC_WEBSOCKET_VERSION, "")
    if version not in ("13", "8", "7"):
        raise web.HTTPBadRequest(text=f"Unsupported version: {version}")
    key = headers.get(hdrs.SEC_WEBSOCKET_KEY, "")
    try:
        valid = len(base64.b64decode(key)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise web.HTTPBadRequest(text="Handshake error: bad Sec-WebSocket-Key")
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_KEY).digest()).decode()
    response = web.StreamResponse(
        status=101,
        headers={
            hdrs.UPGRADE: "websocket",
            hdrs.CONNECTION: "upgrade",
            hdrs.SEC_WEBSOCKET_ACCEPT: accept,
        },
    )
    wbits = 0
    if compress:
        wbits, notakeover = ws_ext_parse(headers.get(hdrs.SEC_WEBSOCKET_EXTENSIONS), isserver=True)
        if wbits:
            response.headers[hdrs.SEC_WEBSOCKET_EXTENSIONS] = ws_ext_gen(
                compress=wbits, isserver=True, server_notakeover=notakeover
            )
    response.force_close()  # no HTTP keep-alive after an upgrade
    return response, wbits

"""Socket.IO on ``/socket.io/``: Engine.IO 3 and 4, long-polling and WebSocket, serving
the Market Prophit dialect (docs/dialects.md, "Market Prophit").

Our own Engine.IO server rather than python-socketio's: every byte a client gets is a
frame the hub built once and shares (python-socketio encodes per emit and writes through
a queue and task per client), the hub's per-connection byte cap and slow-consumer close
apply unchanged, an idle session costs a few objects and one timer, and Engine.IO 3
(socket.io-client 2.x), which python-engineio does not speak, is the same code.

A session is one Engine.IO connection; this shell keeps its transports (polling,
WebSocket, the upgrade, pings, the recovery store) and hands every Socket.IO packet to
the session's :class:`~tickwire.dialects.core.ConnectionCore`, whose dialect is
:class:`~tickwire.dialects.prophit_socketio.ProphitSocketIO`: identity and expiry, the
rate limit, the channel limit, the errors in a row, entitlements and subscriptions are
the core's, as for every dialect. The core's hub connection carries the session's own
messages (acks, pings, errors) and raw channels; each endpoint view it streams has a hub
connection of its own in the core (a "lane": the view's
:class:`~tickwire.dialects.prophit.ProphitFormat` renders that endpoint's rows once for
every subscriber). All of them write to the session's :class:`SessionTransport`, which
hands the frames to the WebSocket, or keeps their payloads for the next polling GET
(bounded by the same cap).

A WebSocket leaves aiohttp after its handshake, as the raw dialects' do
(:mod:`tickwire.server.wsconn`): our frame reader refuses what RFC 6455 forbids
(unmasked frames, 1002), closes a message over ``max_payload`` with 1009 (engine.io's
``maxHttpBufferSize`` over WebSocket), answers pings and the close handshake, and hands
each text message to the session through its :class:`SessionSocket`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from tickwire.dialects.base import Handshake, dialect_error
from tickwire.dialects.core import ConnectionCore
from tickwire.dialects.prophit import CHANNEL_FORMAT, EndpointError, EventStyle, parse_offset
from tickwire.dialects.prophit_socketio import ProphitSocketIO, SavedSession
from tickwire.dialects.socketio import (
    RECORD_SEPARATOR,
    EioType,
    PacketError,
    decode_payload,
    encode_payload,
    open_packet,
    parse_eio,
)
from tickwire.hub.frames import close_frame, text_frame
from tickwire.model.channels import parse_channel
from tickwire.model.publication import Position
from tickwire.server.node import Node
from tickwire.server.ws import NodeServices, handshake_of, node_services
from tickwire.server.wsconn import OpenConnections, WebSocketProtocol, take_over, upgrade
from tickwire.server.wsframes import CLOSE_NORMAL, FrameReader

log = logging.getLogger(__name__)

_CLOSE_OP = 0x08
#: the longest offset ``,"<channel>|<epoch>|<seq>"]`` (parse_offset's 256 and quotes)
MAX_OFFSET = 262
#: the most view channels whose offsets a write's bytes are searched for (one search
#: each, about 0.5 µs per 4 KB where absent); beyond, its frames are read one by one
MAX_SEARCHED = 16
_EIO_NOOP = b"6"
_EIO_CLOSE = b"1"
#: engine.io's error codes in its HTTP 400 answers (clients show the message).
_UNKNOWN_TRANSPORT, _UNKNOWN_SID, _BAD_METHOD, _BAD_REQUEST, _BAD_VERSION = 0, 1, 2, 3, 5


def split_frames(data: bytes) -> tuple[list[bytes], bool, int | None]:
    """The payloads of the server frames in ``data`` (as the hub writes them: unmasked,
    unfragmented): ``(payloads, changed, closed)``. Empty payloads (a view that shows
    nothing for a publication) are dropped and payloads holding two packets (``\\x1e``)
    split, in which case ``changed`` is true; ``closed`` is the code of a close frame."""
    out: list[bytes] = []
    changed = False
    closed: int | None = None
    i, n = 0, len(data)
    while i + 1 < n:
        op = data[i] & 0x0F
        ln = data[i + 1] & 0x7F
        j = i + 2
        if ln == 126:
            ln = int.from_bytes(data[j : j + 2], "big")
            j += 2
        elif ln == 127:
            ln = int.from_bytes(data[j : j + 8], "big")
            j += 8
        payload = data[j : j + ln]
        i = j + ln
        if op == _CLOSE_OP:
            closed = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
            changed = True
        elif not payload:
            changed = True
        elif RECORD_SEPARATOR in payload:
            out.extend(payload.split(RECORD_SEPARATOR))
            changed = True
        else:
            out.append(payload)
    return out, changed, closed


def last_offset(data: bytes, channel: str) -> Position | None:
    """The newest offset of ``channel`` among the hub's frames in ``data``: the last
    ``,"<channel>|<epoch>|<seq>"]`` that ends a packet, i.e. is followed by the next
    frame's 0x81 or by the end of ``data`` (JSON text never has 0x81 after ``]``, so a
    look-alike inside a packet's data is passed over), read by
    :func:`~tickwire.dialects.prophit.parse_offset` as every offset is."""
    needle = b',"' + channel.encode() + b"|"
    end = n = len(data)
    while (at := data.rfind(needle, 0, end)) >= 0:
        close = data.find(b'"]', at + len(needle), at + MAX_OFFSET)
        if close >= 0 and (close + 2 == n or data[close + 2] == 0x81):
            parsed = parse_offset(data[at + 2 : close].decode("utf-8", "replace"))
            if parsed is not None and parsed[0] == channel:
                return parsed[1]
        end = at  # not where a packet ends: search on before it
    return None


def passes_as_is(data: bytes) -> bool:
    """Whether the hub's frames in ``data`` can go to a WebSocket as they are, without
    reading them frame by frame (:func:`split_frames`): no payload holds two packets
    (``\x1e``, which JSON text never holds raw) and no close frame (0x88). No payload is
    empty: ``ConnectionCore.send`` drops ``b""`` and a view renders what it does not show
    as no frame (:class:`~tickwire.hub.Framed`). Two ``memchr`` in C; conservative: a
    length byte that is 0x1e or 0x88 sends ``data`` the long way, never the other way
    round. (Offsets, which only views' events carry, are :meth:`Session.note_searched`'s.)"""
    return b"\x1e" not in data and b"\x88" not in data


class SessionTransport:
    """The one transport every hub connection of a session writes to (the hub's
    ``Transport`` protocol). WebSocket: frames go to the socket as they are (read one by
    one only where :func:`passes_as_is` or :meth:`Session.note_searched` cannot vouch for
    them). Polling: payloads wait for the next GET."""

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session

    def write(self, data: bytes) -> None:
        s = self.session
        if s.gone:
            return
        ws = s.ws_transport
        if (
            ws is not None
            and not s.upgrading
            and passes_as_is(data)
            and (not s.offsets or not s.core.lanes or s.note_searched(data))
        ):
            ws.write(data)  # the common case: what split_frames would leave as it is
            return
        payloads, changed, closed = split_frames(data)
        if s.offsets:
            s.note_offsets(payloads)
        if ws is not None and not s.upgrading:
            if not changed:
                ws.write(data)
            else:
                out = b"".join(text_frame(p) for p in payloads)
                if closed is not None:
                    out += close_frame(closed)
                if out:
                    ws.write(out)
            if closed is not None and s.ws is not None:
                s.ws.shut(written=True)  # the hub's close frame is on its way
        else:
            s.buffer.extend(payloads)
            s.buffered += sum(len(p) for p in payloads)
            s.wake()
        if closed is not None:
            s.end_by_hub()

    def get_write_buffer_size(self) -> int:
        s = self.session
        ws = s.ws_transport
        return s.buffered + (ws.get_write_buffer_size() if ws is not None else 0)

    def is_closing(self) -> bool:
        return self.session.gone

    def close(self) -> None:
        self.session.end_by_hub()

    def abort(self) -> None:
        self.session.lose()


class SessionSocket:
    """One WebSocket of a session (opened fresh, or the probe of an upgrade from
    polling) as its :class:`~tickwire.server.wsconn.WebSocketProtocol` sees it: the sink
    of the client's messages and the outlet that closes the socket."""

    __slots__ = ("closed", "session", "transport")

    def __init__(self, session: Session, transport: asyncio.Transport) -> None:
        self.session = session
        self.transport = transport
        #: our close frame is sent (or the socket ended): nothing more is written
        self.closed = False

    @property
    def id(self) -> int:
        return self.session.ctl.id

    @property
    def cap(self) -> int:
        return self.session.server.settings.cap

    def current(self) -> bool:
        """Whether this is the socket the session writes to (not a probe, not gone)."""
        s = self.session
        return s.ws is self and not s.upgrading and not s.gone

    async def receive(self, text: str) -> None:
        s = self.session
        if s.gone or s.ws is not self:
            return
        if s.upgrading:
            s.server._upgrade_step(s, self, text)
        else:
            await s.server.packet(s, text)

    async def receive_binary(self, data: bytes) -> None:
        s = self.session
        if s.gone or s.ws is not self:
            return
        s.server.error(s, PacketError("binary_not_supported", "binary messages are not supported"))

    def close(self, code: int, reason: str | None = None, *, drop: bool = False) -> None:
        """The frame reader refused the client's input (or it does not read its pongs):
        the session's socket sends what is queued (unless ``drop``) and a close frame,
        and the session is lost; a probe's close leaves polling as it was."""
        if self.closed:
            return
        if self.current():
            ctl = self.session.ctl
            if not ctl.closed:
                ctl.close(code, reason, drop=drop)  # through SessionTransport: ends it
        self.shut(code, reason or "")
        if self.current():
            self.session.lose()

    def shut(self, code: int = CLOSE_NORMAL, reason: str = "", *, written: bool = False) -> None:
        """Send our close frame (unless one was sent; ``written``: the caller just wrote
        it); the protocol then waits for the client's answer, at most the drain timeout."""
        if self.closed:
            return
        self.closed = True
        transport = self.transport
        if not transport.is_closing():
            if not written:
                transport.write(close_frame(code, reason))
            self.session.server.hub.abort_later(transport)

    def finish(self) -> None:
        """The socket ended or is ending (the client closed, went away, or broke the
        protocol): a probe's end leaves the session polling; the session's own socket
        ending loses the session (kept for recovery)."""
        self.closed = True  # the protocol answers the close handshake itself
        s = self.session
        if s.ws is not self:
            return
        if s.upgrading:
            s.ws = None
            s.upgrading = False
        elif not s.gone:
            s.lose()


@dataclass(slots=True)
class Saved:
    """A dropped session kept for connection-state recovery, until ``timer`` fires."""

    session: SavedSession
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class Settings:
    paths: list[str]
    style: EventStyle
    recovery: float
    ping_interval: float
    ping_timeout: float
    max_payload: int
    connect_timeout: float
    cap: int


class Session:
    """One Engine.IO connection; its default Socket.IO namespace is a
    :class:`~tickwire.dialects.core.ConnectionCore` with the prophit dialect."""

    __slots__ = (
        "__weakref__",
        "address",
        "buffer",
        "buffered",
        "closing",
        "core",
        "ctl",
        "dialect",
        "eio",
        "gone",
        "offsets",
        "sent",
        "server",
        "sid",
        "timer",
        "upgrading",
        "waiter",
        "ws",
        "ws_transport",
    )

    def __init__(
        self, server: SocketIOServer, eio: int, address: str, handshake: Handshake
    ) -> None:
        self.server = server
        self.sid = secrets.token_urlsafe(15)
        self.eio = eio
        self.address = address
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.waiter: asyncio.Future[None] | None = None
        self.ws: SessionSocket | None = None
        self.ws_transport: asyncio.Transport | None = None
        self.upgrading = False
        self.gone = False
        self.closing = False
        st = server.settings
        #: events carry their offset, which the transport notes in ``sent`` (recovery)
        self.offsets = eio == 4 and st.recovery > 0
        self.sent: dict[str, Position] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.dialect = ProphitSocketIO(
            handshake,
            eio=eio,
            style=st.style,
            recovery=self.offsets,
            max_payload=st.max_payload,
            exists=server.node.channel_exists,
            saved=server.take_saved,
        )
        self.ctl = server.hub.connect(SessionTransport(self), CHANNEL_FORMAT, st.cap)
        self.core = ConnectionCore(server.services, self.dialect, self.ctl)
        server.node.cores.add(self.core)  # closed when its key is revoked (server.revocation)

    @property
    def errors(self) -> int:
        """Errors in a row (the core's count)."""
        return self.core.errors_in_a_row

    # -- output -------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """One Engine.IO packet (its text form) to the client, in order with the streams."""
        self.server.hub.send(self.ctl, payload)

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def note_searched(self, data: bytes) -> bool:
        """Note, for each channel the session's views stream, the newest offset in
        ``data`` (:func:`last_offset`, searched from the end) instead of reading every
        frame: a lane writes only its channels' events, each ending with its offset.
        False, nothing noted, beyond :data:`MAX_SEARCHED` channels: reading the frames
        one by one (:meth:`note_offsets`) is then cheaper than a search for each."""
        # a channel two views stream (two lanes) is searched for once
        names = {name for lane in self.core.lanes.values() for name in lane.channels}
        if len(names) > MAX_SEARCHED:
            return False
        sent = self.sent
        for name in names:
            found = last_offset(data, name)
            if found is not None:
                sent[name] = found
        return True

    def note_offsets(self, payloads: list[bytes]) -> None:
        """Remember the last position handed to the client per channel (recovery)."""
        for p in payloads:
            if not p.endswith(b'"]'):
                continue
            start = p.rfind(b',"')
            parsed = parse_offset(p[start + 2 : -2].decode()) if start > 0 else None
            if parsed is not None:
                self.sent[parsed[0]] = parsed[1]

    def take(self) -> bytes:
        """The polling response: everything buffered (a noop when nothing is)."""
        packets, self.buffer, self.buffered = self.buffer, [], 0
        if self.closing:
            packets.append(_EIO_CLOSE)
            self.finish()
        return encode_payload(packets or [_EIO_NOOP], self.eio)

    # -- lifetime -----------------------------------------------------------------------

    def end_by_hub(self) -> None:
        """The hub closed a connection of this session (slow consumer, shutdown, or our
        own close after the last message): the client is told by a close."""
        if self.gone or self.closing:
            return
        if self.ws is not None and not self.upgrading:
            self.ws.shut()  # unless the close frame from the hub passed already
            self.lose()
            return
        self.closing = True  # polling: the next GET gets what is left and the close
        self._leave_hub()
        self.wake()
        self.server.later(self, self.server.settings.ping_timeout, self.lose)

    def lose(self) -> None:
        """The connection is gone without a clean close: keep it for recovery."""
        if self.gone:
            return
        self.server.save(self)
        self.finish()

    def finish(self) -> None:
        """Forget the session: leave the hub, cancel timers."""
        if self.gone:
            return
        self.gone = True
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
        self.core.finish()
        self.wake()
        self.server.forget(self)
        if self.ws is not None:
            self.ws.shut()

    def _leave_hub(self) -> None:
        hub = self.server.hub
        for conn in (self.ctl, *self.core.lanes.values()):
            if not conn.closed:
                hub.disconnect(conn)

    def close_after_flush(self, code: int = 1000) -> None:
        """Send what is queued, then close (WebSocket close or a polling close packet)."""
        self.core.close(code, "")

    def saved(self) -> SavedSession | None:
        """What recovery keeps of this session if it drops now (None: nothing)."""
        d = self.dialect
        if not (d.pid and d.connected):
            return None
        held = self.core.subscriptions()
        if not held:
            return None
        positions = dict(d.positions)
        for name, sent in self.sent.items():  # what was handed out since it started
            start = positions.get(name)
            if start is None or (start.epoch == sent.epoch and sent.seq >= start.seq):
                positions[name] = sent
        user_id = self.core.principal.user_id
        return SavedSession(
            user_id, [(view, parse_channel(name), positions.get(name)) for view, name in held]
        )


class SocketIOServer:
    """Every Engine.IO session of one node, and the aiohttp handler serving them."""

    def __init__(
        self, node: Node, settings: Settings, sockets: OpenConnections | None = None
    ) -> None:
        self.node = node
        self.hub = node.hub
        self.settings = settings
        self.sessions: dict[str, Session] = {}
        self.saved: dict[str, Saved] = {}
        #: what each session's connection core needs (the node's, with Socket.IO's limits)
        self.services = NodeServices(node)
        self.services.limits = dataclasses.replace(
            self.services.limits, max_frame_bytes=settings.max_payload
        )
        #: the node's open WebSocket connections, which it waits for after a drain
        self.sockets = sockets if sockets is not None else OpenConnections()

    # -- bookkeeping ----------------------------------------------------------------------

    def later(self, session: Session, delay: float, callback: Callable[[], None]) -> None:
        if session.timer is not None:
            session.timer.cancel()
        session.timer = asyncio.get_running_loop().call_later(delay, callback)

    def forget(self, session: Session) -> None:
        if self.sessions.get(session.sid) is session:
            del self.sessions[session.sid]

    def save(self, s: Session) -> None:
        saved = s.saved() if self.settings.recovery > 0 else None
        pid = s.dialect.pid
        if saved is None or pid is None:
            return
        entry = Saved(saved)
        entry.timer = asyncio.get_running_loop().call_later(
            self.settings.recovery, self.saved.pop, pid, None
        )
        self.saved[pid] = entry

    def take_saved(self, pid: str) -> SavedSession | None:
        """The dropped session saved under ``pid`` (it is kept no longer)."""
        entry = self.saved.pop(pid, None)
        if entry is None:
            return None
        if entry.timer is not None:
            entry.timer.cancel()
        return entry.session

    # -- HTTP -------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        eio = q.get("EIO")
        if eio not in ("3", "4"):
            return _refuse(_BAD_VERSION, "Unsupported protocol version", 400)
        transport = q.get("transport")
        if transport not in ("polling", "websocket"):
            return _refuse(_UNKNOWN_TRANSPORT, "Transport unknown", 400)
        if "j" in q:
            return _refuse(_BAD_REQUEST, "JSONP polling is not supported", 400)
        address = _address(request)
        sid = q.get("sid")
        if sid is None:
            if self.node.draining:
                return _refuse(_BAD_REQUEST, "draining: connect to another node", 503)
            if request.method != "GET":
                return _refuse(_BAD_METHOD, "Bad handshake method", 400)
            session = Session(self, int(eio), address, handshake_of(request))
            self.sessions[session.sid] = session
            if transport == "websocket":
                return await self._websocket(request, session, fresh=True)
            await self._opened(session)
            return await self._poll(request, session)
        session_or_none = self.sessions.get(sid)
        if (
            session_or_none is None
            or session_or_none.address != address
            or session_or_none.eio != int(eio)
        ):
            return _refuse(_UNKNOWN_SID, "Session ID unknown", 400)
        session = session_or_none
        if transport == "websocket":
            if session.ws is not None:
                return _refuse(_BAD_REQUEST, "already upgraded", 400)
            return await self._websocket(request, session, fresh=False)
        if session.ws is not None and not session.upgrading:
            return _refuse(_BAD_REQUEST, "the session uses WebSocket now", 400)
        if request.method == "GET":
            return await self._poll(request, session)
        if request.method == "POST":
            return await self._post(request, session)
        return _refuse(_BAD_METHOD, "Bad request method", 400)

    def _polling_response(self, request: web.Request, body: bytes) -> web.Response:
        ctype = "text/plain; charset=UTF-8"
        return web.Response(body=body, headers={"Content-Type": ctype, "Cache-Control": "no-store"})

    async def _poll(self, request: web.Request, session: Session) -> web.StreamResponse:
        if session.waiter is not None:  # two GETs at once: not the client we know
            session.finish()
            return _refuse(_BAD_REQUEST, "overlapping polling request", 400)
        if not session.buffer and not session.closing:
            session.waiter = asyncio.get_running_loop().create_future()
            try:
                await session.waiter
            finally:
                session.waiter = None
        return self._polling_response(request, session.take())

    async def _post(self, request: web.Request, session: Session) -> web.StreamResponse:
        limit = self.settings.max_payload
        if request.content_length is not None and request.content_length > limit:
            session.finish()
            return _refuse(_BAD_REQUEST, f"payload exceeds {limit} bytes", 413)
        body = await request.content.read(limit + 1)
        if len(body) > limit:
            session.finish()
            return _refuse(_BAD_REQUEST, f"payload exceeds {limit} bytes", 413)
        try:
            packets = decode_payload(body, session.eio)
        except PacketError as exc:
            return _refuse(_BAD_REQUEST, exc.message, 400)
        for text in packets:
            if session.gone:
                break
            await self.packet(session, text)
        return web.Response(text="ok", content_type="text/html")

    async def _websocket(
        self, request: web.Request, session: Session, *, fresh: bool
    ) -> web.StreamResponse:
        """Accept the WebSocket handshake, then serve the socket off aiohttp: a fresh
        session's transport from the start, or the probe of an upgrade from polling."""
        try:
            response, wbits = upgrade(request, compress=True)
        except web.HTTPBadRequest:
            if fresh:
                session.finish()
            raise
        await response.prepare(request)
        transport = request.transport
        if transport is None or transport.is_closing():  # pragma: no cover - peer vanished
            session.finish()
            return response
        sock = SessionSocket(session, transport)
        reader = FrameReader(self.settings.max_payload, deflate=bool(wbits))
        protocol = WebSocketProtocol(sock, sock, reader, transport, self.sockets)
        session.ws = sock
        take_over(request, protocol)
        if fresh:
            session.ws_transport = transport
            await protocol.open(self._opened(session))
        else:
            session.upgrading = True
            await protocol.open()
        return response

    def _upgrade_step(self, session: Session, sock: SessionSocket, data: str) -> None:
        """A message on the probe socket of an upgrade: ``2probe``, then ``5``."""
        transport = sock.transport
        if data == "2probe":
            transport.write(text_frame(b"3probe"))
            session.buffer.append(_EIO_NOOP)  # ends the pending GET: the client pauses
            session.wake()
        elif data == "5":
            session.ws_transport = transport
            session.upgrading = False
            pending = [p for p in session.buffer if p != _EIO_NOOP]
            session.buffer, session.buffered = [], 0
            session.wake()
            if pending:
                transport.write(b"".join(text_frame(p) for p in pending))
        else:
            self.error(session, PacketError("bad_packet", "expected 2probe then 5 to upgrade"))

    async def _opened(self, session: Session) -> None:
        """The session exists: send the open packet (and, Engine.IO 3, connect "/")."""
        st = self.settings
        upgrades = [] if session.ws_transport is not None else ["websocket"]
        session.send(
            open_packet(
                session.sid,
                upgrades,
                st.ping_interval,
                st.ping_timeout,
                st.max_payload,
                session.eio,
            )
        )
        if session.eio == 4:
            self.later(session, st.ping_interval, lambda: self._ping(session))
            self._connect_deadline(session)
        else:
            self.later(session, st.ping_interval + st.ping_timeout, session.lose)
        await session.core.open()  # Engine.IO 3: connects "/" with the query's token

    def _connect_deadline(self, session: Session) -> None:
        def check() -> None:
            if not session.dialect.connected and not session.gone:
                session.close_after_flush()

        asyncio.get_running_loop().call_later(self.settings.connect_timeout, check)

    def _ping(self, session: Session) -> None:
        if session.gone:
            return
        session.send(b"2")
        self.later(session, self.settings.ping_timeout, session.lose)

    # -- packets ----------------------------------------------------------------------------

    def error(self, session: Session, exc: PacketError | EndpointError) -> None:
        """Tell the client (an ``err`` event once connected); too many in a row close
        (the core's errors-in-a-row policy)."""
        session.core.fail(dialect_error(exc))

    async def packet(self, session: Session, text: str) -> None:
        """One Engine.IO packet from the client."""
        try:
            pkt = parse_eio(text)
        except PacketError as exc:
            self.error(session, exc)
            return
        kind = pkt.type
        st = self.settings
        if kind is EioType.MESSAGE:  # a Socket.IO packet: the core's (rate limit first)
            await session.core.receive(pkt.data)
        elif kind is EioType.PONG and session.eio == 4:
            self.later(session, st.ping_interval, lambda: self._ping(session))
        elif kind is EioType.PING and session.eio == 3:
            session.send(b"3" + pkt.data.encode())
            self.later(session, st.ping_interval + st.ping_timeout, session.lose)
        elif kind is EioType.PING and pkt.data == "probe":
            session.send(b"3probe")
        elif kind is EioType.CLOSE:
            session.finish()
        elif kind is EioType.NOOP:
            pass
        else:
            self.error(
                session,
                PacketError("bad_packet", f"unexpected Engine.IO packet {kind.name.lower()}"),
            )


def _refuse(code: int, message: str, status: int) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def _address(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if peer else ""


SOCKETIO_KEY: web.AppKey[SocketIOServer] = web.AppKey("socketio", SocketIOServer)


def install_socketio(app: web.Application, node: Node) -> SocketIOServer:
    """Serve Socket.IO (the prophit dialect) on the configured paths."""
    cfg = node.config
    settings = Settings(
        paths=list(cfg.prophit_paths),
        style=cfg.prophit_events,  # type: ignore[arg-type]
        recovery=cfg.prophit_recovery,
        ping_interval=cfg.prophit_ping_interval,
        ping_timeout=cfg.prophit_ping_timeout,
        max_payload=cfg.prophit_max_payload,
        connect_timeout=cfg.prophit_connect_timeout,
        cap=cfg.max_queue_bytes,
    )
    server = SocketIOServer(node, settings, node_services(app, node).sockets)
    app[SOCKETIO_KEY] = server
    for path in settings.paths:
        app.router.add_route("GET", path, server.handle)
        app.router.add_route("POST", path, server.handle)
    return server


__all__ = [
    "SessionSocket",
    "SessionTransport",
    "SocketIOServer",
    "install_socketio",
    "last_offset",
    "passes_as_is",
    "split_frames",
]

"""Socket.IO on ``/socket.io/``: Engine.IO 3 and 4, long-polling and WebSocket, serving
the Market Prophit dialect (docs/dialects.md, "Market Prophit").

Our own Engine.IO server rather than python-socketio's: every byte a client gets is a
frame the hub built once and shares (python-socketio encodes per emit and writes through
a queue and task per client), the hub's per-connection byte cap and slow-consumer close
apply unchanged, an idle session costs a few objects and one timer, and Engine.IO 3
(socket.io-client 2.x), which python-engineio does not speak, is the same code.

A session is one Engine.IO connection with the default namespace. It holds one hub
:class:`~tickwire.hub.Connection` for its own messages (acks, pings, errors) and one per
endpoint it streams ("lanes": a lane's :class:`~tickwire.dialects.prophit.ProphitFormat`
renders that endpoint's view of the channel once for every subscriber). All of them
write to the session's :class:`SessionTransport`, which hands the frames to the
WebSocket, or keeps their payloads for the next polling GET (bounded by the same cap).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from tickwire.auth import ANONYMOUS, AuthError, Principal, authorize
from tickwire.dialects.prophit import (
    CHANNEL_FORMAT,
    EndpointError,
    EventStyle,
    Request,
    check_method,
    entitle,
    parse_offset,
    prophit_format,
    resolve,
)
from tickwire.dialects.socketio import (
    RECORD_SEPARATOR,
    EioType,
    PacketError,
    SioType,
    decode_payload,
    encode_payload,
    open_packet,
    parse_eio,
    parse_sio,
    sio_ack,
    sio_event,
    sio_packet,
)
from tickwire.engine.base import EngineError
from tickwire.hub import CLOSE_KEY_REVOKED, CLOSE_TOKEN_EXPIRED, Catchup, Connection
from tickwire.hub.frames import close_frame, text_frame
from tickwire.hub.wire import WireFormat
from tickwire.model.channels import Channel, ChannelError, parse_channel
from tickwire.model.publication import Position
from tickwire.model.ratelimit import TokenBucket
from tickwire.server.node import Node

log = logging.getLogger(__name__)

_CLOSE_OP = 0x08
_EIO_NOOP = b"6"
_EIO_CLOSE = b"1"
#: Errors in a row after which a session is closed.
MAX_ERRORS_IN_A_ROW = 50
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


class SessionTransport:
    """The one transport every hub connection of a session writes to (the hub's
    ``Transport`` protocol). WebSocket: frames go to the socket as they are (re-framed
    only where a payload held two packets). Polling: payloads wait for the next GET."""

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session

    def write(self, data: bytes) -> None:
        s = self.session
        if s.gone:
            return
        payloads, changed, closed = split_frames(data)
        if s.offsets:
            s.note_offsets(payloads)
        ws = s.ws_transport
        if ws is not None and not s.upgrading:
            if not changed:
                ws.write(data)
            else:
                out = b"".join(text_frame(p) for p in payloads)
                if closed is not None:
                    out += close_frame(closed)
                if out:
                    ws.write(out)
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


@dataclass(slots=True)
class Subscription:
    """One stream of a session: an endpoint view (``request``) or a raw channel."""

    channel: Channel
    fmt: WireFormat
    request: Request | None
    position: Position | None = None


@dataclass(slots=True)
class Saved:
    """A dropped session kept for connection-state recovery."""

    user_id: str | None
    subs: dict[tuple[str, str], Subscription]
    positions: dict[str, Position]
    expires: float
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
    max_subscriptions: int
    requests_per_second: float


class Session:
    """One Engine.IO connection and its default Socket.IO namespace."""

    __slots__ = (
        "__weakref__",
        "address",
        "bucket",
        "buffer",
        "buffered",
        "closing",
        "ctl",
        "eio",
        "errors",
        "expiry",
        "gone",
        "lanes",
        "offsets",
        "pid",
        "principal",
        "query_token",
        "sent",
        "server",
        "sid",
        "sio_sid",
        "subs",
        "timer",
        "upgrading",
        "waiter",
        "ws",
        "ws_transport",
    )

    def __init__(
        self, server: SocketIOServer, eio: int, address: str, query_token: str | None
    ) -> None:
        self.server = server
        self.sid = secrets.token_urlsafe(15)
        self.eio = eio
        self.address = address
        self.query_token = query_token
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.waiter: asyncio.Future[None] | None = None
        self.ws: web.WebSocketResponse | None = None
        self.ws_transport: asyncio.Transport | None = None
        self.upgrading = False
        self.gone = False
        self.closing = False
        self.principal: Principal | None = None
        self.sio_sid: str | None = None
        self.pid: str | None = None
        self.offsets = False
        self.sent: dict[str, Position] = {}
        self.subs: dict[tuple[str, str], Subscription] = {}
        self.lanes: dict[WireFormat, Connection] = {}
        self.errors = 0
        self.timer: asyncio.TimerHandle | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.bucket = TokenBucket(
            server.settings.requests_per_second,
            2 * server.settings.requests_per_second,
            time.monotonic(),
        )
        self.ctl = server.hub.connect(SessionTransport(self), CHANNEL_FORMAT, server.settings.cap)

    # -- output -------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """One Engine.IO packet (its text form) to the client, in order with the streams."""
        self.server.hub.send(self.ctl, payload)

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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
        if self.ws_transport is not None and not self.upgrading:
            self.ws_transport.close()
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
        for t in (self.timer, self.expiry):
            if t is not None:
                t.cancel()
        self._leave_hub()
        self.wake()
        self.server.forget(self)
        if self.ws is not None and self.ws_transport is not None:
            if not self.ws_transport.is_closing():
                self.ws_transport.close()

    def _leave_hub(self) -> None:
        hub = self.server.hub
        for conn in (self.ctl, *self.lanes.values()):
            if not conn.closed:
                hub.disconnect(conn)

    def close_after_flush(self, code: int = 1000) -> None:
        """Send what is queued, then close (WebSocket close or a polling close packet)."""
        self.ctl.close(code, "")
        for lane in self.lanes.values():
            if not lane.closed:
                self.server.hub.disconnect(lane)

    def end_with(self, error: EndpointError, code: int) -> bool:
        """End a connected session for good: an ``err`` event with ``error`` (and the
        ``close`` code a WebSocket dialect would close with), a Socket.IO ``DISCONNECT``
        (a server disconnect: socket.io-client 2 and 4 do not reconnect after one), then
        the Engine.IO close once that is sent. Nothing is kept for recovery. False when
        the session was ending already."""
        if self.gone or self.closing:
            return False
        self.pid = None  # a new credential is needed: nothing to recover
        self.send(sio_event("err", {**error.body(), "close": code}))
        self.send(sio_packet(SioType.DISCONNECT))
        self.close_after_flush(code)
        return True

    def revoked(self, key_names: Collection[str]) -> bool:
        """End the session (``key_revoked``, close 3504) if it acts with one of
        ``key_names``, revoked in the key store; True if it did."""
        principal = self.principal
        if principal is None or principal.key_name not in key_names:
            return False
        error = EndpointError(
            401, "key_revoked", "key revoked: this session's key was revoked (tickwire keys revoke)"
        )
        return self.end_with(error, CLOSE_KEY_REVOKED)

    def lane(self, fmt: WireFormat) -> Connection:
        conn = self.lanes.get(fmt)
        if conn is None:
            conn = self.lanes[fmt] = self.server.hub.connect(
                self.ctl.transport, fmt, self.server.settings.cap
            )
        return conn


class SocketIOServer:
    """Every Engine.IO session of one node, and the aiohttp handler serving them."""

    def __init__(self, node: Node, settings: Settings) -> None:
        self.node = node
        self.hub = node.hub
        self.settings = settings
        self.sessions: dict[str, Session] = {}
        self.saved: dict[str, Saved] = {}

    # -- bookkeeping ----------------------------------------------------------------------

    def later(self, session: Session, delay: float, callback: Callable[[], None]) -> None:
        if session.timer is not None:
            session.timer.cancel()
        session.timer = asyncio.get_running_loop().call_later(delay, callback)

    def forget(self, session: Session) -> None:
        if self.sessions.get(session.sid) is session:
            del self.sessions[session.sid]

    def save(self, s: Session) -> None:
        if not (s.pid and self.settings.recovery > 0 and s.subs and s.principal):
            return
        positions = {
            sub.channel.name: sub.position for sub in s.subs.values() if sub.position is not None
        }
        positions.update(s.sent)
        saved = Saved(
            s.principal.user_id, dict(s.subs), positions, time.monotonic() + self.settings.recovery
        )
        saved.timer = asyncio.get_running_loop().call_later(
            self.settings.recovery, self.saved.pop, s.pid, None
        )
        self.saved[s.pid] = saved

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
            session = Session(self, int(eio), address, q.get("token"))
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
        ws = web.WebSocketResponse(autoping=True, max_msg_size=self.settings.max_payload)
        await ws.prepare(request)
        transport = request.transport
        if transport is None:  # pragma: no cover - the peer vanished during the handshake
            session.finish()
            return ws
        session.ws = ws
        if fresh:
            session.ws_transport = transport
            await self._opened(session)
        else:
            session.upgrading = True
        try:
            async for msg in ws:
                if session.gone:
                    break
                if msg.type == WSMsgType.TEXT:
                    data: str = msg.data
                    if session.upgrading:
                        self._upgrade_step(session, transport, ws, data)
                    else:
                        await self.packet(session, data)
                elif msg.type == WSMsgType.BINARY:
                    self.error(
                        session,
                        PacketError("binary_not_supported", "binary messages are not supported"),
                    )
                else:
                    break
        finally:
            if session.upgrading:  # the probe failed: polling goes on
                session.ws = None
                session.upgrading = False
            elif not session.gone:
                session.lose()
        return ws

    def _upgrade_step(
        self, session: Session, transport: asyncio.Transport, ws: web.WebSocketResponse, data: str
    ) -> None:
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
            await self.connect(session, None, None)

    def _connect_deadline(self, session: Session) -> None:
        def check() -> None:
            if session.principal is None and not session.gone:
                session.close_after_flush()

        asyncio.get_running_loop().call_later(self.settings.connect_timeout, check)

    def _ping(self, session: Session) -> None:
        if session.gone:
            return
        session.send(b"2")
        self.later(session, self.settings.ping_timeout, session.lose)

    # -- packets ----------------------------------------------------------------------------

    def error(self, session: Session, exc: PacketError | EndpointError) -> None:
        """Tell the client (an ``err`` event once connected); too many in a row close."""
        if isinstance(exc, PacketError):
            body = {
                "type": "invalid_request_error",
                "code": exc.code,
                "message": exc.message,
                "status": 400,
            }
        else:
            body = exc.body()
        if session.principal is not None:
            session.send(sio_event("err", body))
        session.errors += 1
        if session.errors >= MAX_ERRORS_IN_A_ROW:
            session.close_after_flush()

    async def packet(self, session: Session, text: str) -> None:
        """One Engine.IO packet from the client."""
        try:
            pkt = parse_eio(text)
        except PacketError as exc:
            self.error(session, exc)
            return
        kind = pkt.type
        st = self.settings
        if kind is EioType.MESSAGE:
            if not session.bucket.take(time.monotonic()):
                self.error(session, PacketError("rate_limited", "too many requests: slow down"))
                return
            try:
                sio = parse_sio(pkt.data, max_bytes=st.max_payload)
            except PacketError as exc:
                self.error(session, exc)
                return
            await self.socketio(session, sio)
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

    async def socketio(self, session: Session, pkt: Any) -> None:
        if pkt.namespace != "/":
            session.send(
                sio_packet(
                    SioType.CONNECT_ERROR, {"message": "Invalid namespace"}, namespace=pkt.namespace
                )
            )
            return
        if pkt.type is SioType.CONNECT:
            if session.eio == 3 or session.principal is not None:
                self.error(session, PacketError("bad_packet", "already connected"))
                return
            auth = pkt.data if isinstance(pkt.data, dict) else {}
            await self.connect(session, auth, pkt.data)
            return
        if session.principal is None:
            self.error(session, PacketError("bad_packet", "connect the namespace first"))
            return
        if pkt.type is SioType.DISCONNECT:
            session.finish()
        elif pkt.type is SioType.EVENT:
            await self.event(session, pkt.ack, pkt.data)
        elif pkt.type is SioType.ACK:
            pass  # we never ask the client for acks
        else:
            self.error(
                session,
                PacketError("bad_packet", f"unexpected Socket.IO packet {pkt.type.name.lower()}"),
            )

    # -- connecting -------------------------------------------------------------------------

    def _refuse_connect(self, session: Session, err: EndpointError) -> None:
        body = err.body()
        if session.eio == 4:
            session.send(sio_packet(SioType.CONNECT_ERROR, {"message": err.message, "data": body}))
        else:  # Socket.IO 2: an ERROR packet, which the client emits as 'error'
            session.send(sio_packet(SioType.CONNECT_ERROR, {**body}))

    async def connect(self, session: Session, auth: dict[str, Any] | None, raw: Any) -> None:
        """Connect the default namespace: ``token`` from the auth payload or the query."""
        token: object = session.query_token
        if auth and "token" in auth:
            token = auth["token"]
        if token is None:
            principal = ANONYMOUS
        elif not isinstance(token, str) or not 0 < len(token) <= 8192:
            self._refuse_connect(
                session,
                EndpointError(
                    401, "unauthorized", "token must be a string of 1 to 8192 characters"
                ),
            )
            return
        else:
            verify = self.node.verify_token
            try:
                if verify is None:
                    raise AuthError("unauthorized", "this server does not accept tokens")
                principal = await verify(token)
            except AuthError as exc:
                self._refuse_connect(session, EndpointError(401, exc.code, exc.message))
                return
        if session.gone:
            return
        session.principal = principal
        self.node.cores.add(session)  # ended when its key is revoked (server.revocation)
        session.sio_sid = secrets.token_urlsafe(15)
        st = self.settings
        restored: list[tuple[Connection, Catchup]] = []
        recovered = False
        if session.eio == 4 and st.recovery > 0:
            session.offsets = True
            pid = auth.get("pid") if auth else None
            saved = self.saved.pop(pid, None) if isinstance(pid, str) else None
            if saved is not None and saved.user_id == principal.user_id:
                if saved.timer is not None:
                    saved.timer.cancel()
                restored, recovered = await self._restore(session, saved, auth)
                if recovered:
                    session.pid = pid
            session.pid = session.pid or secrets.token_urlsafe(15)
        if session.gone:
            return
        if session.eio == 4:
            reply: dict[str, Any] = {"sid": session.sio_sid}
            if session.pid is not None:
                reply["pid"] = session.pid
            session.send(sio_packet(SioType.CONNECT, reply))
        else:
            session.send(sio_packet(SioType.CONNECT))
        for conn, catchup in restored:  # after the reply: nothing slips in between
            self.hub.go_live(conn, catchup)
        self._schedule_expiry(session, principal)

    async def _restore(
        self, session: Session, saved: Saved, auth: dict[str, Any] | None
    ) -> tuple[list[tuple[Connection, Catchup]], bool]:
        """Resubscribe a dropped session's streams from where the client stood."""
        positions = dict(saved.positions)
        told = parse_offset(auth.get("offset")) if auth else None
        if told is not None and told[0] in positions:
            positions[told[0]] = told[1]
        out: list[tuple[Connection, Catchup]] = []
        recovered = True
        for key, sub in saved.subs.items():
            if sub.request is not None:
                try:
                    entitle(session.principal or ANONYMOUS, sub.request, streaming=True)
                except EndpointError:
                    recovered = False
                    continue
            conn = session.lane(sub.fmt)
            since = positions.get(sub.channel.name)
            try:
                catchup = await self.hub.subscribe(
                    conn, sub.channel.name, sub.channel.stateful, since
                )
            except (EngineError, ConnectionError):
                recovered = False
                continue
            recovered = recovered and bool(catchup.recovered)
            sub.position = catchup.position
            session.subs[key] = sub
            out.append((conn, catchup))
        return out, recovered

    def _schedule_expiry(self, session: Session, principal: Principal) -> None:
        if principal.expires_at is None:
            return
        delay = max(0.0, principal.expires_at - time.time())

        def expired() -> None:
            session.end_with(
                EndpointError(
                    401,
                    "token_expired",
                    "token expired: get a new one with POST /jwt and reconnect",
                ),
                CLOSE_TOKEN_EXPIRED,
            )

        session.expiry = asyncio.get_running_loop().call_later(delay, expired)

    # -- events -----------------------------------------------------------------------------

    async def event(self, session: Session, ack: int | None, data: Any) -> None:
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            self._answer(
                session, ack, PacketError("bad_packet", "an event is [name, ...arguments]")
            )
            return
        name = data[0]
        arg = data[1] if len(data) > 1 else None
        started: list[tuple[Connection, Catchup]] = []
        try:
            if name == "subscribe":
                started = await self.subscribe(session, arg)
            elif name == "unsubscribe":
                self.unsubscribe(session, arg)
            else:
                raise EndpointError(
                    400,
                    "unknown_event",
                    f"unknown event {name[:40]!r} (expected subscribe, unsubscribe)",
                )
        except EndpointError as exc:
            self._answer(session, ack, exc)
            return
        except (EngineError, ConnectionError):
            log.warning("prophit subscribe failed", exc_info=True)
            self._answer(
                session,
                ack,
                EndpointError(
                    500,
                    "unavailable",
                    "cannot subscribe now: the data store is unreachable; retry",
                    type="api_error",
                ),
            )
            return
        session.errors = 0
        self._answer(session, ack, None)
        for conn, catchup in started:  # after the ack, with nothing in between
            self.hub.go_live(conn, catchup)

    def _answer(
        self, session: Session, ack: int | None, error: EndpointError | PacketError | None
    ) -> None:
        if error is not None and ack is None:
            self.error(session, error)
            return
        if error is not None:
            session.errors += 1
        if ack is None:
            return
        if error is None:
            session.send(sio_ack(ack, None))
        elif isinstance(error, EndpointError):
            session.send(sio_ack(ack, error.body()))
        else:
            session.send(
                sio_ack(
                    ack,
                    {
                        "type": "invalid_request_error",
                        "code": error.code,
                        "message": error.message,
                        "status": 400,
                    },
                )
            )

    def _items(self, session: Session, arg: Any) -> list[tuple[tuple[str, str], Subscription]]:
        """What a subscribe or unsubscribe names: an endpoint view, or raw channels."""
        if not isinstance(arg, dict):
            raise EndpointError(
                400, "bad_request", "the argument must be an object {path, method, params}"
            )
        principal = session.principal or ANONYMOUS
        if "channels" in arg and "path" not in arg:
            return self._channel_items(principal, arg.get("channels"))
        unknown = sorted(str(k) for k in arg if k not in ("path", "method", "params"))
        if unknown:
            raise EndpointError(
                400,
                "bad_request",
                f"unknown field {unknown[0][:40]!r} (expected path, method, params)",
            )
        check_method(arg.get("method"))
        req = resolve(arg.get("path"), arg.get("params"), self.node.channel_exists)
        if principal.anonymous:
            raise EndpointError(
                401, "unauthorized", "connect with a token from POST /jwt to stream endpoints"
            )
        entitle(principal, req, streaming=True)
        fmt = prophit_format(req.endpoint, self.settings.style, session.offsets)
        return [((req.endpoint.name, req.channel.name), Subscription(req.channel, fmt, req))]

    def _channel_items(
        self, principal: Principal, names: Any
    ) -> list[tuple[tuple[str, str], Subscription]]:
        if not isinstance(names, list) or not names or len(names) > 1000:
            raise EndpointError(
                400, "bad_request", "channels must be a list of 1 to 1000 channel names"
            )
        out = []
        for raw in names:
            if isinstance(raw, dict):
                raw = raw.get("channel")
            try:
                channel = parse_channel(raw)
            except ChannelError as exc:
                raise EndpointError(400, exc.code, exc.message) from None
            if not channel.private and not self.node.channel_exists(channel):
                raise EndpointError(
                    404, "unknown_channel", f"channel {channel.name!r}: unknown symbol"
                )
            denied = authorize(principal, channel)
            if denied is not None:
                raise EndpointError(
                    403 if denied.code == "forbidden" else 401, denied.code, denied.message
                )
            out.append((("", channel.name), Subscription(channel, CHANNEL_FORMAT, None)))
        return out

    async def subscribe(self, session: Session, arg: Any) -> list[tuple[Connection, Catchup]]:
        items = [(k, s) for k, s in self._items(session, arg) if k not in session.subs]
        limit = self.settings.max_subscriptions
        if len(session.subs) + len(items) > limit:
            raise EndpointError(
                400, "too_many_subscriptions", f"a session may hold at most {limit} subscriptions"
            )
        started: list[tuple[Connection, Catchup]] = []
        try:
            for key, sub in items:
                conn = session.lane(sub.fmt)
                catchup = await self.hub.subscribe(
                    conn, sub.channel.name, sub.channel.stateful, None
                )
                sub.position = catchup.position
                session.subs[key] = sub
                started.append((conn, catchup))
        except BaseException:
            for key, sub in items:  # all or nothing
                if session.subs.pop(key, None) is not None:
                    self.hub.unsubscribe(session.lane(sub.fmt), sub.channel.name)
            raise
        return started

    def unsubscribe(self, session: Session, arg: Any) -> None:
        items = self._items(session, arg)
        missing = [k for k, _ in items if k not in session.subs]
        if missing:
            what = missing[0][0] or "channel"
            raise EndpointError(
                400, "not_subscribed", f"not subscribed to {what} for {missing[0][1]!r}"
            )
        for key, _ in items:
            sub = session.subs.pop(key)
            self.hub.unsubscribe(session.lane(sub.fmt), sub.channel.name)
            session.sent.pop(sub.channel.name, None)


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
        max_subscriptions=cfg.max_channels,
        requests_per_second=cfg.max_requests_per_second,
    )
    server = SocketIOServer(node, settings)
    app[SOCKETIO_KEY] = server
    for path in settings.paths:
        app.router.add_route("GET", path, server.handle)
        app.router.add_route("POST", path, server.handle)
    return server


__all__ = ["SessionTransport", "SocketIOServer", "install_socketio", "split_frames"]

"""Market Prophit over Socket.IO as a dialect of the connection core, sans-I/O.

The Engine.IO server (``tickwire.server.socketio``) keeps the transports — polling,
WebSocket, the upgrade, pings — and hands each Socket.IO packet (the payload of an
Engine.IO ``message``) to the session's
:class:`~tickwire.dialects.core.ConnectionCore`, which owns what every dialect shares:
the principal and its expiry, the rate limit, the channel limit over every view, the
errors-in-a-row policy, entitlements and all-or-nothing subscribe. This dialect only
translates:

- ``CONNECT`` (Socket.IO 5; Engine.IO 3 connects at open) → :class:`Authenticate` with
  the token of the auth payload or the query, then :class:`Resume` of a dropped session
  the client names by ``pid`` (connection-state recovery); the ``CONNECT`` reply is the
  rendering of :class:`Resumed`, so it carries the old ``pid`` only when nothing was
  missed, and a refused token is a ``CONNECT_ERROR`` (socket.io-client 2: ``error``);
- ``subscribe`` / ``unsubscribe`` events → :class:`Subscribe` / :class:`Unsubscribe` of
  an endpoint's :class:`EndpointView` (one shared rendering of the endpoint's channel,
  checked against the key's streaming entitlements) or of raw tickwire channels;
- errors → an ack with the error object when the event asked for one, else an ``err``
  event (nothing before the namespace is connected), status by code;
- its close policy (:meth:`farewell`): expiry and revocation are an ``err`` event then a
  server ``DISCONNECT``, after which socket.io-client does not reconnect.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from tickwire.auth import Principal
from tickwire.dialects.base import (
    Authenticate,
    Authenticated,
    Close,
    Command,
    Dialect,
    Event,
    Handshake,
    Reply,
    Resume,
    Resumed,
    Subscribe,
    Subscribed,
    Token,
    Unsubscribe,
    Unsubscribed,
    View,
)
from tickwire.dialects.errors import ProtocolError
from tickwire.dialects.prophit import (
    CHANNEL_FORMAT,
    Endpoint,
    EndpointError,
    EventStyle,
    Request,
    check_method,
    entitle,
    parse_offset,
    prophit_format,
    resolve,
)
from tickwire.dialects.socketio import SioType, parse_sio, sio_ack, sio_event, sio_packet
from tickwire.hub import CLOSE_KEY_REVOKED, CLOSE_TOKEN_EXPIRED, WireFormat
from tickwire.model.channels import Channel, ChannelError, parse_channel
from tickwire.model.publication import Position

#: The request id of the namespace connect (acks are integers: never this).
CONNECT: Final = "connect"

#: HTTP-style statuses of the codes the core raises (an :class:`EndpointError` has its own).
_STATUS = {"unknown_channel": 404, "forbidden": 403, "unauthorized": 401, "unavailable": 500}
_API_ERRORS = frozenset({"unavailable", "internal"})
#: The core's codes under the names Market Prophit clients know.
_CODES = {"too_many_channels": "too_many_subscriptions"}


@dataclass(frozen=True, slots=True, eq=False)
class EndpointView:
    """One ``/real-time/`` endpoint as a :class:`View` of its channel: the shared format
    that renders the endpoint's rows, and the key's streaming entitlements."""

    endpoint: Endpoint
    fmt: WireFormat

    def denied(self, principal: Principal, channel: Channel) -> EndpointError | None:
        if principal.anonymous:
            return EndpointError(
                401, "unauthorized", "connect with a token from POST /jwt to stream endpoints"
            )
        try:
            entitle(principal, Request(self.endpoint, channel.symbol, channel), streaming=True)
        except EndpointError as exc:
            return exc
        return None


_VIEWS: dict[tuple[str, str, bool], EndpointView] = {}


def endpoint_view(endpoint: Endpoint, style: EventStyle, offsets: bool) -> EndpointView:
    """The one view of an endpoint, event style and recovery mode."""
    key = (endpoint.name, style, offsets)
    view = _VIEWS.get(key)
    if view is None:
        view = _VIEWS[key] = EndpointView(endpoint, prophit_format(endpoint, style, offsets))
    return view


#: What a dropped session held: (view or None for raw channels, channel, position).
SavedItem = tuple[View | None, Channel, Position | None]


@dataclass(frozen=True, slots=True)
class SavedSession:
    """A dropped session kept for connection-state recovery."""

    user_id: str | None
    items: Sequence[SavedItem]


def error_body(error: ProtocolError, *, connect: bool = False) -> dict[str, Any]:
    """The Market Prophit error object ``{type, code, message, status}`` of ``error``
    (a refused connect is 401 whatever the reason)."""
    if isinstance(error, EndpointError) and not connect:
        return error.body()
    code = _CODES.get(error.code, error.code)
    return {
        "type": "api_error" if code in _API_ERRORS and not connect else "invalid_request_error",
        "code": code,
        "message": error.message,
        "status": 401 if connect else _STATUS.get(code, 500 if code in _API_ERRORS else 400),
    }


class ProphitSocketIO(Dialect):
    """One Socket.IO session's default namespace, as the core's dialect."""

    name = "prophit"
    #: the session's own messages and raw channel subscriptions (endpoint views have theirs)
    fmt: ClassVar[WireFormat] = CHANNEL_FORMAT
    #: a token cannot be refreshed in-band: at expiry the session ends at once
    refreshable = False

    def __init__(
        self,
        handshake: Handshake,
        *,
        eio: int,
        style: EventStyle,
        recovery: bool,
        max_payload: int,
        exists: Callable[[Channel], bool],
        saved: Callable[[str], SavedSession | None],
    ) -> None:
        super().__init__(handshake)
        self.eio = eio
        self.style = style
        #: connection-state recovery (Engine.IO 4 and ``prophit_recovery`` > 0): events
        #: carry their offset and a dropped session is kept under its ``pid``
        self.recovery = recovery
        self.max_payload = max_payload
        self._exists = exists
        self._saved = saved
        #: the namespace is connected (the ``CONNECT`` reply was sent)
        self.connected = False
        #: a ``CONNECT`` is being served
        self.connecting = False
        self.sio_sid: str | None = None
        #: the recovery id given to the client (None: nothing to recover)
        self.pid: str | None = None
        #: where each channel's stream started (recovery)
        self.positions: dict[str, Position] = {}
        self._asked: str | None = None
        self._offset: object = None
        self._found = False

    # -- what the client says ---------------------------------------------------------

    def opening(self) -> list[Command]:
        if self.eio == 3:  # Socket.IO 4 protocol: the server connects "/" at once
            self.connecting = True
            try:
                return self._connect(self.handshake.first("token"))
            except EndpointError as exc:  # told as the refused connect, not raised
                return [Reply(self.render_error(exc))]
        return []

    def parse(self, frame: str) -> list[Command]:
        pkt = parse_sio(frame, max_bytes=self.max_payload)
        if pkt.namespace != "/":
            return [
                Reply(
                    sio_packet(
                        SioType.CONNECT_ERROR,
                        {"message": "Invalid namespace"},
                        namespace=pkt.namespace,
                    )
                )
            ]
        if pkt.type is SioType.CONNECT:
            if self.eio == 3 or self.connected or self.connecting:
                raise ProtocolError("bad_packet", "already connected")
            auth = pkt.data if isinstance(pkt.data, dict) else {}
            token: object = auth["token"] if "token" in auth else self.handshake.first("token")
            if self.recovery:
                pid = auth.get("pid")
                self._asked = pid if isinstance(pid, str) else None
                self._offset = auth.get("offset")
            self.connecting = True
            return self._connect(token)
        if not self.connected:
            raise ProtocolError("bad_packet", "connect the namespace first")
        if pkt.type is SioType.DISCONNECT:
            self.pid = None  # the client left: nothing to recover
            return [Close(1000, "client disconnect")]
        if pkt.type is SioType.EVENT:
            try:
                return [self._event(pkt.ack, pkt.data)]
            except ProtocolError as exc:
                exc.request_id = pkt.ack
                raise
        if pkt.type is SioType.ACK:
            return []  # we never ask the client for acks
        raise ProtocolError("bad_packet", f"unexpected Socket.IO packet {pkt.type.name.lower()}")

    def _connect(self, token: object) -> list[Command]:
        if token is None:
            return [self._resume(None)]
        if not isinstance(token, str) or not 0 < len(token) <= 8192:
            raise EndpointError(
                401,
                "unauthorized",
                "token must be a string of 1 to 8192 characters",
                request_id=CONNECT,
            )
        return [Authenticate(CONNECT, Token(token))]

    def after(self, event: Event) -> list[Command]:
        if isinstance(event, Authenticated) and event.id == CONNECT:
            return [self._resume(event.principal.user_id)]
        return []

    def _resume(self, user_id: str | None) -> Resume:
        """Resume the dropped session the client named, if it was this user's."""
        saved = self._saved(self._asked) if self._asked is not None else None
        if saved is None or saved.user_id != user_id:
            return Resume(CONNECT, ())
        self._found = True
        told = parse_offset(self._offset)
        items = [
            (view, channel, told[1] if told is not None and told[0] == channel.name else since)
            for view, channel, since in saved.items
        ]
        return Resume(CONNECT, items)

    def _event(self, ack: int | None, data: Any) -> Command:
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            raise ProtocolError("bad_packet", "an event is [name, ...arguments]")
        name = data[0]
        arg = data[1] if len(data) > 1 else None
        if name == "subscribe":
            view, channels = self._items(arg)
            return Subscribe(ack, [(c, None) for c in channels], view=view)
        if name == "unsubscribe":
            view, channels = self._items(arg)
            return Unsubscribe(ack, channels, view=view, strict=True)
        raise EndpointError(
            400, "unknown_event", f"unknown event {name[:40]!r} (expected subscribe, unsubscribe)"
        )

    def _items(self, arg: Any) -> tuple[View | None, list[Channel]]:
        """What a subscribe or unsubscribe names: an endpoint's view, or raw channels."""
        if not isinstance(arg, dict):
            raise EndpointError(
                400, "bad_request", "the argument must be an object {path, method, params}"
            )
        if "channels" in arg and "path" not in arg:
            return None, _channels(arg.get("channels"))
        unknown = sorted(str(k) for k in arg if k not in ("path", "method", "params"))
        if unknown:
            raise EndpointError(
                400,
                "bad_request",
                f"unknown field {unknown[0][:40]!r} (expected path, method, params)",
            )
        check_method(arg.get("method"))
        req = resolve(arg.get("path"), arg.get("params"), self._exists)
        return endpoint_view(req.endpoint, self.style, self.recovery), [req.channel]

    # -- what the client hears --------------------------------------------------------

    def render(self, event: Event) -> bytes | list[bytes] | None:
        if isinstance(event, Resumed):
            return self._connected(event)
        if isinstance(event, Subscribed):
            for c in event.channels:
                self.positions[c.channel] = Position(c.epoch, c.seq)
        if isinstance(event, (Subscribed, Unsubscribed)) and isinstance(event.id, int):
            return sio_ack(event.id, None)
        return None  # Authenticated: the CONNECT reply follows the Resumed; Expiring: farewell

    def _connected(self, event: Resumed) -> bytes:
        for c in event.channels:
            self.positions[c.channel] = Position(c.epoch, c.seq)
        self.connecting = False
        self.connected = True
        self.sio_sid = secrets.token_urlsafe(15)
        if self.eio == 3:
            return sio_packet(SioType.CONNECT)
        reply: dict[str, Any] = {"sid": self.sio_sid}
        if self.recovery:
            recovered = self._found and event.recovered
            self.pid = self._asked if recovered else secrets.token_urlsafe(15)
            reply["pid"] = self.pid
        return sio_packet(SioType.CONNECT, reply)

    def render_error(self, error: ProtocolError) -> bytes:
        rid = error.request_id
        if rid == CONNECT:
            self.connecting = False
            body = error_body(error, connect=True)
            if self.eio == 4:
                return sio_packet(SioType.CONNECT_ERROR, {"message": error.message, "data": body})
            return sio_packet(SioType.CONNECT_ERROR, body)  # Socket.IO 2 emits it as 'error'
        body = error_body(error)
        if isinstance(rid, int):
            return sio_ack(rid, body)
        return sio_event("err", body) if self.connected else b""

    def farewell(self, code: int) -> list[bytes]:
        if code == CLOSE_TOKEN_EXPIRED:
            error = EndpointError(
                401, "token_expired", "token expired: get a new one with POST /jwt and reconnect"
            )
        elif code == CLOSE_KEY_REVOKED:
            error = EndpointError(
                401,
                "key_revoked",
                "key revoked: this session's key was revoked (tickwire keys revoke)",
            )
        else:
            return []
        self.pid = None  # a new credential is needed: nothing to recover
        if not self.connected:
            return []
        return [
            sio_event("err", {**error.body(), "close": code}),
            sio_packet(SioType.DISCONNECT),
        ]


def _channels(names: Any) -> list[Channel]:
    if not isinstance(names, list) or not names or len(names) > 1000:
        raise EndpointError(
            400, "bad_request", "channels must be a list of 1 to 1000 channel names"
        )
    out = []
    for raw in names:
        if isinstance(raw, dict):
            raw = raw.get("channel")
        try:
            out.append(parse_channel(raw))
        except ChannelError as exc:
            raise EndpointError(400, exc.code, exc.message) from None
    return out

"""The InstaMrkt opcode dialect: JSON requests with an integer ``op``, responses with ``res``.

Sans-I/O. A client connects with ``?id=&n=&h=`` (h = sha256 of user id, nonce and session
key from ``POST /login``): the digest identifies the user. ``logon`` (op 100) then starts the
*logon session* that the market-data operations require; a user whose logged-on connection
ended less than ``opcode_relogon_window`` seconds ago (the seed's 15 minutes) is logged on
again automatically when they reconnect. docs/dialects.md, section InstaMrkt, is the
reference: every opcode and response code, with examples.

Requests: ``{"header": {"session_key"?, "t"?, "api_version"?}, "op": N, ...}``.
Responses: ``{"response_header": {"t": <server ms>}, "res": N, ...}``.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from tickwire.dialects.base import (
    Authenticated,
    Command,
    Credential,
    Dialect,
    Digest,
    Event,
    Expiring,
    Handshake,
    Ping,
    Pong,
    Reply,
    RequestId,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    channel_named,
    parse_since,
)
from tickwire.dialects.errors import ProtocolError
from tickwire.model import boundedjson
from tickwire.model.channels import Channel
from tickwire.model.publication import Position, Publication, Snapshot, now_ms

# -- the tables: every opcode and response code, by name (get_opcodes lists them) ----------

#: Operations a client may send. ``opcodes`` is the seed's example name of ``get_opcodes``
#: (its table says ``get_opcodes``): both are listed, so a client written against either
#: finds op 2.
OPCODES: dict[str, int] = {
    "ping": 1,
    "get_opcodes": 2,
    "opcodes": 2,
    "logon": 100,
    "subscribe": 200,
    "unsubscribe": 201,
}

#: Error response codes, one per stable error code (docs/protocol.md names them); the
#: response carries the name as ``error`` and a ``message`` naming what was wrong.
ERROR_RESPONSE_CODES: dict[str, int] = {
    "bad_json": 400,
    "bad_request": 401,
    "unknown_opcode": 402,
    "not_logged_on": 403,
    "forbidden": 404,
    "rate_limited": 405,
    "bad_channel": 406,
    "unknown_channel": 407,
    "bad_since": 408,
    "too_many_channels": 409,
    "frame_too_large": 410,
    "binary_not_supported": 411,
    "unauthorized": 412,
    "token_expired": 413,
    "bad_signature": 414,
    "nonce_reused": 415,
    "nonce_stale": 416,
    "nonce_cache_full": 417,
    "key_revoked": 418,
    "unavailable": 419,
    "internal": 420,
    "malformed_token": 421,
    "invalid_claims": 422,
    "token_not_yet_valid": 423,
    "alg_not_allowed": 424,
    "unknown_key": 425,
    "lifetime_too_long": 426,
    #: any error code not listed above (none today; kept for codes added later)
    "error": 499,
}

#: Every response code. ``response_codes`` is the seed's example name of ``opcodes`` (2).
RESPONSE_CODES: dict[str, int] = {
    "pong": 1,
    "opcodes": 2,
    "response_codes": 2,
    "logon_success": 100,
    "logon_fail": 110,
    "logon_fail_already_logged_in": 112,
    "subscribed": 200,
    "unsubscribed": 201,
    "publication": 300,
    "snapshot": 301,
    "reset": 302,
    **ERROR_RESPONSE_CODES,
}

PING = OPCODES["ping"]
GET_OPCODES = OPCODES["get_opcodes"]
LOGON = OPCODES["logon"]
SUBSCRIBE = OPCODES["subscribe"]
UNSUBSCRIBE = OPCODES["unsubscribe"]

#: Operations refused (``not_logged_on``) until the connection has logged on.
NEEDS_LOGON: frozenset[int] = frozenset({SUBSCRIBE, UNSUBSCRIBE})

#: Largest frame the parser decodes (the core answers ``frame_too_large`` first, at
#: ``max_frame_bytes``); nesting is bounded by :data:`boundedjson.MAX_DEPTH`.
MAX_FRAME_BYTES = 1 << 20
_MAX_INT = 2**63 - 1
_MAX_OP = 2**31 - 1
MAX_SESSION_KEY_LENGTH = 256

_encode = msgspec.json.Encoder().encode


def response_code(error: str) -> int:
    """The response code of error code ``error``."""
    return ERROR_RESPONSE_CODES.get(error, ERROR_RESPONSE_CODES["error"])


# -- logon sessions: who is logged on, or was recently enough to be logged on again --------


class LogonSessions:
    """Which users are logged on, and who logged off less than ``window`` seconds ago.

    One per node, shared by its opcode connections. A user counts as *returning* while
    one of their logged-on connections is open or for ``window`` seconds after the last
    one closed; a returning user's new connection is logged on automatically, into the
    same logon session (same ``session_key`` in ``logon_success``). Bounded: open
    connections hold live entries; at most ``max_ended`` users who logged off are
    remembered (the oldest is forgotten first: they log on explicitly again).
    """

    def __init__(self, window: float, max_ended: int, clock: Callable[[], float]) -> None:
        self.window = window
        self.max_ended = max_ended
        self._clock = clock
        #: user -> (logon session id, logged-on connections open)
        self._live: dict[str, tuple[str, int]] = {}
        #: user -> (logon session id, when the last connection closed), oldest first
        self._ended: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        self._purge(self._clock())
        return len(self._live) + len(self._ended)

    def _purge(self, now: float) -> None:
        ended = self._ended
        while ended:
            _, (_, at) = next(iter(ended.items()))
            if at + self.window >= now and len(ended) <= self.max_ended:
                break
            ended.popitem(last=False)

    def resume(self, user: str) -> str | None:
        """The logon session ``user`` returns to (now counting this connection), or None."""
        self._purge(self._clock())
        live = self._live.get(user)
        if live is not None:
            self._live[user] = (live[0], live[1] + 1)
            return live[0]
        ended = self._ended.pop(user, None)
        if ended is None:
            return None
        self._live[user] = (ended[0], 1)
        return ended[0]

    def logon(self, user: str) -> str:
        """Log one connection of ``user`` on: the session it returns to, or a new one."""
        session = self.resume(user)
        if session is None:
            session = secrets.token_hex(8)
            self._live[user] = (session, 1)
        return session

    def end(self, user: str) -> None:
        """One logged-on connection of ``user`` closed."""
        live = self._live.get(user)
        if live is None:
            return
        session, count = live
        if count > 1:
            self._live[user] = (session, count - 1)
            return
        del self._live[user]
        now = self._clock()
        self._ended[user] = (session, now)
        self._purge(now)


# -- pushed data: encoded once per publication for every opcode connection ----------------


class _Header(msgspec.Struct):
    t: int


class _Push(msgspec.Struct):
    response_header: _Header
    res: int
    channel: str
    seq: int
    epoch: str
    data: msgspec.Raw


class _Reset(msgspec.Struct):
    response_header: _Header
    res: int
    channel: str
    epoch: str
    seq: int


class OpcodeFormat:
    """The hub's encoder for opcode connections: publication 300, snapshot 301, reset 302."""

    name = "opcode"
    compressed = False

    @property
    def base(self) -> OpcodeFormat:
        return self

    def pub(self, pub: Publication) -> bytes:
        head = _Header(pub.ts)
        return _encode(_Push(head, 300, pub.channel, pub.seq, pub.epoch, pub.data))

    def snapshot(self, snap: Snapshot) -> bytes:
        head = _Header(snap.ts)
        return _encode(_Push(head, 301, snap.channel, snap.seq, snap.epoch, snap.data))

    def reset(self, channel: str, position: Position) -> bytes:
        return _encode(_Reset(_Header(now_ms()), 302, channel, position.epoch, position.seq))


OPCODE = OpcodeFormat()

# -- inbound ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A request that parsed: its ``op``, its optional ``id`` and the whole message."""

    op: int
    id: RequestId
    msg: dict[str, Any]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _request_id(msg: dict[str, Any]) -> RequestId:
    rid = msg.get("id")
    if rid is None or (_is_int(rid) and -_MAX_INT <= rid <= _MAX_INT):
        return rid
    if isinstance(rid, str) and len(rid) <= 64:
        return rid
    raise ProtocolError("bad_request", "id: must be an integer or a string of at most 64 chars")


def _check_header(header: object, rid: RequestId) -> None:
    if not isinstance(header, dict):
        raise ProtocolError("bad_request", "header: must be an object", rid)
    t = header.get("t")
    if t is not None and not (_is_int(t) and 0 <= t <= _MAX_INT):
        raise ProtocolError("bad_request", "header.t: must be epoch milliseconds", rid)
    version = header.get("api_version")
    if version is not None and not (
        (_is_int(version) and 0 <= version <= _MAX_OP)
        or (isinstance(version, float) and 0 <= version <= _MAX_OP)
    ):
        raise ProtocolError("bad_request", "header.api_version: must be a number", rid)
    key = header.get("session_key")
    if key is not None and not (isinstance(key, str) and len(key) <= MAX_SESSION_KEY_LENGTH):
        raise ProtocolError(
            "bad_request",
            f"header.session_key: must be a string of at most {MAX_SESSION_KEY_LENGTH} chars",
            rid,
        )


def parse_request(frame: str | bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> Request:
    """Decode and check one request's envelope; raises :class:`ProtocolError` naming what
    is wrong (``bad_json``, ``frame_too_large``, ``bad_request``, ``unknown_opcode``)."""
    try:
        msg = boundedjson.decode(frame, max_bytes=max_bytes)
    except boundedjson.JSONLimitError as exc:
        code = "frame_too_large" if exc.reason == "too_large" else "bad_json"
        raise ProtocolError(code, f"frame is {exc.message}") from None
    except msgspec.ValidationError as exc:  # valid syntax, but a number out of range
        raise ProtocolError("bad_json", f"frame is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_request", "request must be a JSON object")
    rid = _request_id(msg)
    if "header" not in msg:
        raise ProtocolError("bad_request", "header: missing (every request has one)", rid)
    _check_header(msg["header"], rid)
    if "op" not in msg:
        raise ProtocolError("bad_request", "op: missing", rid)
    op = msg["op"]
    if not _is_int(op):
        raise ProtocolError("bad_request", f"op: must be an integer, not {type(op).__name__}", rid)
    if not 0 <= op <= _MAX_OP:
        raise ProtocolError("bad_request", f"op: out of range 0 to {_MAX_OP}", rid)
    if op not in OPCODES.values():
        raise ProtocolError(
            "unknown_opcode", f"op {op}: unknown (op 2, get_opcodes, lists every opcode)", rid
        )
    return Request(op, rid, msg)


def _channels(msg: dict[str, Any], rid: RequestId) -> list[Any]:
    channels = msg.get("channels")
    if not isinstance(channels, list) or not channels:
        raise ProtocolError("bad_request", "channels: must be a non-empty list", rid)
    return channels


def subscribe_items(msg: dict[str, Any], rid: RequestId) -> list[tuple[Channel, Position | None]]:
    """``channels`` of a subscribe: names, or ``{"channel", "since"?}`` objects."""
    items: list[tuple[Channel, Position | None]] = []
    for raw in _channels(msg, rid):
        if isinstance(raw, dict):
            unknown = set(raw) - {"channel", "since"}
            if unknown:
                raise ProtocolError(
                    "bad_request", f"channels: unknown field {sorted(unknown)[0]!r}", rid
                )
            channel = channel_named(raw.get("channel"), rid)
            since = raw.get("since")
            position = None if since is None else parse_since(since, channel.name, rid)
            items.append((channel, position))
        else:
            items.append((channel_named(raw, rid), None))
    return items


@dataclass(frozen=True, slots=True)
class OpcodeNode:
    """What every opcode connection of one node shares."""

    logons: LogonSessions
    #: wall-clock milliseconds (response headers' ``t``)
    clock_ms: Callable[[], int] = now_ms


# -- the dialect -------------------------------------------------------------------------------


class Opcode(Dialect):
    """One InstaMrkt opcode connection. Mount the class :func:`opcode_dialect` returns: it
    binds the node's :class:`LogonSessions` and clock."""

    name = "opcode"
    fmt = OPCODE

    #: the node's logon sessions and clock (bound by :func:`opcode_dialect`)
    node: ClassVar[OpcodeNode]

    def __init__(self, handshake: Handshake) -> None:
        super().__init__(handshake)
        #: the user the digest identified (set when it verified)
        self.user: str | None = None
        #: the logon session this connection is logged on to (None: not logged on)
        self.session: str | None = None
        #: the session key expired: the connection is closing
        self.expired = False

    def credential(self) -> Credential | None:
        """The ``?id=&n=&h=`` digest; always given, so that a connection without one is
        refused (``unauthorized``, naming the missing parameter) and closed."""
        hs = self.handshake
        return Digest(hs.first("id") or "", hs.first("n") or "", hs.first("h") or "")

    # -- requests ------------------------------------------------------------------------

    def parse(self, frame: str) -> list[Command]:
        req = parse_request(frame)
        op, rid = req.op, req.id
        if op in NEEDS_LOGON and self.session is None:
            raise ProtocolError("not_logged_on", f"op {op}: log on first (op 100, logon)", rid)
        if op == PING:
            return [Ping(rid)]
        if op == GET_OPCODES:
            body = {"opcodes": OPCODES, "response_codes": RESPONSE_CODES}
            return [Reply(self._response(GET_OPCODES, rid, body))]
        if op == LOGON:
            return [Reply(self._logon(rid))]
        if op == SUBSCRIBE:
            return [Subscribe(rid, subscribe_items(req.msg, rid))]
        channels = [channel_named(raw, rid) for raw in _channels(req.msg, rid)]
        return [Unsubscribe(rid, channels)]

    def _logon(self, rid: RequestId) -> bytes:
        if self.session is not None:
            return self._response(
                112,
                rid,
                {"session_key": self.session, "message": "already logged on"},
            )
        if self.expired or self.user is None:
            return self._response(
                110,
                rid,
                {"message": "session key expired: POST /login, then reconnect with a new digest"},
            )
        self.session = self.node.logons.logon(self.user)
        return self._response(100, rid, {"session_key": self.session})

    # -- responses -----------------------------------------------------------------------

    def _response(self, res: int, rid: RequestId, body: dict[str, Any] | None = None) -> bytes:
        msg: dict[str, Any] = {"response_header": {"t": self.node.clock_ms()}, "res": res}
        if rid is not None:
            msg["id"] = rid
        if body:
            msg.update(body)
        return _encode(msg)

    def render(self, event: Event) -> bytes | None:
        if isinstance(event, Subscribed):
            channels = [
                {"channel": c.channel, "epoch": c.epoch, "seq": c.seq}
                | ({} if c.recovered is None else {"recovered": c.recovered})
                for c in event.channels
            ]
            return self._response(200, event.id, {"channels": channels})
        if isinstance(event, Unsubscribed):
            return self._response(201, event.id, {"channels": list(event.channels)})
        if isinstance(event, Pong):
            return _encode({"response_header": {"t": event.ts}, "res": PING} | _id(event.id))
        if isinstance(event, Authenticated):
            return self._authenticated(event)
        if isinstance(event, Expiring):
            self.expired = True
            return self.render_error(
                ProtocolError(
                    "token_expired",
                    f"session key expired: the connection closes in {event.grace:g} s; "
                    "POST /login, then reconnect with a new digest",
                )
            )
        return None  # pragma: no cover - Event is a closed union

    def _authenticated(self, event: Authenticated) -> bytes | None:
        """The digest verified: a returning user is logged on again, and told so."""
        user = self.user = event.principal.user_id
        if user is None or self.session is not None:
            return None
        self.session = self.node.logons.resume(user)
        if self.session is None:
            return None
        return self._response(100, None, {"session_key": self.session, "automatic": True})

    def render_error(self, error: ProtocolError) -> bytes:
        body = {"error": error.code, "message": error.message}
        rid = error.request_id
        if isinstance(rid, bool) or not isinstance(rid, str | int):
            rid = None
        return self._response(response_code(error.code), rid, body)

    def finished(self) -> None:
        if self.session is not None and self.user is not None:
            self.node.logons.end(self.user)
            self.session = None


def _id(rid: RequestId) -> dict[str, Any]:
    return {} if rid is None else {"id": rid}


def opcode_dialect(logons: LogonSessions, clock_ms: Callable[[], int] = now_ms) -> type[Opcode]:
    """The opcode dialect bound to one node's logon sessions (what the server mounts)."""

    class NodeOpcode(Opcode):
        node = OpcodeNode(logons, clock_ms)

    return NodeOpcode

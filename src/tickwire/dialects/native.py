"""The native protocol v1: JSON text frames (see docs/protocol.md).

Sans-I/O: :func:`parse` turns a frame into a command; :data:`NATIVE` renders core events;
the ``render_*`` functions render replies. No sockets here.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tickwire.dialects.base import (
    Authenticate,
    Authenticated,
    Command,
    Credential,
    Dialect,
    Digest,
    Event,
    Expiring,
    Ping,
    Pong,
    RequestId,
    Subscribe,
    Subscribed,
    Token,
    Unsubscribe,
    Unsubscribed,
    channel_named,
    parse_since,
)
from tickwire.dialects.errors import ProtocolError
from tickwire.model import boundedjson
from tickwire.model.channels import Channel
from tickwire.model.publication import Position, Publication, Snapshot

# -- inbound -----------------------------------------------------------------------------


OPS = ("subscribe", "unsubscribe", "ping", "auth", "refresh")
MAX_TOKEN_LENGTH = 8192
#: Integer request ids are 64-bit signed, as most clients' integers are.
_MIN_ID, _MAX_ID = -(2**63), 2**63 - 1
#: Largest frame :func:`parse` decodes (the server refuses larger ones before parsing).
MAX_FRAME_BYTES = 1 << 20


def _request_id(msg: dict[str, Any]) -> RequestId:
    rid = msg.get("id")
    if rid is None or (
        isinstance(rid, int) and not isinstance(rid, bool) and _MIN_ID <= rid <= _MAX_ID
    ):
        return rid
    if isinstance(rid, str) and len(rid) <= 64:
        return rid
    raise ProtocolError(
        "bad_request", "id must be a 64-bit integer or a string of at most 64 chars"
    )


def _channel_list(msg: dict[str, Any], rid: RequestId) -> list[Any]:
    channels = msg.get("channels")
    if not isinstance(channels, list) or not channels:
        raise ProtocolError("bad_request", "channels must be a non-empty list", rid)
    return channels


def parse(frame: str | bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> Command:
    """Parse one inbound text frame into a core command; raises :class:`ProtocolError`
    naming what is wrong.

    The frame is decoded within ``max_bytes`` and :data:`boundedjson.MAX_DEPTH` levels."""
    try:
        msg = boundedjson.decode(frame, max_bytes=max_bytes)
    except boundedjson.JSONLimitError as exc:
        code = "frame_too_large" if exc.reason == "too_large" else "bad_json"
        raise ProtocolError(code, f"frame is {exc.message}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_request", "message must be a JSON object")
    rid = _request_id(msg)
    op = msg.get("op")
    if not isinstance(op, str):
        raise ProtocolError("bad_request", "op must be a string", rid)
    if op == "subscribe":
        items: list[tuple[Channel, Position | None]] = []
        for raw in _channel_list(msg, rid):
            if isinstance(raw, dict):
                name = raw.get("channel")
                unknown = set(raw) - {"channel", "since"}
                if unknown:
                    raise ProtocolError(
                        "bad_request", f"unknown field {sorted(unknown)[0]!r} in channels", rid
                    )
                channel = channel_named(name, rid)
                since = raw.get("since")
                position = None if since is None else parse_since(since, channel.name, rid)
                items.append((channel, position))
            else:
                items.append((channel_named(raw, rid), None))
        return Subscribe(rid, items)
    if op == "unsubscribe":
        return Unsubscribe(rid, [channel_named(raw, rid) for raw in _channel_list(msg, rid)])
    if op == "ping":
        return Ping(rid)
    if op in ("auth", "refresh"):
        token = msg.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
            raise ProtocolError(
                "bad_request", f"token must be a string of 1 to {MAX_TOKEN_LENGTH} chars", rid
            )
        return Authenticate(rid, Token(token), refresh=op == "refresh")
    raise ProtocolError("unknown_op", f"unknown op {op[:32]!r} (expected {', '.join(OPS)})", rid)


# -- outbound ----------------------------------------------------------------------------


class _Push(msgspec.Struct):
    type: str
    channel: str
    seq: int
    epoch: str
    ts: int
    data: msgspec.Raw


class _Reset(msgspec.Struct):
    type: str
    channel: str
    epoch: str
    seq: int


_encode = msgspec.json.Encoder().encode


class NativeFormat:
    """The hub's encoder for native connections."""

    name = "native"
    compressed = False

    @property
    def base(self) -> NativeFormat:
        return self

    def pub(self, pub: Publication) -> bytes:
        return _encode(_Push("pub", pub.channel, pub.seq, pub.epoch, pub.ts, pub.data))

    def snapshot(self, snap: Snapshot) -> bytes:
        return _encode(_Push("snapshot", snap.channel, snap.seq, snap.epoch, snap.ts, snap.data))

    def reset(self, channel: str, position: Position) -> bytes:
        return _encode(_Reset("reset", channel, position.epoch, position.seq))


NATIVE = NativeFormat()


class _Channel(msgspec.Struct, omit_defaults=True):
    channel: str
    epoch: str
    seq: int
    recovered: bool | None = None


def render_error(error: ProtocolError) -> bytes:
    return _encode(
        {"id": error.request_id, "type": "error", "code": error.code, "message": error.message}
    )


def render_heartbeat(ts: int) -> bytes:
    return _encode({"type": "heartbeat", "ts": ts})


class Native(Dialect):
    """The native protocol on the shared connection core."""

    name = "native"
    fmt = NATIVE

    def credential(self) -> Credential | None:
        """``?token=`` or an InstaMrkt-style ``?id=&n=&h=`` digest."""
        hs = self.handshake
        token = hs.first("token")
        if token is not None:
            return Token(token)
        uid, nonce, digest = (hs.first(k) for k in ("id", "n", "h"))
        if uid is None and nonce is None and digest is None:
            return None
        return Digest(uid or "", nonce or "", digest or "")

    def parse(self, frame: str) -> list[Command]:
        return [parse(frame)]

    def render(self, event: Event) -> bytes | None:
        if isinstance(event, Subscribed):
            channels = [_Channel(c.channel, c.epoch, c.seq, c.recovered) for c in event.channels]
            return _encode({"id": event.id, "type": "subscribed", "channels": channels})
        if isinstance(event, Unsubscribed):
            return _encode({"id": event.id, "type": "unsubscribed", "channels": event.channels})
        if isinstance(event, Pong):
            return _encode({"id": event.id, "type": "pong", "ts": event.ts})
        if isinstance(event, Authenticated):
            p = event.principal
            return _encode(
                {
                    "id": event.id,
                    "type": "authenticated",
                    "user": p.user_id,
                    # integer seconds since the UNIX epoch, as docs/protocol.md says
                    "expires_at": None if p.expires_at is None else int(p.expires_at),
                    "unsubscribed": event.dropped,
                }
            )
        if isinstance(event, Expiring):
            return render_error(
                ProtocolError(
                    "token_expired",
                    f"token expired: send refresh with a new token within {event.grace:g} s, "
                    "or reconnect with one",
                )
            )
        return None  # pragma: no cover - Event is a closed union

    def render_error(self, error: ProtocolError) -> bytes:
        return render_error(error)

    @classmethod
    def heartbeat(cls, ts: int) -> bytes | None:
        return render_heartbeat(ts)

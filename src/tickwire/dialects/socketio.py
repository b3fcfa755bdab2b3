"""Engine.IO 3 and 4 framing and Socket.IO packets, sans-I/O.

Engine.IO carries packets over HTTP long-polling and WebSocket; Socket.IO packets ride in
its ``message`` packets. Engine.IO 4 (socket.io-client 3/4, python-socketio 5) and
Engine.IO 3 (socket.io-client 2) differ in the polling payload encoding, in who pings
(the server in 4, the client in 3) and in the Socket.IO protocol on top (5 and 4: in 4
the server connects the default namespace itself and ``CONNECT_ERROR`` is ``ERROR``).

Everything here turns bytes into values and values into bytes; the server shell
(``tickwire.server.socketio``) does the I/O. Nothing a client sends can make these
functions do more than raise :class:`PacketError` naming what is wrong.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgspec

from tickwire.model import boundedjson
from tickwire.model.errors import TickwireError


class PacketError(TickwireError):
    """A malformed Engine.IO or Socket.IO packet or payload."""


class EioType(enum.IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


class SioType(enum.IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


#: The separator of packets in an Engine.IO 4 polling payload (never inside JSON text).
RECORD_SEPARATOR = b"\x1e"
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class EioPacket:
    type: EioType
    data: str = ""


def parse_eio(text: str) -> EioPacket:
    """One Engine.IO packet from its text form (``4…`` = message)."""
    if not text:
        raise PacketError("bad_packet", "empty Engine.IO packet")
    head = text[0]
    if head == "b":
        raise PacketError("binary_not_supported", "binary Engine.IO packets are not supported")
    if not "0" <= head <= "6":
        raise PacketError("bad_packet", f"unknown Engine.IO packet type {head[:1]!r}")
    return EioPacket(EioType(int(head)), text[1:])


def decode_payload(body: bytes, eio: int) -> list[str]:
    """The packets of a polling POST body (Engine.IO ``eio`` 3 or 4)."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise PacketError("bad_payload", "polling payload is not UTF-8") from None
    if eio == 4:
        if not text:
            raise PacketError("bad_payload", "empty polling payload")
        return text.split("\x1e")
    return _decode_v3(text)


def _decode_v3(text: str) -> list[str]:
    """``<length>:<packet>`` repeated; length counts UTF-16 code units, as JS does."""
    packets: list[str] = []
    i, n = 0, len(text)
    if n == 0:
        raise PacketError("bad_payload", "empty polling payload")
    while i < n:
        colon = text.find(":", i, i + 12)
        digits = text[i:colon]
        if colon <= i or not (digits.isascii() and digits.isdigit()):
            raise PacketError("bad_payload", "polling payload: expected <length>:<packet>")
        length = int(text[i:colon])
        start = colon + 1
        end = _advance_utf16(text, start, length)
        if end < 0 or length == 0:
            raise PacketError("bad_payload", "polling payload: a packet length is wrong")
        packets.append(text[start:end])
        i = end
    return packets


def _advance_utf16(text: str, start: int, units: int) -> int:
    """The index ``units`` UTF-16 code units after ``start`` (-1 past the end)."""
    i = start
    n = len(text)
    if text.isascii():  # the usual case: one unit per character
        end = start + units
        return end if end <= n else -1
    while units > 0:
        if i >= n:
            return -1
        units -= 2 if ord(text[i]) > 0xFFFF else 1
        i += 1
    return i if units == 0 else -1


def utf16_length(packet: bytes) -> int:
    """The JS string length of UTF-8 ``packet`` (what an Engine.IO 3 length counts)."""
    if packet.isascii():
        return len(packet)
    text = packet.decode()
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def encode_payload(packets: list[bytes], eio: int) -> bytes:
    """A polling response body holding ``packets`` (text Engine.IO packets)."""
    if eio == 4:
        return RECORD_SEPARATOR.join(packets)
    return b"".join(b"%d:%s" % (utf16_length(p), p) for p in packets)


def open_packet(
    sid: str,
    upgrades: list[str],
    ping_interval: float,
    ping_timeout: float,
    max_payload: int,
    eio: int,
) -> bytes:
    """The Engine.IO ``open`` packet (``0{…}``)."""
    info: dict[str, Any] = {
        "sid": sid,
        "upgrades": upgrades,
        "pingInterval": int(ping_interval * 1000),
        "pingTimeout": int(ping_timeout * 1000),
    }
    if eio == 4:
        info["maxPayload"] = max_payload
    return b"0" + _encode(info)


# -- Socket.IO packets ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SioPacket:
    type: SioType
    namespace: str = "/"
    ack: int | None = None
    data: Any = None


#: Ack ids are what JavaScript counts: non-negative integers well inside 2^53.
MAX_ACK_ID = 2**53 - 1


def parse_sio(text: str, *, max_bytes: int) -> SioPacket:
    """One Socket.IO packet (the payload of an Engine.IO message packet)."""
    if not text:
        raise PacketError("bad_packet", "empty Socket.IO packet")
    head = text[0]
    if not "0" <= head <= "6":
        raise PacketError("bad_packet", f"unknown Socket.IO packet type {head[:1]!r}")
    kind = SioType(int(head))
    if kind in (SioType.BINARY_EVENT, SioType.BINARY_ACK):
        raise PacketError("binary_not_supported", "binary Socket.IO packets are not supported")
    i = 1
    namespace = "/"
    if i < len(text) and text[i] == "/":
        comma = text.find(",", i)
        end = len(text) if comma < 0 else comma
        namespace = text[i:end]
        if len(namespace) > 128:
            raise PacketError("bad_packet", "namespace longer than 128 characters")
        i = end + 1 if comma >= 0 else end
    start = i
    while i < len(text) and "0" <= text[i] <= "9" and i - start < 17:
        i += 1
    ack = None
    if i > start:
        if i < len(text) and "0" <= text[i] <= "9":
            raise PacketError("bad_packet", "ack id too large")
        ack = int(text[start:i])
        if ack > MAX_ACK_ID:
            raise PacketError("bad_packet", "ack id too large")
    data: Any = None
    rest = text[i:]
    if rest:
        try:
            data = boundedjson.decode(rest, max_bytes=max_bytes)
        except boundedjson.JSONLimitError as exc:
            code = "frame_too_large" if exc.reason == "too_large" else "bad_json"
            raise PacketError(code, f"Socket.IO packet data is {exc.message}") from None
    return SioPacket(kind, namespace, ack, data)


def sio_packet(
    kind: SioType, data: Any = None, *, ack: int | None = None, namespace: str = "/"
) -> bytes:
    """A Socket.IO packet as an Engine.IO message packet's text (``4`` + packet)."""
    head = b"4%d" % kind
    if namespace != "/":
        head += namespace.encode() + b","
    if ack is not None:
        head += b"%d" % ack
    return head if data is None else head + _encode(data)


def sio_event(name: str, *args: Any) -> bytes:
    """``42["name", …args]``."""
    return sio_packet(SioType.EVENT, [name, *args])


def sio_ack(ack: int, *args: Any) -> bytes:
    """``43<ack>[…args]``."""
    return sio_packet(SioType.ACK, list(args), ack=ack)

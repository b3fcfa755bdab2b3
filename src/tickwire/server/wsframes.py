"""Client WebSocket frames in, events out (RFC 6455, RFC 7692): a sans-I/O reader.

:class:`FrameReader` takes the bytes a client sends after the handshake and returns
what they mean: whole messages (fragments joined, permessage-deflate inflated, text
checked as UTF-8), pings, pongs, the client's close frame — or one :class:`Failure`
with the close code the server answers with, after which the reader takes nothing
more. It holds at most one frame's bytes (bounded by ``max_size``) between calls; no
input raises.

Control frames the server writes itself (pong, close) are built here and in
:mod:`tickwire.hub.frames`; server frames are never masked.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

#: Close codes (RFC 6455 7.4.1) for what the reader refuses.
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DEFLATE_TAIL = b"\x00\x00\xff\xff"


@dataclass(frozen=True, slots=True)
class Text:
    """A whole text message."""

    data: str


@dataclass(frozen=True, slots=True)
class Binary:
    """A whole binary message."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The client's close frame: its code (None when it sent none) and reason."""

    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Failure:
    """The client broke the protocol: close the connection with ``code``."""

    code: int
    reason: str


Event = Text | Binary | Ping | Pong | Close | Failure


def valid_close_code(code: int) -> bool:
    """Whether a client may send ``code`` in a close frame (RFC 6455 7.4)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def unmask(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """``payload`` XOR the repeated 4-byte ``mask`` (one big-integer XOR, no loop)."""
    n = len(payload)
    if not n:
        return b""
    key = (bytes(mask) * ((n + 3) // 4))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def pong_frame(payload: bytes) -> bytes:
    """The server's pong answering a ping with ``payload`` (at most 125 bytes)."""
    return bytes((0x80 | _PONG, len(payload))) + payload


class FrameReader:
    """Reads one client's frames. ``max_size`` bounds a message (its frames' payloads
    together, and its inflated size); ``deflate``: permessage-deflate was negotiated, so
    RSV1 marks a compressed message."""

    __slots__ = (
        "_buf",
        "_compressed",
        "_inflater",
        "_opcode",
        "_parts",
        "_size",
        "deflate",
        "done",
        "max_size",
    )

    def __init__(self, max_size: int, *, deflate: bool = False) -> None:
        self.max_size = max_size
        self.deflate = deflate
        #: True after a close frame or a failure: nothing more is read
        self.done = False
        self._buf: bytes | bytearray = b""  # an incomplete frame
        self._parts: list[bytes] | None = None  # the frames of a fragmented message
        self._opcode = 0  # ... its opcode
        self._compressed = False  # ... and whether it is compressed
        self._size = 0  # ... and its payload bytes so far
        self._inflater: zlib._Decompress | None = None  # made on the first compressed message

    def feed(self, data: bytes | bytearray) -> list[Event]:
        """The events in ``data`` (and what came before it), in order."""
        if self.done:
            return []
        held = self._buf
        if held:
            held += data  # a bytearray: grows in place
            buf: bytes | bytearray = held
        else:
            buf = data
        events: list[Event] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            failure = self._check_header(b0, b1)
            if failure is not None:
                return self._fail(events, failure)
            n = b1 & 0x7F
            head = 6 if n < 126 else 8 if n == 126 else 14
            if end - pos < head:
                break
            if n == 126:
                (n,) = struct.unpack_from("!H", buf, pos + 2)
            elif n == 127:
                (n,) = struct.unpack_from("!Q", buf, pos + 2)
                if n >> 63:
                    return self._fail(events, Failure(CLOSE_PROTOCOL_ERROR, "bad frame length"))
            opcode = b0 & 0x0F
            if opcode < _CLOSE and self._size + n > self.max_size:
                return self._fail(
                    events, Failure(CLOSE_TOO_BIG, f"message exceeds {self.max_size} bytes")
                )
            if end - pos < head + n:
                break
            payload = unmask(buf[pos + head : pos + head + n], buf[pos + head - 4 : pos + head])
            pos += head + n
            event = self._frame(b0, opcode, payload)
            if event is not None:
                events.append(event)
                if event.__class__ is Failure or event.__class__ is Close:
                    self.done = True
                    self._buf = b""
                    return events
        if pos >= end:
            self._buf = b""
        elif pos or buf is not held:
            self._buf = bytearray(buf[pos:])
        return events

    def _check_header(self, b0: int, b1: int) -> Failure | None:
        """What is wrong with a frame's first two bytes, if anything."""
        if not b1 & 0x80:
            return Failure(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        if b0 & 0x30:
            return Failure(CLOSE_PROTOCOL_ERROR, "reserved bits set")
        opcode = b0 & 0x0F
        rsv1 = b0 & 0x40
        if opcode >= _CLOSE:
            if opcode > _PONG:
                return Failure(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
            if not b0 & 0x80:
                return Failure(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            if b1 & 0x7F > 125:
                return Failure(CLOSE_PROTOCOL_ERROR, "control frame over 125 bytes")
            if rsv1:
                return Failure(CLOSE_PROTOCOL_ERROR, "compressed control frame")
            return None
        if opcode > _BINARY:
            return Failure(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if opcode == _CONTINUATION:
            if self._parts is None:
                return Failure(CLOSE_PROTOCOL_ERROR, "continuation without a message")
            if rsv1:
                return Failure(CLOSE_PROTOCOL_ERROR, "reserved bits set")
        elif self._parts is not None:
            return Failure(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
        elif rsv1 and not self.deflate:
            return Failure(CLOSE_PROTOCOL_ERROR, "compressed frame without permessage-deflate")
        return None

    def _frame(self, b0: int, opcode: int, payload: bytes) -> Event | None:
        """The event a complete, valid-looking frame makes (None: a fragment so far)."""
        if opcode == _PING:
            return Ping(payload)
        if opcode == _PONG:
            return Pong(payload)
        if opcode == _CLOSE:
            return self._close(payload)
        fin = b0 & 0x80
        if opcode != _CONTINUATION:
            if not fin:  # the first fragment
                self._parts = [payload]
                self._opcode = opcode
                self._compressed = bool(b0 & 0x40)
                self._size = len(payload)
                return None
            return self._message(opcode, bool(b0 & 0x40), payload)
        parts = self._parts
        assert parts is not None  # _check_header refused a continuation without it
        parts.append(payload)
        self._size += len(payload)
        if not fin:
            return None
        self._parts = None
        self._size = 0
        return self._message(self._opcode, self._compressed, b"".join(parts))

    def _message(self, opcode: int, compressed: bool, payload: bytes) -> Event:
        if compressed:
            inflater = self._inflater
            if inflater is None:
                inflater = self._inflater = zlib.decompressobj(-15)
            try:
                payload = inflater.decompress(payload + _DEFLATE_TAIL, self.max_size + 1)
            except zlib.error:
                return Failure(CLOSE_PROTOCOL_ERROR, "bad compressed data")
            if len(payload) > self.max_size:
                return Failure(CLOSE_TOO_BIG, f"message exceeds {self.max_size} bytes")
            if inflater.eof:  # the client ended its stream: the next message starts anew
                self._inflater = None
        if opcode == _BINARY:
            return Binary(payload)
        try:
            return Text(payload.decode())
        except UnicodeDecodeError:
            return Failure(CLOSE_INVALID_DATA, "text is not UTF-8")

    @staticmethod
    def _close(payload: bytes) -> Event:
        if not payload:
            return Close(None, "")
        if len(payload) == 1:
            return Failure(CLOSE_PROTOCOL_ERROR, "bad close frame")
        (code,) = struct.unpack_from("!H", payload)
        if not valid_close_code(code):
            return Failure(CLOSE_PROTOCOL_ERROR, f"bad close code {code}")
        try:
            return Close(code, payload[2:].decode())
        except UnicodeDecodeError:
            return Failure(CLOSE_INVALID_DATA, "close reason is not UTF-8")

    def _fail(self, events: list[Event], failure: Failure) -> list[Event]:
        self.done = True
        self._buf = b""
        self._parts = None
        events.append(failure)
        return events

"""Server-side WebSocket frames (RFC 6455), built once and shared by every recipient.

Server frames are never masked, so the bytes of a frame do not depend on who receives it.
"""

from __future__ import annotations

import struct
import zlib

_TEXT = 0x81  # FIN + text opcode
_RSV1 = 0x40  # permessage-deflate: this message is compressed
_CLOSE = 0x88  # FIN + close opcode


class Numbered(bytes):
    """A message each connection numbers with its own counter: the bytes are the message
    after its number (``"channel":…}``), ``template % n`` (``b'{"sequence_num":%d,'``)
    is what each connection puts before them as it queues the frame. The rest stays one
    shared object: a connection adds only its few bytes of header and number."""

    template: bytes

    def __new__(cls, rest: bytes, template: bytes) -> Numbered:
        obj = super().__new__(cls, rest)
        obj.template = template
        return obj


class Framed(bytes):
    """Complete WebSocket text frames (none, one or several) that a format rendered
    itself: :func:`text_frame` passes them as they are. For a format whose one event is
    several messages (Socket.IO's ``data`` and ``res`` events of one publication) or
    none (a view that shows nothing of it): the hub queues them like any frame."""

    __slots__ = ()


class NumberedFrame(bytes):
    """A text frame of a :class:`Numbered` message, still without its number and header
    (:meth:`tickwire.hub.Connection.push` completes it per connection). ``compressed``:
    the bytes are the permessage-deflate compression of the rest, from a fresh context."""

    template: bytes
    compressed: bool
    #: ``head(n)`` by ``n``: connections that stand at the same number share one
    heads: dict[int, bytes]

    def __new__(cls, rest: bytes, template: bytes, compressed: bool) -> NumberedFrame:
        obj = super().__new__(cls, rest)
        obj.template = template
        obj.compressed = compressed
        obj.heads = {}
        return obj

    def head(self, n: int) -> bytes:
        """The frame header and message start of the frame numbered ``n``; the frame is
        ``head(n) + self``. Compressed, the number travels as a deflate stored block ahead
        of the shared compressed rest (a valid stream: the rest refers to nothing before).
        Built once per ``n`` (most subscribers of a channel stand at the same few)."""
        head = self.heads.get(n)
        if head is not None:
            return head
        start = self.template % n
        if self.compressed:
            start = stored_block(len(start)) + start
        head = frame_header(len(start) + len(self), self.compressed) + start
        if len(self.heads) < 64:  # bounded: a frame lives for one delivery
            self.heads[n] = head
        return head


def numbered_template(frames: list[bytes], digits: int) -> tuple[bytes, int]:
    """``frames`` as one ``%``-template whose ``%d`` are the numbers of its
    :class:`NumberedFrame` s, each number of ``digits`` digits (their headers then do not
    depend on the number); and how many numbers it takes. ``template % numbers`` is the
    frames joined as :meth:`NumberedFrame.head` numbers them, one by one."""
    parts: list[bytes] = []
    count = 0
    for frame in frames:
        if isinstance(frame, NumberedFrame):
            fmt = frame.template
            if fmt.count(b"%") != 1 or b"%d" not in fmt:
                raise ValueError(f"a numbered template takes one %d, got {fmt!r}")
            k = len(fmt) - 2 + digits  # len(fmt % n) for n of ``digits`` digits
            lead = stored_block(k) if frame.compressed else b""  # as head() has it
            head = frame_header(len(lead) + k + len(frame), frame.compressed) + lead
            parts.append(head.replace(b"%", b"%%"))
            parts.append(fmt)
            count += 1
        parts.append(frame.replace(b"%", b"%%"))
    return b"".join(parts), count


def stored_block(k: int) -> bytes:
    """The header of a non-final deflate stored block of ``k`` bytes (RFC 1951 3.2.4):
    how a numbered frame's number travels ahead of its shared compressed rest."""
    return b"\x00" + struct.pack("<HH", k, k ^ 0xFFFF)


def frame_header(n: int, compressed: bool = False) -> bytes:
    """The header of an unfragmented text frame with an ``n``-byte payload."""
    head = _TEXT | _RSV1 if compressed else _TEXT
    if n < 126:
        return bytes((head, n))
    if n < 65536:
        return struct.pack("!BBH", head, 126, n)
    return struct.pack("!BBQ", head, 127, n)


def text_frame(payload: bytes, compressed: bool = False) -> bytes:
    """A complete, unfragmented text frame carrying ``payload`` (UTF-8 JSON, or its
    permessage-deflate compression when ``compressed``: the RSV1 bit is then set).
    A :class:`Numbered` payload gives a :class:`NumberedFrame`."""
    if payload.__class__ is Numbered:
        return NumberedFrame(payload, payload.template, compressed)
    if payload.__class__ is Framed:
        if compressed:
            raise ValueError("a format's own frames cannot be compressed by the hub")
        return payload
    head = _TEXT | _RSV1 if compressed else _TEXT
    n = len(payload)
    if n < 126:
        return bytes((head, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", head, 126, n) + payload
    return struct.pack("!BBQ", head, 127, n) + payload


_SYNC_TAIL = b"\x00\x00\xff\xff"


def deflate_message(payload: bytes, wbits: int = 15, level: int = 6) -> bytes:
    """``payload`` compressed as one permessage-deflate message (RFC 7692), from a fresh
    context: it refers to no earlier message, so the same bytes are valid for every
    client, with or without context takeover, and can be shared between them."""
    if payload.__class__ is Framed:
        raise ValueError("a format's own frames cannot be compressed as one message")
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    data = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    data = data[:-4] if data.endswith(_SYNC_TAIL) else data
    if isinstance(payload, Numbered):  # compress the shared rest; the number is added later
        return Numbered(data, payload.template)
    return data


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and a reason (truncated to fit a control frame)."""
    body = struct.pack("!H", code) + reason.encode()[:123]
    return bytes((_CLOSE, len(body))) + body

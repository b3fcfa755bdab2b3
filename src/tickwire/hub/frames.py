"""Server-side WebSocket frames (RFC 6455), built once and shared by every recipient.

Server frames are never masked, so the bytes of a frame do not depend on who receives it.
"""

from __future__ import annotations

import struct
import zlib

_TEXT = 0x81  # FIN + text opcode
_RSV1 = 0x40  # permessage-deflate: this message is compressed
_CLOSE = 0x88  # FIN + close opcode


def text_frame(payload: bytes, compressed: bool = False) -> bytes:
    """A complete, unfragmented text frame carrying ``payload`` (UTF-8 JSON, or its
    permessage-deflate compression when ``compressed``: the RSV1 bit is then set)."""
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
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    data = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_SYNC_TAIL) else data


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and a reason (truncated to fit a control frame)."""
    body = struct.pack("!H", code) + reason.encode()[:123]
    return bytes((_CLOSE, len(body))) + body

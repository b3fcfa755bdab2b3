"""Server-side WebSocket frames (RFC 6455), built once and shared by every recipient.

Server frames are never masked, so the bytes of a frame do not depend on who receives it.
"""

from __future__ import annotations

import struct

_TEXT = 0x81  # FIN + text opcode
_CLOSE = 0x88  # FIN + close opcode


def text_frame(payload: bytes) -> bytes:
    """A complete, unfragmented text frame carrying ``payload`` (UTF-8 JSON)."""
    n = len(payload)
    if n < 126:
        return bytes((_TEXT, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", _TEXT, 126, n) + payload
    return struct.pack("!BBQ", _TEXT, 127, n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and a reason (truncated to fit a control frame)."""
    body = struct.pack("!H", code) + reason.encode()[:123]
    return bytes((_CLOSE, len(body))) + body

"""Client-side WebSocket framing for the load generator, kept to what it needs.

The generator must out-run the server it measures on one core, so it never decodes a
message it does not have to: :func:`scan` walks frame headers to keep its place in the
stream and to find control frames, and data messages are counted by the marker every
benchmark payload carries (``"bt":``, the publisher's send time in microseconds), with
``bytes.count`` in C for a frame and from its first frame for a run of frames like it.
Only sampled messages are parsed, for their timestamp.
"""

from __future__ import annotations

import base64
import os
import re
import struct

#: Every benchmark payload carries ``"bt":<send time, µs since the UNIX epoch>``.
MARKER = b'"bt":'

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

#: Frames of one shape after a frame that are passed as a run (one match) rather than one
#: by one: below it, the frame-by-frame walk costs less than building the match.
RUN = 2

#: Data frames with payloads shorter than this are handed to the dialect even when it
#: is not inspecting every frame (Engine.IO's ping is the one-byte text frame ``2``).
SHORT = 8


class ProtocolError(Exception):
    """The server sent something that is not a valid server-to-client frame."""


def handshake_request(host: str, port: int, path: str) -> tuple[bytes, bytes]:
    """The HTTP upgrade request and the ``Sec-WebSocket-Key`` it carries."""
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    ).encode()
    return request, key


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A complete masked client frame. The mask is zero: the bytes are sent as they are
    (RFC 6455 asks for an unpredictable mask against proxy cache poisoning, which does
    not apply on loopback; servers must accept any mask)."""
    n = len(payload)
    head = 0x80 | opcode
    if n < 126:
        return struct.pack("!BB4x", head, 0x80 | n) + payload
    if n < 65536:
        return struct.pack("!BBH4x", head, 0x80 | 126, n) + payload
    return struct.pack("!BBQ4x", head, 0x80 | 127, n) + payload


def scan(
    buf: bytes, pos: int, inspect: bool
) -> tuple[int, int, int, list[tuple[int, bytes]] | None]:
    """Walk the complete frames in ``buf`` from ``pos``.

    Returns ``(end, frames, messages, special)``: where the first incomplete frame starts
    (or ``len(buf)``), how many complete frames were passed, how many markers
    (:data:`MARKER`) they carry, and the frames the caller must look at as ``(opcode,
    payload)``: control frames, short data frames (< ``SHORT`` bytes) and, when
    ``inspect`` is true, every frame. ``special`` is None when empty.

    A server's write usually carries a run of data frames of one shape: one channel's
    messages, their payloads padded to one size, so one header and the marker at the
    same offsets. Such a run is passed by one regular expression match (:func:`_shape`),
    in C, instead of one Python step per frame: by induction each matched header gives
    the same length, so the next frame starts one frame on. A frame of a run with a
    marker elsewhere *besides* would be undercounted (no benchmark payload has two).
    """
    n = len(buf)
    frames = 0
    messages = 0
    special: list[tuple[int, bytes]] | None = None
    while pos + 2 <= n:
        b1 = buf[pos + 1]
        if b1 < 126:
            start = pos + 2
            end = start + b1
        elif b1 == 126:
            if pos + 4 > n:
                break
            start = pos + 4
            end = start + ((buf[pos + 2] << 8) | buf[pos + 3])
        elif b1 == 127:
            if pos + 10 > n:
                break
            start = pos + 10
            end = start + int.from_bytes(buf[pos + 2 : start], "big")
        else:
            raise ProtocolError("masked frame from the server")
        if end > n:
            break
        frames += 1
        b0 = buf[pos]
        marks = buf.count(MARKER, start, end)
        messages += marks
        if inspect or b0 & 0x08 or end - start < SHORT:
            if special is None:
                special = []
            special.append((b0 & 0x0F, buf[start:end]))
        elif (
            marks
            and end + RUN * (end - pos) <= n  # a run is worth its match from RUN frames on
            and buf[end : end + start - pos] == buf[pos:start]
        ):
            if marks == 1:  # the usual case: the pattern is known by the one offset
                key = (buf[pos:start], buf.find(MARKER, start, end) - pos, end - pos)
                pattern = _SHAPES.get(key) or _shape(buf, pos, start, end, marks, key)
            else:
                pattern = _shape(buf, pos, start, end, marks, None)
            match = pattern.match(buf, end)  # a repetition: it always matches, maybe empty
            stop = match.end() if match is not None else end
            run = (stop - end) // (end - pos)
            frames += run
            messages += run * marks
            end = stop
        pos = end
    return pos, frames, messages, special


_SHAPES: dict[object, re.Pattern[bytes]] = {}
_MAX_SHAPES = 256


def _shape(
    buf: bytes, pos: int, start: int, end: int, marks: int, key: object
) -> re.Pattern[bytes]:
    """A pattern matching any number of frames shaped like ``buf[pos:end]``: its header,
    then each of its ``marks`` markers at the same offsets, any bytes between. It is
    kept under ``key``, or when that is None under the header and the gaps between the
    markers."""
    gaps = []
    i = last = start
    for _ in range(marks):
        i = buf.find(MARKER, i, end)
        gaps.append(i - last)
        i += len(MARKER)
        last = i
    gaps.append(end - last)
    if key is None:
        key = (buf[pos:start], tuple(gaps))
        known = _SHAPES.get(key)
        if known is not None:
            return known
    if len(_SHAPES) >= _MAX_SHAPES:
        _SHAPES.clear()
    body = re.escape(MARKER).join(b".{%d}" % gap for gap in gaps)
    pattern = _SHAPES[key] = re.compile(
        b"(?:" + re.escape(buf[pos:start]) + body + b")*+", re.DOTALL
    )
    return pattern


def sample_ts(buf: bytes, start: int, end: int) -> int:
    """The send time carried by the first marked message in ``buf[start:end]``, or -1."""
    i = buf.find(MARKER, start, end)
    if i < 0:
        return -1
    i += len(MARKER)
    while i < end and buf[i] == 32:  # a space after the colon
        i += 1
    j = i
    while j < end and 48 <= buf[j] <= 57:
        j += 1
    return int(buf[i:j]) if j > i else -1

"""The sans-I/O frame reader (tickwire.server.wsframes): bytes in, events out, every
refusal a close code — and, as a property, no input raises and the chunking of the
bytes never changes what they mean."""

from __future__ import annotations

import itertools
import os
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickwire.server.wsframes import (
    Binary,
    Close,
    Event,
    Failure,
    FrameReader,
    Ping,
    Pong,
    Text,
    pong_frame,
    unmask,
    valid_close_code,
)

MAX = 4096


def frame(
    payload: bytes,
    opcode: int = 0x1,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """A client frame; ``length`` overrides the declared payload length."""
    n = len(payload) if length is None else length
    head = bytes(((0x80 if fin else 0) | rsv | opcode,))
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes((mask_bit | n,))
    elif n < 65536:
        head += struct.pack("!BH", mask_bit | 126, n)
    else:
        head += struct.pack("!BQ", mask_bit | 127, n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read(data: bytes, *, deflate: bool = False, max_size: int = MAX) -> list[Event]:
    return FrameReader(max_size, deflate=deflate).feed(data)


def failure(data: bytes, *, deflate: bool = False) -> tuple[int, str]:
    events = read(data, deflate=deflate)
    assert events and isinstance(events[-1], Failure), events
    return events[-1].code, events[-1].reason


def deflate(messages: list[bytes], wbits: int = 15) -> list[bytes]:
    """permessage-deflate payloads as a client with context takeover sends them."""
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = []
    for m in messages:
        data = c.compress(m) + c.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        out.append(data[:-4])
    return out


# -- what valid frames mean -------------------------------------------------------------


def test_messages_pings_pongs_and_the_close_frame() -> None:
    data = (
        frame(b'{"op":"ping"}')
        + frame(b"\x00\xff", 0x2)
        + frame(b"hi", 0x9)
        + frame(b"", 0xA)
        + frame(struct.pack("!H", 1001) + "bye ✓".encode(), 0x8)
    )
    assert read(data) == [
        Text('{"op":"ping"}'),
        Binary(b"\x00\xff"),
        Ping(b"hi"),
        Pong(b""),
        Close(1001, "bye ✓"),
    ]


def test_extended_lengths() -> None:
    for n in (125, 126, 65535, 65536):
        assert read(frame(b"x" * n), max_size=70_000) == [Text("x" * n)]


def test_fragments_are_joined_with_control_frames_between_them() -> None:
    data = (
        frame(b"ab", fin=False)
        + frame(b"p", 0x9)
        + frame(b"cd", 0x0, fin=False)
        + frame(b"ef", 0x0)
        + frame(b"next")
    )
    assert read(data) == [Ping(b"p"), Text("abcdef"), Text("next")]


def test_any_split_of_the_bytes_gives_the_same_events() -> None:
    data = frame(b"x" * 300) + frame(b"ab", fin=False) + frame(b"c", 0x0) + frame(b"", 0x8)
    whole = read(data)
    for cut in range(len(data) + 1):
        reader = FrameReader(MAX)
        assert reader.feed(data[:cut]) + reader.feed(data[cut:]) == whole


def test_nothing_is_read_after_the_close_frame() -> None:
    reader = FrameReader(MAX)
    assert reader.feed(frame(b"", 0x8) + frame(b"late")) == [Close(None, "")]
    assert reader.done and reader.feed(frame(b"later")) == []


def test_compressed_messages_inflate_with_context_takeover() -> None:
    first, second = deflate([b'{"op":"subscribe"}' * 3, b'{"op":"subscribe"}' * 3])
    data = frame(first, rsv=0x40) + frame(b"plain") + frame(second, rsv=0x40)
    assert read(data, deflate=True) == [
        Text('{"op":"subscribe"}' * 3),
        Text("plain"),
        Text('{"op":"subscribe"}' * 3),
    ]


def test_a_compressed_message_may_be_fragmented() -> None:
    (payload,) = deflate([b"y" * 500])
    data = frame(payload[:3], rsv=0x40, fin=False) + frame(payload[3:], 0x0)
    assert read(data, deflate=True) == [Text("y" * 500)]


# -- what is refused, with which code ----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "fragment"),
    [
        (frame(b"x", masked=False), 1002, "masked"),
        (frame(b"x", rsv=0x20), 1002, "reserved"),
        (frame(b"x", rsv=0x10), 1002, "reserved"),
        (frame(b"x", rsv=0x40), 1002, "permessage-deflate"),
        (frame(b"x", 0x3), 1002, "opcode 3"),
        (frame(b"x", 0xB), 1002, "opcode 11"),
        (frame(b"x", 0x9, fin=False), 1002, "fragmented control"),
        (frame(b"x" * 126, 0x9), 1002, "125"),
        (frame(b"x", 0xA, rsv=0x40), 1002, "compressed control"),
        (frame(b"x", 0x0), 1002, "continuation"),
        (frame(b"a", fin=False) + frame(b"b"), 1002, "inside a fragmented"),
        (frame(b"a", fin=False) + frame(b"b", 0x0, rsv=0x40), 1002, "reserved"),
        (frame(b"\xff\xfe"), 1007, "UTF-8"),
        (frame(b"\x03", 0x8), 1002, "close frame"),
        (frame(struct.pack("!H", 1005), 0x8), 1002, "close code 1005"),
        (frame(struct.pack("!H", 999), 0x8), 1002, "close code 999"),
        (frame(struct.pack("!H", 5000), 0x8), 1002, "close code 5000"),
        (frame(struct.pack("!H", 1000) + b"\xff", 0x8), 1007, "UTF-8"),
        (frame(b"x" * (MAX + 1)), 1009, f"exceeds {MAX}"),
        (frame(b"x" * MAX, fin=False) + frame(b"y", 0x0), 1009, f"exceeds {MAX}"),
    ],
)
def test_refusals_carry_their_close_code(data: bytes, code: int, fragment: str) -> None:
    got_code, reason = failure(data)
    assert got_code == code and fragment in reason


def test_too_big_is_refused_from_the_header_before_the_payload_is_held() -> None:
    reader = FrameReader(MAX)
    head = frame(b"", length=10 * MAX)[:8]  # header, extended length, mask: no payload
    assert reader.feed(head) == [Failure(1009, f"message exceeds {MAX} bytes")]


def test_a_64_bit_length_with_the_top_bit_set_is_refused() -> None:
    head = bytes((0x81, 0x80 | 127)) + struct.pack("!Q", 1 << 63) + b"mask"
    assert failure(head) == (1002, "bad frame length")


def test_compression_bombs_and_corrupt_data_are_refused() -> None:
    (bomb,) = deflate([b"\x00" * (MAX * 50)])
    assert len(bomb) < MAX
    assert failure(frame(bomb, 0x2, rsv=0x40), deflate=True) == (
        1009,
        f"message exceeds {MAX} bytes",
    )
    assert failure(frame(b"\xff\xff\xff", rsv=0x40), deflate=True)[0] == 1002


def test_events_before_a_refusal_are_kept_and_nothing_after() -> None:
    reader = FrameReader(MAX)
    events = reader.feed(frame(b"one") + frame(b"x", masked=False) + frame(b"two"))
    assert events == [Text("one"), Failure(1002, "client frames must be masked")]
    assert reader.feed(frame(b"three")) == []


def test_helpers() -> None:
    payload, mask = os.urandom(1001), os.urandom(4)
    assert unmask(payload, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert unmask(b"", mask) == b""
    assert pong_frame(b"abc") == b"\x8a\x03abc"
    assert [
        c for c in (999, 1000, 1003, 1004, 1005, 1006, 1007, 1014, 1015) if valid_close_code(c)
    ] == [
        1000,
        1003,
        1007,
        1014,
    ]
    assert valid_close_code(3000) and valid_close_code(4999) and not valid_close_code(2999)


# -- properties: any bytes, any chunking --------------------------------------------------

CODES = {1002, 1007, 1009}


def check_events(events: list[Event]) -> None:
    """At most one failure, with a documented code, and nothing after it or a close."""
    for i, event in enumerate(events):
        assert isinstance(event, Text | Binary | Ping | Pong | Close | Failure)
        if isinstance(event, Failure):
            assert event.code in CODES and event.reason
        if isinstance(event, Failure | Close):
            assert i == len(events) - 1


def feed_in_chunks(
    data: bytes, cuts: list[int], *, deflate: bool = False, max_size: int = 300
) -> list[Event]:
    reader = FrameReader(max_size, deflate=deflate)
    events: list[Event] = []
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for a, b in itertools.pairwise(bounds):
        events += reader.feed(data[a:b])
    return events


@given(
    data=st.binary(max_size=600),
    cuts=st.lists(st.integers(0, 600), max_size=6),
    deflate=st.booleans(),
)
def test_any_bytes_in_any_chunks_mean_the_same_and_never_raise(
    data: bytes, cuts: list[int], deflate: bool
) -> None:
    whole = FrameReader(300, deflate=deflate).feed(data)
    check_events(whole)
    assert feed_in_chunks(data, cuts, deflate=deflate) == whole


message = st.tuples(
    st.sampled_from([0x1, 0x2]),
    st.text(max_size=80).map(str.encode) | st.binary(max_size=80),
    st.integers(1, 3),  # fragments
    st.booleans(),  # a ping among them
)


def stream_of(messages: list[tuple[int, bytes, int, bool]]) -> tuple[bytes, list[Event]]:
    data = b""
    expected: list[Event] = []
    for opcode, payload, parts, ping in messages:
        step = max(1, len(payload) // parts)
        chunks = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
        if ping:  # between the first two fragments, or before a whole message
            expected.append(Ping(b"p"))
            if len(chunks) == 1:
                data += frame(b"p", 0x9)
        for i, chunk in enumerate(chunks):
            data += frame(chunk, opcode if i == 0 else 0x0, fin=i == len(chunks) - 1)
            if ping and i == 0 and len(chunks) > 1:
                data += frame(b"p", 0x9)
        if opcode == 0x1:
            try:
                expected.append(Text(payload.decode()))
            except UnicodeDecodeError:
                expected.append(Failure(1007, "text is not UTF-8"))
                return data, expected
        else:
            expected.append(Binary(payload))
    return data, expected


@given(
    messages=st.lists(message, max_size=6),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), max_size=3),
)
def test_valid_streams_read_back_and_mutated_ones_fail_with_a_code(
    messages: list[tuple[int, bytes, int, bool]],
    cuts: list[int],
    flips: list[tuple[int, int]],
) -> None:
    data, expected = stream_of(messages)
    assert feed_in_chunks(data, cuts, max_size=1000) == expected
    if not data:
        return
    mutated = bytearray(data)
    for pos, xor in flips:
        mutated[pos % len(data)] ^= xor
    events = feed_in_chunks(bytes(mutated), cuts)
    check_events(events)
    assert events == FrameReader(300).feed(bytes(mutated))

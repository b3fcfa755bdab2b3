"""Coinbase on the hub: each publication is encoded once and shared; each connection
splices in only its own ``sequence_num``, in plain and in permessage-deflate frames; a
reset the wire cannot express closes with a code the SDK reconnects on."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickwire.dialects.coinbase import Coinbase
from tickwire.dialects.native import NATIVE
from tickwire.hub import CLOSE_STREAM_RESET, Numbered, text_frame
from tickwire.hub.batch import Batch
from tickwire.hub.frames import NumberedFrame, numbered_template
from tickwire.hub.wire import deflated
from tickwire.model.markets import default_registry
from tickwire.model.publication import Publication

from .test_hub import MemoryTransport, live, next_iteration, setup

DIALECT = Coinbase.configure(default_registry())
FMT = DIALECT.fmt
TRADE = b'{"id":7,"price":"65000.00","size":"0.10000000","side":"buy","ts":1700000000000}'


def frames(t: MemoryTransport) -> list[tuple[int, bytes]]:
    """(first byte, payload) of every frame written."""
    out = []
    data = b"".join(t.writes)
    while data:
        n, start = data[1] & 0x7F, 2
        if n == 126:
            n, start = int.from_bytes(data[2:4]), 4
        elif n == 127:
            n, start = int.from_bytes(data[2:10]), 10
        out.append((data[0], data[start : start + n]))
        data = data[start + n :]
    return out


def inflate(payload: bytes) -> dict[str, Any]:
    d = zlib.decompressobj(-15)
    data: dict[str, Any] = json.loads(d.decompress(payload + b"\x00\x00\xff\xff"))
    return data


async def test_numbered_frames_share_the_encoding_and_count_per_connection() -> None:
    engine, hub = await setup()
    encoded = 0
    real_pub = FMT.pub

    def counting(pub: Publication) -> bytes:
        nonlocal encoded
        encoded += 1
        return real_pub(pub)

    FMT.pub = counting  # type: ignore[method-assign]
    try:
        ta, tb, tn = MemoryTransport(), MemoryTransport(), MemoryTransport()
        a = hub.connect(ta, FMT, 1 << 20)
        b = hub.connect(tb, FMT, 1 << 20)
        n = hub.connect(tn, NATIVE, 1 << 20)
        for conn in (a, b, n):
            await live(hub, conn, "trades:BTC-USD")
        hub.send(b, Numbered(b'"channel":"x","events":[]}', b'{"sequence_num":%d,'))
        for _ in range(3):
            engine.publish_now("trades:BTC-USD", TRADE)
        await next_iteration()
    finally:
        del FMT.pub
    assert encoded == 3  # once per publication, not per connection
    ma, mb = ta.messages(), tb.messages()
    assert [m["sequence_num"] for m in ma] == [0, 1, 2]
    assert [m["sequence_num"] for m in mb] == [0, 1, 2, 3]  # its own reply counted first
    assert ma[0]["events"][0]["trades"][0]["side"] == "SELL"  # the maker's side
    assert ma[0]["channel"] == "market_trades" and ma[1:] == [
        {**m, "sequence_num": m["sequence_num"] - 1} for m in mb[2:]
    ]
    assert [m["type"] for m in tn.messages()] == ["pub"] * 3  # native: untouched


async def test_compressed_numbered_frames_inflate_with_their_number() -> None:
    engine, hub = await setup()
    fmt = deflated(FMT, 15)
    ta, tb = MemoryTransport(), MemoryTransport()
    a = hub.connect(ta, fmt, 1 << 20)
    b = hub.connect(tb, fmt, 1 << 20)
    await live(hub, a, "trades:BTC-USD")
    hub.send(b, Numbered(b'"channel":"x","events":[]}', b'{"sequence_num":%d,'))
    await live(hub, b, "trades:BTC-USD")
    engine.publish_now("trades:BTC-USD", TRADE)
    await next_iteration()
    fa, fb = frames(ta), frames(tb)
    assert fa[0][0] == 0xC1 and fb[1][0] == 0xC1  # FIN + RSV1 + text
    assert fb[0][0] == 0x81  # the reply: not compressed
    got_a, got_b = inflate(fa[0][1]), inflate(fb[1][1])
    assert (got_a["sequence_num"], got_b["sequence_num"]) == (0, 1)
    assert got_a["events"] == got_b["events"] and got_a["channel"] == "market_trades"


def test_a_numbered_frame_is_the_plain_frame_with_its_number() -> None:
    rest = Numbered(b'"a":1}' * 40, b'{"sequence_num":%d,')
    frame = text_frame(rest)
    assert isinstance(frame, NumberedFrame)
    for n in (0, 9, 10**12):
        whole = frame.head(n) + frame
        expected = text_frame(b'{"sequence_num":%d,' % n + b'"a":1}' * 40)
        assert whole == expected


def one_by_one(frames: list[bytes], number: int) -> bytes:
    """The reference: each numbered frame completed by its own head, in order."""
    out, n = [], number
    for frame in frames:
        if isinstance(frame, NumberedFrame):
            out.append(frame.head(n))
            n += 1
        out.append(frame)
    return b"".join(out)


# rests of both header sizes (short, 16-bit) with '%' in them, plain and compressed,
# between frames of nobody's number (length bytes that read as '%': the test after)
_REST = st.binary(min_size=0, max_size=300).map(lambda b: b.replace(b"\x00", b"%"))
_FRAME = st.one_of(
    st.tuples(_REST, st.booleans()).map(
        lambda rc: text_frame(Numbered(rc[0], b'{"sequence_num":%d,'), rc[1])
    ),
    _REST.map(lambda b: text_frame(b'{"type":"x"' + b + b"}")),
)


@given(
    st.lists(_FRAME, min_size=1, max_size=12),
    st.one_of(st.integers(0, 10**6), st.sampled_from([0, 8, 9, 95, 99, 999, 10**9 - 3])),
    st.integers(0, 3),
)
def test_a_batch_numbers_its_frames_as_each_frame_would_one_by_one(
    frames: list[bytes], number: int, start: int
) -> None:
    """One template per batch and digit count gives every connection's number the
    bytes head() gives frame by frame, across a power of ten too (the slow way then)."""
    batch = Batch([])
    for frame in frames:
        batch.append(frame)
    start = min(start, len(frames) - 1)
    data, count = batch.join(start, None, number)
    assert data == one_by_one(frames[start:], number)
    assert count == sum(isinstance(f, NumberedFrame) for f in frames[start:])
    again, _ = batch.join(start, None, number + 1)  # the same template, the next number
    assert again == one_by_one(frames[start:], number + 1)


def test_a_length_byte_that_reads_as_percent_is_taken_as_it_is() -> None:
    """Payload lengths whose header bytes are 0x25 (``%``): 37, 0x0125, 0x2525."""
    prefix = len(b'{"sequence_num":5,')
    for length in (0x25, 0x0125, 0x2525):
        for compressed in (False, True):
            lead = 5 if compressed else 0  # the stored block's header
            rest = Numbered(b"x" * (length - prefix - lead), b'{"sequence_num":%d,')
            frame = text_frame(rest, compressed)
            assert isinstance(frame, NumberedFrame)
            assert b"%" in frame.head(5)[:4]
            batch = Batch([])
            batch.append(frame)
            batch.append(frame)
            assert batch.join(0, None, 5) == (one_by_one([frame, frame], 5), 2)


def test_a_template_takes_exactly_one_number_per_numbered_frame() -> None:
    frame = text_frame(Numbered(b'"a":"50%"}', b'{"sequence_num":%d,'))
    assert isinstance(frame, NumberedFrame)
    template, count = numbered_template([frame, frame], 3)
    assert count == 2 and template % (100, 101) == frame.head(100) + frame + frame.head(101) + frame
    bad = text_frame(Numbered(b"}", b'{"n":%d,"m":%d,'))
    with pytest.raises(ValueError, match="one %d"):
        numbered_template([bad], 1)


async def test_reset_closes_trade_subscribers_and_resnapshots_the_book() -> None:
    engine, hub = await setup(size=3)
    tt, tbk = MemoryTransport(), MemoryTransport()
    trades = hub.connect(tt, FMT, 1 << 20)
    book = hub.connect(tbk, FMT, 1 << 20)
    snap = b'{"bids":[["1.00","1.00000000"]],"asks":[],"checksum":0}'
    engine.publish_now("book:BTC-USD", snap, snapshot=snap)
    await live(hub, trades, "trades:BTC-USD")
    await live(hub, book, "book:BTC-USD", stateful=True)
    await engine.unsubscribe(["trades:BTC-USD", "book:BTC-USD"])
    for _ in range(10):  # lost: history keeps 3
        engine.publish_now("trades:BTC-USD", TRADE)
        engine.publish_now("book:BTC-USD", snap, snapshot=snap)
    await engine.subscribe(["trades:BTC-USD", "book:BTC-USD"])
    engine.publish_now("trades:BTC-USD", TRADE)
    engine.publish_now("book:BTC-USD", snap, snapshot=snap)
    for _ in range(5):
        await next_iteration()
    assert trades.closed
    closing = frames(tt)[-1]
    assert closing[0] == 0x88 and int.from_bytes(closing[1][:2]) == CLOSE_STREAM_RESET
    msgs = tbk.messages()
    assert [m["events"][0]["type"] for m in msgs] == ["snapshot", "snapshot"]
    assert [m["sequence_num"] for m in msgs] == [0, 1]
    assert not book.closed


async def test_subscribers_at_the_same_number_share_one_write_buffer() -> None:
    engine, hub = await setup()
    ts = [MemoryTransport() for _ in range(3)]
    conns = [hub.connect(t, FMT, 1 << 20) for t in ts]
    for conn in conns:
        await live(hub, conn, "trades:BTC-USD")
    hub.send(conns[2], Numbered(b'"channel":"x","events":[]}', b'{"sequence_num":%d,'))
    await next_iteration()
    for t in ts:
        t.writes.clear()
    for _ in range(4):
        engine.publish_now("trades:BTC-USD", TRADE)
    await next_iteration()
    [a], [b], [c] = (t.writes for t in ts)
    assert a is b  # the same numbers: one join for both
    assert a != c and [m["sequence_num"] for m in ts[2].messages()] == [1, 2, 3, 4]
    assert [m["sequence_num"] for m in ts[0].messages()] == [0, 1, 2, 3]
    assert hub.joined == {}  # kept for one flush only

"""The load generator counts what a server sends, exactly, without decoding it all."""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickwire.auth import KeyKind, create_key
from tickwire.client.bench import add_parser, config_from_args
from tickwire.client.bench.config import (
    BenchConfig,
    BenchConfigError,
    Target,
    channels_for,
    parse_target,
)
from tickwire.client.bench.dialects import (
    MIXED,
    EngineIO4Dialect,
    NativeDialect,
    RangerDialect,
    dialect_for,
)
from tickwire.client.bench.runner import run_bench
from tickwire.client.bench.stats import Histogram, bucket, bucket_value
from tickwire.client.bench.wire import MARKER, scan
from tickwire.client.bench.worker import BenchClient, Counters
from tickwire.server.auth_routes import AUTH_KEY

from .authkit import SECRET
from .harness import run_gateway

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    head = 0x80 | opcode
    if n < 126:
        return bytes((head, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", head, 126, n) + payload
    return struct.pack("!BBQ", head, 127, n) + payload


def pub(i: int, pad: int = 100) -> bytes:
    data = {"bt": 1_700_000_000_000_000 + i, "n": i, "pad": "x" * pad}
    return json.dumps({"type": "pub", "channel": "trades:BENCH", "seq": i, "data": data}).encode()


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def unmask(data: bytes) -> tuple[int, bytes]:
    """Opcode and payload of one client frame."""
    n = data[1] & 0x7F
    pos = 2
    if n == 126:
        n = struct.unpack("!H", data[2:4])[0]
        pos = 4
    mask = data[pos : pos + 4]
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(data[pos + 4 : pos + 4 + n]))
    return data[0] & 0x0F, body


STREAM = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    + frame(b'{"id":1,"type":"subscribed","channels":[]}')
    + b"".join(frame(pub(i)) for i in range(5))
    + frame(b"hi", opcode=9)  # a ping
    + frame(b'{"type":"heartbeat","ts":1}')
    + b"".join(frame(pub(i, pad=300)) for i in range(5, 12))  # 16-bit lengths
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=25))
def test_counts_exactly_however_the_stream_is_split(cuts: list[int]) -> None:
    stats = Counters(sample_every=1)
    loop = asyncio.new_event_loop()
    try:
        client = BenchClient(stats, NativeDialect(["trades:BENCH"]), b"GET", loop.create_future())
        transport = FakeTransport()
        client.connection_made(transport)  # type: ignore[arg-type]
        bounds = [0, *sorted(set(cuts)), len(STREAM)]
        for a, b in itertools.pairwise(bounds):
            client.data_received(STREAM[a:b])
    finally:
        loop.close()
    assert stats.opened == 1 and stats.ready == 1 and stats.failed == 0
    assert stats.messages == 12
    assert stats.frames == 15  # subscribed + 12 pubs + ping + heartbeat
    assert stats.bytes == len(STREAM)
    sent = [unmask(w) for w in transport.written[1:]]
    assert sent[0] == (1, b'{"id":1,"op":"subscribe","channels":["trades:BENCH"]}')
    assert (0xA, b"hi") in sent  # the ping was answered with a pong
    assert stats.recent.total > 0


def test_scan_stops_at_an_incomplete_frame() -> None:
    data = frame(b"a" * 10) + frame(b"b" * 200)[:50]
    end, frames, messages, special = scan(data, 0, False)
    assert (end, frames, messages) == (12, 1, 0)
    assert special is None


def walk(buf: bytes, inspect: bool) -> tuple[int, int, int, list[tuple[int, bytes]] | None]:
    """The reference: one frame at a time, as RFC 6455 reads."""
    pos = frames = 0
    special: list[tuple[int, bytes]] = []
    while pos + 2 <= len(buf):
        n, start = buf[pos + 1], pos + 2
        if n == 126:
            n, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
        elif n == 127:
            n, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
        if start > len(buf) or start + n > len(buf):
            break
        frames += 1
        if inspect or buf[pos] & 0x08 or n < 8:
            special.append((buf[pos] & 0x0F, buf[start : start + n]))
        pos = start + n
    return pos, frames, buf.count(MARKER, 0, pos), special or None


#: frames as a server writes them: runs of one length (one channel's messages), a length
#: that changes (a sequence number gaining a digit), control and short frames among them
FRAMES = st.one_of(
    st.builds(lambda p: frame(b"x" * p), st.sampled_from([8, 9, 120, 125, 126, 200, 300])),
    st.builds(frame, st.sampled_from([pub(1), pub(2), pub(10), pub(3, pad=300)])),
    st.builds(
        lambda a, b: frame(b"x" * a + MARKER + b"y" * b), st.integers(0, 3), st.integers(3, 5)
    ),
    st.builds(lambda p: frame(p, opcode=9), st.binary(max_size=5)),
    st.builds(lambda p: frame(b"2" * p), st.integers(0, 7)),
    st.builds(lambda p: frame(b"y" * p, opcode=2), st.sampled_from([8, 129, 137, 65536])),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(FRAMES, st.integers(1, 40)), max_size=8),
    st.integers(0, 400),
    st.booleans(),
)
def test_scan_passes_runs_of_frames_exactly_as_one_frame_at_a_time(
    runs: list[tuple[bytes, int]], cut: int, inspect: bool
) -> None:
    buf = b"".join(f * k for f, k in runs)
    for data in (buf, buf[: max(0, len(buf) - cut)]):  # whole, and cut mid-frame
        assert scan(data, 0, inspect) == walk(data, inspect)


def test_a_run_ends_where_a_frame_of_the_same_length_lacks_the_marker() -> None:
    marked = frame(b"x" * 20 + MARKER + b"y" * 20)
    unmarked = frame(b"x" * (20 + len(MARKER) + 20))  # the same header, no marker
    moved = frame(b"x" * 21 + MARKER + b"y" * 19)  # the marker one byte on
    for tail in (unmarked, moved):
        data = marked * 4 + tail * 5 + marked * 3
        assert scan(data, 0, False) == walk(data, False)
        assert scan(data, 0, False)[2] == 7 + (5 if tail is moved else 0)


def test_scan_finds_where_a_run_ends() -> None:
    a, b = frame(pub(9)), frame(pub(10))  # one byte apart: the sequence gains a digit
    data = a * 7 + b * 5 + frame(b"p", opcode=9) + a * 3 + b[:40]
    end, frames, messages, special = scan(data, 0, False)
    assert (end, frames, messages) == (len(data) - 40, 16, 15)
    assert special == [(9, b"p")]


def test_engineio_dialect_handshake_and_pings() -> None:
    d = EngineIO4Dialect(["trades:BENCH"])
    assert d.on_message(b'0{"sid":"x","pingInterval":25000}', False).send == [b"40"]
    step = d.on_message(b'40{"sid":"y"}', False)
    assert step.send == [b'420["subscribe",{"channels":["trades:BENCH"]}]']
    assert d.on_message(b'430[{"ok":true}]', False).ready
    assert d.on_message(b"2", True).send == [b"3"]
    assert d.on_message(b'44{"message":"no"}', False).error is not None


def test_native_dialect_reports_a_refused_subscribe() -> None:
    d = NativeDialect(["nope:X"])
    step = d.on_message(b'{"id":1,"type":"error","code":"bad_channel","message":"m"}', False)
    assert step.error is not None and "bad_channel" in step.error


def test_ranger_dialect_subscribes_streams_and_skips_the_challenge() -> None:
    d = RangerDialect(["trades:BENCH", "book:BTC-USD", "ticker:A", "ticker:B", "candles:X:1m"])
    assert d.opening() == [
        b'{"event":"subscribe","streams":["bench.trades","btcusd.ob-inc","global.tickers",'
        b'"x.kline-1m"]}'
    ]
    assert d.on_message(b'{"challenge":"abc"}', False).ready is False
    assert d.on_message(b'{"success":{"message":"subscribed","streams":[]}}', False).ready
    assert d.on_message(b'{"error":"Unknown streams: x.kline-1m"}', False).error is not None


def test_histogram_percentiles_are_within_bucket_precision() -> None:
    h = Histogram()
    for v in range(1, 10_001):
        h.add(v * 10)  # 10 µs .. 100 ms
    p50 = h.percentile(50)
    p99 = h.percentile(99)
    assert p50 is not None and abs(p50 - 50_000) / 50_000 < 0.04
    assert p99 is not None and abs(p99 - 99_000) / 99_000 < 0.04
    for v in (0, 5, 63, 64, 1000, 123_456, 10**9):
        assert abs(bucket_value(bucket(v)) - v) <= max(1.0, v * 0.035)


def test_channel_patterns() -> None:
    assert channels_for(("trades:P{conn}", "trades:S"), 7, 1) == ["trades:P7", "trades:S"]
    assert channels_for(("book:M{mod:20}",), 45, 1) == ["book:M5"]
    picks = [channels_for(("book:M{zipf:20}",), i, 1)[0] for i in range(2000)]
    assert picks == [channels_for(("book:M{zipf:20}",), i, 1)[0] for i in range(2000)]
    assert picks.count("book:M0") > picks.count("book:M19") * 5


def test_only_loopback_targets() -> None:
    assert parse_target("ws://127.0.0.1:9000", "/ws") == Target("127.0.0.1", 9000, "/ws")
    assert parse_target("ws://localhost:1/x?y=1", "/ws").path == "/x?y=1"
    with pytest.raises(BenchConfigError, match="loopback"):
        parse_target("ws://192.0.2.1:9000", "/ws")
    with pytest.raises(BenchConfigError, match="ws://"):
        parse_target("http://127.0.0.1:9000", "/ws")


PER_CONNECTION = 300


async def tiny_server(ready: asyncio.Event) -> tuple[asyncio.Server, int]:
    """Answers the handshake and a subscribe, then sends PER_CONNECTION marked frames in
    a few writes, with a ping and a heartbeat among them."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        _, b1 = await reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
        await reader.readexactly(4 + n)
        writer.write(frame(b'{"id":1,"type":"subscribed","channels":[]}'))
        await ready.wait()
        for start in range(0, PER_CONNECTION, 100):
            chunk = b"".join(frame(pub(i)) for i in range(start, start + 100))
            writer.write(chunk + frame(b"p", opcode=9) + frame(b'{"type":"heartbeat"}'))
            await writer.drain()
        try:
            await reader.read()  # until the generator closes
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port


async def test_generator_counts_every_message_from_a_real_server() -> None:
    go = asyncio.Event()
    server, port = await tiny_server(go)
    config = BenchConfig(
        target=Target("127.0.0.1", port, "/ws"),
        connections=12,
        workers=2,
        warmup=0.2,
        duration=0.5,
    )
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, go.set)
    async with server:
        result: dict[str, Any] = await asyncio.to_thread(run_bench, config, display=False)
    assert result["ready"] == 12 and result["failed"] == 0
    assert result["total_messages"] == 12 * PER_CONNECTION
    assert result["total_frames"] == 12 * (1 + PER_CONNECTION + 2 * (PER_CONNECTION // 100))


def test_mixed_spreads_the_connections_over_the_five_dialects_in_turn() -> None:
    names = [dialect_for("mixed", i).name for i in range(10)]
    assert names == [*MIXED, *MIXED]
    assert sorted(MIXED) == ["coinbase", "eio4", "native", "opcode", "ranger"]
    assert dialect_for("ranger", 3) is RangerDialect


def config_from_add_parser_args(argv: list[str]) -> BenchConfig:
    parser = argparse.ArgumentParser(prog="tickwire")
    add_parser(parser.add_subparsers(dest="command"))
    return config_from_args(parser.parse_args(["bench", *argv]))


def test_mixed_takes_no_path_in_the_url() -> None:
    assert config_from_add_parser_args(["--dialect", "mixed"]).target.path == ""
    with pytest.raises(BenchConfigError, match="without a path"):
        config_from_add_parser_args(["--dialect", "mixed", "--url", "ws://127.0.0.1:1/ws"])


async def test_a_mixed_run_subscribes_every_dialect_to_one_channel_of_a_real_gateway() -> None:
    """Ten connections, two of each dialect, on one synthetic channel: every one is ready
    (each dialect's subscribe answered on its own path) and counts deliveries."""
    spec = "channel=trades:BENCH,rate=200,batch=2,size=150"
    async with run_gateway(auth_secret=SECRET, synthetic=spec) as gw:
        auth = gw.runner.app[AUTH_KEY]
        await create_key(auth.store, kind=KeyKind.PASSWORD, user_id="bench", password="pw-bench-1")
        config = BenchConfig(
            target=Target("127.0.0.1", gw.port, ""),
            dialect="mixed",
            connections=10,
            workers=1,
            warmup=0.2,
            duration=0.5,
            login="bench:pw-bench-1",
        )
        result: dict[str, Any] = await asyncio.to_thread(run_bench, config, display=False)
    assert (result["ready"], result["failed"], result["lost"]) == (10, 0, 0), result["errors"]
    assert result["total_messages"] > 0

"""permessage-deflate: off unless enabled; when a client asks, each publication is
compressed once and the same bytes go to every client of that window size."""

from __future__ import annotations

import json
import zlib

import aiohttp

from tickwire.dialects.native import NATIVE
from tickwire.hub.frames import deflate_message, text_frame
from tickwire.hub.wire import deflated

from .harness import run_gateway
from .wsraw import RawClient


def inflate(decoder: zlib._Decompress, message: bytes) -> bytes:
    return decoder.decompress(message + b"\x00\x00\xff\xff")


def test_messages_compressed_apart_decode_with_and_without_context_takeover() -> None:
    msgs = [json.dumps({"i": i, "pad": "x" * 200}).encode() for i in range(5)]
    compressed = [deflate_message(m) for m in msgs]
    assert all(len(c) < len(m) for c, m in zip(compressed, msgs, strict=True))
    # one decoder kept across messages (context takeover, what most clients do)
    kept = zlib.decompressobj(-15)
    assert [inflate(kept, c) for c in compressed] == msgs
    # a fresh decoder per message (no context takeover)
    assert [inflate(zlib.decompressobj(-15), c) for c in compressed] == msgs
    # the same input gives the same bytes: shareable between clients
    assert deflate_message(msgs[0]) == compressed[0]


def test_compressed_frames_carry_rsv1_and_the_twin_is_shared() -> None:
    assert text_frame(b"x", compressed=True)[0] == 0xC1
    assert text_frame(b"x")[0] == 0x81
    assert deflated(NATIVE, 15) is deflated(NATIVE, 15)
    assert deflated(NATIVE, 15) is not deflated(NATIVE, 12)
    assert deflated(NATIVE, 15).base is NATIVE


async def test_clients_that_ask_get_compressed_frames_others_plain() -> None:
    async with run_gateway(compression=True) as gw:
        # aiohttp's client negotiates and inflates permessage-deflate itself
        zipped = await gw.session.ws_connect(gw.ws_url, compress=15)
        assert zipped.compress == 15
        plain = await gw.connect()
        raw = await RawClient.connect(gw.port, extensions="permessage-deflate")
        assert "permessage-deflate" in raw.response_headers.lower()
        await zipped.send_json({"id": 1, "op": "subscribe", "channels": ["trades:BTC-USD"]})
        assert (await zipped.receive_json(timeout=5))["type"] == "subscribed"
        await plain.subscribe("trades:BTC-USD")
        raw.send({"id": 1, "op": "subscribe", "channels": ["trades:BTC-USD"]})
        opcode, payload = await raw.read_frame()
        assert b'"subscribed"' in payload  # replies go uncompressed (allowed per message)
        for i in range(3):
            await gw.publish("trades:BTC-USD", {"i": i, "pad": "y" * 300})
        for i in range(3):
            got = await zipped.receive_json(timeout=5)
            assert (got["seq"], got["data"]["i"]) == (i + 1, i)
            assert (await plain.recv_type("pub"))["data"]["i"] == i
        decoder = zlib.decompressobj(-15)
        for i in range(3):
            opcode, payload, rsv1 = await raw.read_frame_bits()
            assert opcode == 1 and rsv1
            assert len(payload) < 300
            assert json.loads(inflate(decoder, payload))["data"]["i"] == i
        await zipped.close()


async def test_compression_is_off_by_default() -> None:
    async with run_gateway() as gw:
        ws = await gw.session.ws_connect(gw.ws_url, compress=15)
        assert ws.compress == 0
        await ws.close()
        raw = await RawClient.connect(gw.port, extensions="permessage-deflate")
        assert "permessage-deflate" not in raw.response_headers.lower()


async def test_heartbeats_reach_compressed_connections() -> None:
    async with run_gateway(compression=True, heartbeat_interval=0.05) as gw:
        ws = await gw.session.ws_connect(gw.ws_url, compress=15)
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "heartbeat"
        await ws.close()

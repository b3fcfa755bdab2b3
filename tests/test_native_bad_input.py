"""Bad input on the native protocol: a stable code, a message naming the problem, and the
connection survives where the protocol allows."""

from __future__ import annotations

import socket
import struct
from typing import Any

import aiohttp
import pytest

from .harness import Client, run_gateway
from .wsraw import RawClient, client_frame


async def assert_error(c: Client, code: str, fragment: str, rid: Any = None) -> None:
    msg = await c.recv_type("error")
    assert msg["code"] == code, msg
    assert fragment in msg["message"], msg
    assert msg["id"] == rid
    # the connection is still usable
    pong = await c.request("ping")
    assert pong["type"] == "pong"


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        ("{not json", "bad_json", "not valid JSON"),
        ("[1, 2]", "bad_request", "JSON object"),
        ('{"op": 5}', "bad_request", "op must be a string"),
        ('{"id": [1], "op": "ping"}', "bad_request", "id must be"),
    ],
)
async def test_malformed_frames(raw: str, code: str, fragment: str) -> None:
    async with run_gateway() as gw:
        c = await gw.connect()
        await c.ws.send_str(raw)
        await assert_error(c, code, fragment)


@pytest.mark.parametrize(
    ("msg", "code", "fragment"),
    [
        ({"op": "launch"}, "unknown_op", "unknown op 'launch'"),
        ({"op": "subscribe"}, "bad_request", "channels must be a non-empty list"),
        ({"op": "subscribe", "channels": []}, "bad_request", "non-empty list"),
        ({"op": "subscribe", "channels": ["nope:BTC-USD"]}, "unknown_channel", "unknown kind"),
        ({"op": "subscribe", "channels": ["trades:DOGE-USD"]}, "unknown_channel", "DOGE-USD"),
        ({"op": "subscribe", "channels": ["trades:BTC USD"]}, "bad_channel", "malformed symbol"),
        ({"op": "subscribe", "channels": [{"chan": "x"}]}, "bad_request", "unknown field 'chan'"),
        (
            {"op": "subscribe", "channels": [{"channel": "trades:BTC-USD", "since": {"seq": 1}}]},
            "bad_since",
            "since must be",
        ),
        (
            {
                "op": "subscribe",
                "channels": [{"channel": "trades:BTC-USD", "since": {"epoch": "e", "seq": -1}}],
            },
            "bad_since",
            "seq must be >= 0",
        ),
        (
            {
                "op": "subscribe",
                "channels": [{"channel": "trades:BTC-USD", "since": {"epoch": "e", "seq": "x"}}],
            },
            "bad_since",
            "trades:BTC-USD",
        ),
        ({"op": "subscribe", "channels": ["user:42:orders"]}, "unauthorized", "private"),
        ({"op": "auth", "token": ""}, "bad_request", "token must be"),
        ({"op": "auth", "token": "abc"}, "malformed_token", "not a JWT"),
    ],
)
async def test_bad_requests(msg: dict[str, Any], code: str, fragment: str) -> None:
    async with run_gateway() as gw:
        c = await gw.connect()
        await c.send({"id": 7, **msg})
        await assert_error(c, code, fragment, rid=7)
        assert gw.node.hub.subscription_count() == 0


async def test_too_many_channels_is_all_or_nothing() -> None:
    async with run_gateway(max_channels=2) as gw:
        c = await gw.connect()
        await c.subscribe("trades:BTC-USD")
        await c.send({"id": 9, "op": "subscribe", "channels": ["trades:ETH-USD", "book:BTC-USD"]})
        await assert_error(c, "too_many_channels", "limit of 2", rid=9)
        assert gw.node.hub.subscription_count() == 1
        # resubscribing to a held channel does not count twice
        reply = await c.subscribe("trades:BTC-USD", "trades:ETH-USD")
        assert reply["type"] == "subscribed"


async def test_oversized_frame_gets_error_then_hard_limit_closes() -> None:
    async with run_gateway(max_frame_bytes=1024, max_frame_hard_bytes=4096) as gw:
        c = await gw.connect()
        await c.ws.send_str('{"op":"ping","pad":"' + "x" * 2000 + '"}')
        await assert_error(c, "frame_too_large", "exceeds 1024 bytes")
        await c.ws.send_str("x" * 10_000)
        msg = await c.ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009


async def test_binary_frames_are_refused_with_a_code() -> None:
    async with run_gateway() as gw:
        c = await gw.connect()
        await c.ws.send_bytes(b'{"op":"ping"}')
        await assert_error(c, "binary_not_supported", "binary")


async def test_request_flood_is_rate_limited() -> None:
    async with run_gateway(max_requests_per_second=1) as gw:
        c = await gw.connect()
        for i in range(5):
            await c.send({"id": i, "op": "ping"})
        replies = [await c.recv_type("pong", "error") for _ in range(5)]
        assert [r["type"] for r in replies[:2]] == ["pong", "pong"]
        assert {r["code"] for r in replies[2:]} == {"rate_limited"}


async def test_endless_errors_close_with_policy_code() -> None:
    async with run_gateway(max_requests_per_second=1000) as gw:
        c = await gw.connect()
        for _ in range(50):
            await c.ws.send_str("garbage")
        codes = []
        while True:
            msg = await c.ws.receive(timeout=5)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            codes.append(msg.json()["code"])
        assert codes == ["bad_json"] * 50
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 3503


async def test_slow_consumer_is_cut_at_its_cap_and_others_miss_nothing() -> None:
    cap = 64 * 1024
    async with run_gateway(max_queue_bytes=cap, drain_timeout=60) as gw:
        fast = await gw.connect()
        await fast.subscribe("trades:BTC-USD")

        slow = await RawClient.connect(gw.port, rcvbuf=4096)
        slow.send({"id": 1, "op": "subscribe", "channels": ["trades:BTC-USD"]})
        opcode, payload = await slow.read_frame()
        assert opcode == 1 and b'"subscribed"' in payload
        (conn,) = [
            c
            for c in gw.node.hub.connections
            if c.transport.get_extra_info("peername") == slow.sockname()  # type: ignore[attr-defined]
        ]
        sock = conn.transport.get_extra_info("socket")  # type: ignore[attr-defined]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

        held_max = 0
        pad = "x" * 1000
        total = 600  # ~600 KB: far past the cap and the shrunken socket buffers
        for i in range(total):
            await gw.publish("trades:BTC-USD", {"i": i, "pad": pad})
            if i % 20 == 19:
                for seq in range(i - 18, i + 2):
                    msg = await fast.recv_type("pub")
                    assert msg["seq"] == seq
            held = conn.queued + conn.transport.get_write_buffer_size()
            held_max = max(held_max, held)
        assert conn.closed
        assert gw.node.hub.stats.slow_disconnects == 1
        assert held_max <= cap + 200  # the cap plus at most a close frame
        assert conn not in gw.node.hub.connections

        # the slow client, reading at last, finds the close code after what it was sent
        seqs = []
        while True:
            opcode, payload = await slow.read_frame()
            if opcode == 8:
                break
            seqs.append(payload)
        assert struct.unpack("!H", payload[:2])[0] == 3008
        assert payload[2:] == b"slow consumer"
        assert len(seqs) < total
        # the normal client on the same channel got everything, in order
        pong = await fast.request("ping")
        assert pong["type"] == "pong"


async def test_client_frame_helper_roundtrip() -> None:
    frame = client_frame(b"hi")
    assert frame[0] == 0x81 and frame[1] == 0x82 and len(frame) == 2 + 4 + 2


async def test_a_server_bug_answers_internal_and_the_connection_survives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tickwire.dialects.core import ConnectionCore

    def broken(self: ConnectionCore, cmd: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(ConnectionCore, "_unsubscribe", broken)
    async with run_gateway() as gw:
        c = await gw.connect()
        await c.send({"id": 3, "op": "unsubscribe", "channels": ["trades:BTC-USD"]})
        await assert_error(c, "internal", "failed to serve", rid=3)


async def test_engine_outage_answers_unavailable_without_internal_details(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tickwire.engine import EngineUnavailable, MemoryEngine

    async def down(self: MemoryEngine, channels: Any) -> None:
        raise EngineUnavailable("redis at 10.1.2.3:6379 is unreachable")

    monkeypatch.setattr(MemoryEngine, "subscribe", down)
    async with run_gateway() as gw:
        c = await gw.connect()
        await c.send({"id": 4, "op": "subscribe", "channels": ["trades:BTC-USD"]})
        msg = await c.recv_type("error")
        assert msg["code"] == "unavailable" and "10.1.2.3" not in msg["message"]
        assert gw.node.hub.subscription_count() == 0
        assert gw.node.hub.channel_count == 0

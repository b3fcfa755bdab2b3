"""Issue 10, defects 5 and 6: unmasked client frames close with 1002; a header deadline
and a cap on connections per address (tickwire.server.guard)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct

import pytest

from tickwire.server.wsframes import CLOSE_PROTOCOL_ERROR

from .harness import Gateway, run_gateway
from .wsraw import RawClient

HANDSHAKE = (
    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def unmasked_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


async def read_until_close(c: RawClient) -> tuple[list[bytes], int]:
    """Text frames received before the close frame, and the close code."""
    texts: list[bytes] = []
    async with asyncio.timeout(5):
        while True:
            opcode, payload = await c.read_frame()
            if opcode == 0x8:
                return texts, struct.unpack("!H", payload[:2])[0]
            texts.append(payload)


# --- defect 5: unmasked frames ----------------------------------------------------------


async def test_an_unmasked_frame_is_closed_with_1002() -> None:
    async with run_gateway() as gw:
        c = await RawClient.connect(gw.port)
        c.send({"id": 1, "op": "ping"})  # masked: served
        c.writer.write(unmasked_frame(b'{"id": 2, "op": "ping"}'))
        texts, code = await read_until_close(c)
        assert [json.loads(t)["id"] for t in texts] == [1]
        assert code == CLOSE_PROTOCOL_ERROR
        assert await c.reader.read() == b""  # and the connection ends
        # others are not affected
        other = await gw.connect()
        assert (await other.request("ping"))["type"] == "pong"


async def test_an_unmasked_frame_sent_with_the_handshake_is_closed_with_1002() -> None:
    async with run_gateway() as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(HANDSHAKE.format(key=key).encode() + unmasked_frame(b'{"op": "ping"}'))
        status = await reader.readuntil(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101")
        texts, code = await read_until_close(RawClient(reader, writer))
        assert texts == [] and code == CLOSE_PROTOCOL_ERROR


# --- defect 6: header deadline, connections per address ---------------------------------


async def test_a_client_that_trickles_its_headers_is_closed_at_the_deadline() -> None:
    async with run_gateway(header_timeout=0.5) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sent = 0
        async with asyncio.timeout(10):  # far beyond the deadline; bounds a failing test
            while not reader.at_eof():
                # the attack is defined by time: one header byte at a time, never a full line
                writer.write(b"a")
                sent += 1
                try:
                    await asyncio.wait_for(reader.read(1), 0.05)
                except TimeoutError:
                    continue
        assert sent > 1  # it was trickling, and still the server closed it
        assert gw.site.guard.timed_out == 1
        # a client that sends its headers at once is served
        async with gw.session.get(gw.http + "/healthz") as resp:
            assert resp.status == 200


async def test_an_idle_connection_that_never_sends_a_request_is_closed() -> None:
    async with run_gateway(header_timeout=0.3) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        async with asyncio.timeout(10):
            assert await reader.read() == b""
        writer.close()


async def test_connections_per_address_are_capped() -> None:
    async with run_gateway(max_connections_per_address=3) as gw:
        guard = gw.site.guard
        held = [await RawClient.connect(gw.port) for _ in range(3)]
        # the fourth is closed at once, before any of its bytes is read
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        assert guard.refused == 1 and guard.open == {"127.0.0.1": 3}
        # one leaves: a new one is admitted (once the server has seen it leave)
        held[0].writer.close()
        async with asyncio.timeout(5):
            while True:
                c = await asyncio.open_connection("127.0.0.1", gw.port)
                c[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = await c[0].read()
                if answer:
                    assert answer.startswith(b"HTTP/1.1 200")
                    break
        for other in held[1:]:
            other.writer.close()


async def test_zero_means_no_cap() -> None:
    async with run_gateway(max_connections_per_address=0) as gw:
        held = [await RawClient.connect(gw.port) for _ in range(20)]
        assert gw.site.guard.open == {"127.0.0.1": 20} and gw.site.guard.refused == 0
        for c in held:
            c.writer.close()


# --- send_buffer_bytes: what the kernel holds for a client that does not read -----------


def _server_sndbuf(gw: Gateway, client: RawClient) -> int:
    (conn,) = [
        c
        for c in gw.node.hub.connections
        if c.transport.get_extra_info("peername") == client.sockname()  # type: ignore[attr-defined]
    ]
    sock = conn.transport.get_extra_info("socket")  # type: ignore[attr-defined]
    size: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    return size


async def test_send_buffer_bytes_fixes_each_accepted_sockets_send_buffer() -> None:
    async with run_gateway(send_buffer_bytes=16_384) as gw:
        client = await RawClient.connect(gw.port)
        client.send({"id": 1, "op": "ping"})
        assert (await client.read_frame())[0] == 0x1  # the shell holds the connection
        assert _server_sndbuf(gw, client) == 2 * 16_384  # Linux doubles what is asked
    async with run_gateway() as gw:  # 0, the default: the kernel's (autotuned, larger)
        client = await RawClient.connect(gw.port)
        client.send({"id": 1, "op": "ping"})
        assert (await client.read_frame())[0] == 0x1
        assert _server_sndbuf(gw, client) > 2 * 16_384


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("header_timeout", 0),
        ("body_timeout", -1),
        ("max_connections_per_address", -1),
        ("send_buffer_bytes", 1024),
        ("send_buffer_bytes", -1),
    ],
)
def test_limits_are_validated(field: str, value: float) -> None:
    from tickwire.server.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=field):
        load_config({field: value}, env={})

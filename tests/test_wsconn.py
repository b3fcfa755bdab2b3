"""The WebSocket connection after the handshake (tickwire.server.wsconn): our protocol on
the raw transport answers pings, joins fragments, keeps the close handshake and its
codes — and aiohttp holds nothing of the connection once the handshake is done."""

from __future__ import annotations

import asyncio
import json
import struct

from .harness import run_gateway
from .wsraw import RawClient, client_frame


def fragment(payload: bytes, opcode: int, fin: bool) -> bytes:
    """A masked client frame with FIN as given (``client_frame`` always sets it)."""
    data = bytearray(client_frame(payload, opcode))
    if not fin:
        data[0] &= 0x7F
    return bytes(data)


async def test_a_ping_is_answered_with_its_payload_between_messages() -> None:
    async with run_gateway() as gw:
        c = await RawClient.connect(gw.port)
        c.writer.write(client_frame(b"are you there", opcode=0x9))
        opcode, payload = await asyncio.wait_for(c.read_frame(), 5)
        assert (opcode, payload) == (0xA, b"are you there")
        c.send({"id": 7, "op": "ping"})
        opcode, payload = await asyncio.wait_for(c.read_frame(), 5)
        assert opcode == 0x1 and json.loads(payload)["id"] == 7


async def test_a_fragmented_request_with_a_ping_inside_is_answered_once_whole() -> None:
    async with run_gateway() as gw:
        c = await RawClient.connect(gw.port)
        request = b'{"id": 9, "op": "ping"}'
        c.writer.write(
            fragment(request[:5], 0x1, fin=False)
            + client_frame(b"p", opcode=0x9)
            + fragment(request[5:12], 0x0, fin=False)
            + fragment(request[12:], 0x0, fin=True)
        )
        opcode, payload = await asyncio.wait_for(c.read_frame(), 5)
        assert (opcode, payload) == (0xA, b"p")  # the ping first: it came first
        opcode, payload = await asyncio.wait_for(c.read_frame(), 5)
        assert opcode == 0x1 and json.loads(payload)["id"] == 9


async def test_a_client_closing_first_gets_its_close_answered_and_is_forgotten() -> None:
    async with run_gateway() as gw:
        c = await RawClient.connect(gw.port)
        c.send({"id": 1, "op": "subscribe", "channels": ["trades:BTC-USD"]})
        opcode, payload = await asyncio.wait_for(c.read_frame(), 5)
        assert b'"subscribed"' in payload
        assert gw.node.hub.subscription_count() == 1
        c.writer.write(client_frame(struct.pack("!H", 1000) + b"bye", opcode=0x8))
        opcode, payload = await asyncio.wait_for(c.read_frame(), 5)
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1000
        async with asyncio.timeout(5):
            assert await c.reader.read() == b""  # and the server ends the connection
        assert not gw.node.hub.connections and gw.node.hub.subscription_count() == 0


async def test_text_that_is_not_utf8_closes_with_1007_after_earlier_replies() -> None:
    async with run_gateway() as gw:
        c = await RawClient.connect(gw.port)
        c.writer.write(client_frame(b'{"id": 1, "op": "ping"}') + client_frame(b"\xff\xfe"))
        opcode, payload = await asyncio.wait_for(c.read_frame(), 5)
        assert opcode == 0x1 and json.loads(payload)["id"] == 1
        opcode, payload = await asyncio.wait_for(c.read_frame(), 5)
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1007
        # others are not affected
        other = await gw.connect()
        assert (await other.request("ping"))["type"] == "pong"


async def test_after_a_failure_the_clients_answer_ends_the_connection() -> None:
    async with run_gateway(drain_timeout=60) as gw:  # no abort while the test waits
        c = await RawClient.connect(gw.port)
        c.writer.write(client_frame(b"\xff"))  # not UTF-8: the reader stops there
        opcode, payload = await asyncio.wait_for(c.read_frame(), 5)
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1007
        c.writer.write(client_frame(struct.pack("!H", 1007), opcode=0x8))
        async with asyncio.timeout(5):
            assert await c.reader.read() == b""


async def test_compressed_requests_are_inflated() -> None:
    async with run_gateway(compression=True) as gw:
        ws = await gw.session.ws_connect(gw.ws_url, compress=15)
        assert ws.compress == 15
        for i in range(3):  # the client keeps its compression context between messages
            await ws.send_str(json.dumps({"id": i, "op": "ping", "pad": "z" * 200}), compress=15)
            assert (await ws.receive_json(timeout=5))["id"] == i
        await ws.close()


async def test_aiohttp_holds_no_connection_after_the_handshake() -> None:
    async with run_gateway() as gw:
        server = gw.runner.server
        assert server is not None
        clients = [await gw.connect() for _ in range(3)]
        async with asyncio.timeout(5):
            # the handlers end just after the handshake (no event tells when)
            while server.connections:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        for client in clients:  # the connections themselves go on
            assert (await client.request("ping"))["type"] == "pong"
        assert len(gw.node.hub.connections) == 3


async def test_a_plain_get_on_a_websocket_path_is_400() -> None:
    async with run_gateway() as gw:
        async with gw.session.get(f"http://127.0.0.1:{gw.port}/ws") as resp:
            assert resp.status == 400
            assert "WebSocket" in await resp.text()
        bad_key = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
        async with gw.session.get(
            f"http://127.0.0.1:{gw.port}/ws", headers={**bad_key, "Sec-WebSocket-Key": "short"}
        ) as resp:
            assert resp.status == 400 and "Sec-WebSocket-Key" in await resp.text()
        with_key = {**bad_key, "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        async with gw.session.get(
            f"http://127.0.0.1:{gw.port}/ws", headers={**with_key, "Sec-WebSocket-Version": "12"}
        ) as resp:
            assert resp.status == 400 and "version" in await resp.text()

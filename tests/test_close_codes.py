"""Every close the server initiates reaches the client as a close frame with its code,
after the replies already queued for it — also when the client kept writing (a socket
closed with unread input sends a TCP reset, which destroys what the client had not read
yet) and when it stopped reading for a while."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from typing import Any

import aiohttp
import pytest

from tickwire.hub import Connection

from .harness import Gateway, run_gateway
from .wsraw import RawClient, client_frame


async def keep_writing(client: RawClient, done: asyncio.Event) -> None:
    """Send pings over time until ``done``, as a client's heartbeat or requests would: a
    server that stopped reading them would answer with a reset."""
    i = 0
    while not done.is_set():
        client.send({"id": 1000 + i, "op": "ping"})
        await client.writer.drain()
        await asyncio.sleep(0.001)
        i += 1


def server_side(gw: Gateway, client: RawClient) -> Connection:
    (conn,) = [
        c
        for c in gw.node.hub.connections
        if c.transport.get_extra_info("peername") == client.sockname()  # type: ignore[attr-defined]
    ]
    return conn


async def read_until_close(
    client: RawClient, done: asyncio.Event | None = None
) -> tuple[list[dict[str, Any]], int, bytes]:
    """Every text message up to the close frame, then the close code and reason. The
    client answers the close frame (after telling its writer, if any, to stop)."""
    messages: list[dict[str, Any]] = []
    while True:
        opcode, payload = await asyncio.wait_for(client.read_frame(), 10)
        if opcode == 8:
            (code,) = struct.unpack("!H", payload[:2])
            if done is not None:
                done.set()
            client.writer.write(client_frame(payload[:2], opcode=8))  # answer it
            # the server ends the connection once answered (what still comes is dropped)
            await asyncio.wait_for(client.reader.read(), 10)
            return messages, code, payload[2:]
        if opcode == 1:
            messages.append(json.loads(payload))


async def test_pipelined_requests_past_the_rate_limit_get_replies_then_3503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tickwire")
    async with run_gateway(max_requests_per_second=1) as gw:  # bursts of 2
        client = await RawClient.connect(gw.port)
        conn_id = server_side(gw, client).id
        for i in range(300):  # written over time, without reading a byte
            client.send({"id": i, "op": "ping"})
            await client.writer.drain()
            await asyncio.sleep(0.001)
        messages, code, reason = await read_until_close(client)
        assert code == 3503 and reason == b"too many errors"
        pongs = [m for m in messages if m["type"] == "pong"]
        errors = [m for m in messages if m["type"] == "error"]
        assert {e["code"] for e in errors} == {"rate_limited"}
        assert all(m["type"] == "error" for m in messages[-50:])  # 50 in a row: cut
        # every request read before the cut was answered, in order
        ids = [m["id"] for m in pongs]
        assert ids == sorted(set(ids)) and ids[:2] == [0, 1]
        cuts = [r for r in caplog.records if "closing connection" in r.getMessage()]
        assert len(cuts) == 1 and cuts[0].levelno == logging.INFO
        assert f"connection {conn_id}" in cuts[0].getMessage()
        assert "3503" in cuts[0].getMessage() and "too many errors" in cuts[0].getMessage()


async def test_slow_consumer_that_keeps_writing_still_gets_3008() -> None:
    cap = 64 * 1024
    async with run_gateway(max_queue_bytes=cap, drain_timeout=60) as gw:
        slow = await RawClient.connect(gw.port, rcvbuf=4096)
        slow.send({"id": 1, "op": "subscribe", "channels": ["trades:BTC-USD"]})
        opcode, payload = await slow.read_frame()
        assert opcode == 1 and b'"subscribed"' in payload
        conn = server_side(gw, slow)
        sock = conn.transport.get_extra_info("socket")  # type: ignore[attr-defined]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        pad = "x" * 1000
        published = 0
        while not conn.closed:  # the client reads nothing meanwhile
            await gw.publish("trades:BTC-USD", {"i": published, "pad": pad})
            published += 1
            assert published < 2000
        # it goes on writing (heartbeats, requests) as clients do, and reads at last
        done = asyncio.Event()
        writer = asyncio.create_task(keep_writing(slow, done))
        messages, code, reason = await read_until_close(slow, done)
        await writer
        assert (code, reason) == (3008, b"slow consumer")
        seqs = [m["seq"] for m in messages if m["type"] == "pub"]
        assert seqs == list(range(1, len(seqs) + 1))  # what it got was in order, no gap
        assert all(m["type"] != "pong" for m in messages)  # nothing after the cut


async def test_drain_reaches_a_client_that_is_writing() -> None:
    async with run_gateway() as gw:
        client = await RawClient.connect(gw.port)
        client.send({"id": 0, "op": "ping"})
        opcode, _ = await client.read_frame()
        assert opcode == 1
        done = asyncio.Event()
        writer = asyncio.create_task(keep_writing(client, done))
        await gw.node.drain()
        _, code, reason = await read_until_close(client, done)
        await writer
        assert (code, reason) == (3001, b"shutdown")


async def test_a_client_answering_the_close_ends_the_connection_cleanly() -> None:
    async with run_gateway(max_requests_per_second=1000) as gw:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(gw.ws_url)  # answers a close frame itself
            for _ in range(50):
                await ws.send_str("garbage")
            seen = 0
            async for msg in ws:
                assert msg.type == aiohttp.WSMsgType.TEXT
                seen += 1
            assert seen == 50
            assert ws.close_code == 3503
        assert not gw.node.hub.connections


async def test_a_client_that_does_not_read_within_the_drain_timeout_is_aborted() -> None:
    """The documented limit (docs/protocol.md): a cut client's close frame waits
    ``drain_timeout`` for the client to read it; then the server aborts the connection
    and holds nothing for it. The client finds its code only if the frame had reached
    the sockets' kernel buffers by then; otherwise it sees the connection end."""
    cap = 16 * 1024
    async with run_gateway(max_queue_bytes=cap, drain_timeout=0.3) as gw:
        slow = await RawClient.connect(gw.port, rcvbuf=4096)
        slow.send({"id": 1, "op": "subscribe", "channels": ["trades:BTC-USD"]})
        opcode, _ = await slow.read_frame()
        assert opcode == 1
        conn = server_side(gw, slow)
        sock = conn.transport.get_extra_info("socket")  # type: ignore[attr-defined]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        published = 0
        while not conn.closed:
            await gw.publish("trades:BTC-USD", {"i": published, "pad": "x" * 1000})
            published += 1
            assert published < 2000
        transport = conn.transport
        assert not transport.is_closing()  # held open for the client to read its code
        assert conn not in gw.node.hub.connections
        async with asyncio.timeout(10):
            # until the drain timeout aborts it (a transport offers no event for that)
            while not transport.is_closing():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert transport.get_write_buffer_size() == 0  # nothing held for it any more
        ended = False
        try:
            while not ended:
                opcode, _ = await asyncio.wait_for(slow.read_frame(), 10)
                ended = opcode == 8
        except (ConnectionResetError, asyncio.IncompleteReadError):
            ended = True
        assert ended

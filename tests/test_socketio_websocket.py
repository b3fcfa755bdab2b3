"""Socket.IO's WebSocket transport off aiohttp (tickwire.server.socketio on
tickwire.server.wsconn): the RFC 6455 rules on raw frames, fresh sessions and the upgrade
from polling, Engine.IO 3 and 4."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable

import pytest

from tests.prophitkit import Prophit, run_prophit
from tickwire.server.socketio import SOCKETIO_KEY, Session, SocketIOServer
from tickwire.server.ws import connections_ended

from .wsraw import RawClient, client_frame

CLOSE, PING, PONG, TEXT, BINARY = 0x8, 0x9, 0xA, 0x1, 0x2


def unmasked_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """A client frame without the MASK bit (which RFC 6455 5.1 forbids)."""
    assert len(payload) < 126
    return bytes((0x80 | opcode, len(payload))) + payload


def server(p: Prophit) -> SocketIOServer:
    return p.gw.runner.app[SOCKETIO_KEY]


async def read(c: RawClient) -> tuple[int, bytes]:
    return await asyncio.wait_for(c.read_frame(), 5)


async def read_text(c: RawClient) -> bytes:
    """The next text frame's payload, answering nothing on the way (server pings are
    Engine.IO packets, text too)."""
    opcode, payload = await read(c)
    assert opcode == TEXT, (opcode, payload)
    return payload


async def read_close(c: RawClient) -> int:
    """The code of the close frame that comes next, skipping text frames before it."""
    while True:
        opcode, payload = await read(c)
        if opcode == CLOSE:
            code: int = struct.unpack("!H", payload[:2])[0]
            return code


async def at_eof(c: RawClient) -> bool:
    async with asyncio.timeout(5):
        return await c.reader.read() == b""


async def fresh(p: Prophit, eio: str = "4") -> tuple[RawClient, Session]:
    """A session opened on a WebSocket (no polling), its namespace connected."""
    path = f"/socket.io/?EIO={eio}&transport=websocket&token={p.token}"
    c = await RawClient.connect(p.gw.port, path)
    opened = await read_text(c)
    assert opened.startswith(b"0{"), opened
    if eio == "4":
        c.writer.write(client_frame(b"40"))
    assert (await read_text(c)).startswith(b"40")
    return c, server(p).sessions[json.loads(opened[1:])["sid"]]


async def polling(p: Prophit) -> Session:
    """A session opened by polling, namespace connected."""
    base = p.http + "/socket.io/?EIO=4&transport=polling"
    async with p.gw.session.get(base + f"&token={p.token}") as r:
        body = await r.text()
    sid = json.loads(body[body.index("{") : body.index("}") + 1])["sid"]
    async with p.gw.session.post(base + f"&sid={sid}", data=b"40") as r:
        assert r.status == 200
    async with p.gw.session.get(base + f"&sid={sid}") as r:
        assert (await r.text()).startswith("40{")
    return server(p).sessions[sid]


async def probe(p: Prophit, session: Session) -> RawClient:
    """The upgrade's WebSocket, after 2probe/3probe (the pending GET is let go)."""
    path = f"/socket.io/?EIO=4&transport=websocket&sid={session.sid}"
    c = await RawClient.connect(p.gw.port, path)
    c.writer.write(client_frame(b"2probe"))
    assert await read_text(c) == b"3probe"
    return c


async def poll(p: Prophit, session: Session, post: bytes | None = None) -> str:
    url = p.http + f"/socket.io/?EIO=4&transport=polling&sid={session.sid}"
    if post is not None:
        async with p.gw.session.post(url, data=post) as r:
            assert r.status == 200, await r.text()
    async with p.gw.session.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.text()


def subscribe(ack: int) -> bytes:
    arg = {"path": "/real-time/crowd-sentiment", "method": "get", "params": {"ticker": "AAPL"}}
    return f"42{ack}".encode() + json.dumps(["subscribe", arg]).encode()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for a state the server reaches after the bytes the client read
    (no event tells when)."""
    try:
        async with asyncio.timeout(5):
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not reached: {what}") from None


# -- fresh WebSocket sessions ------------------------------------------------------------


@pytest.mark.parametrize("eio", ["3", "4"])
async def test_an_unmasked_frame_closes_with_1002_and_ends_the_session(eio: str) -> None:
    async with run_prophit(drain_timeout=60) as p:  # no abort while the test waits
        c, session = await fresh(p, eio)
        c.writer.write(unmasked_frame(b"2" if eio == "3" else b"3"))
        assert await read_close(c) == 1002
        assert session.gone and not server(p).sessions
        assert not p.gw.node.hub.connections
        c.writer.write(client_frame(struct.pack("!H", 1002), CLOSE))  # answered: it ends
        assert await at_eof(c)


async def test_a_message_over_max_payload_closes_with_1009_after_earlier_replies() -> None:
    async with run_prophit(prophit_max_payload=2048) as p:
        c, session = await fresh(p)
        # exactly the limit is a message (an unknown event, answered with an error) ...
        at_limit = b'42["x' + b"y" * (2048 - 7) + b'"]'
        assert len(at_limit) == 2048
        c.writer.write(client_frame(subscribe(1)) + client_frame(at_limit))
        assert (await read_text(c)).startswith(b"431[null]")
        while b"unknown_event" not in (reply := await read_text(c)):
            assert reply.startswith(b"42"), reply  # the snapshot of the subscription
        # ... one byte more closes, as engine.io's maxHttpBufferSize does over WebSocket
        c.writer.write(client_frame(at_limit + b" "))
        assert await read_close(c) == 1009
        assert session.gone and not p.gw.node.hub.connections


async def test_a_ping_frame_is_answered_with_its_payload_between_packets() -> None:
    async with run_prophit() as p:
        c, _ = await fresh(p)
        c.writer.write(client_frame(b"still there?", PING) + client_frame(subscribe(4)))
        assert await read(c) == (PONG, b"still there?")
        assert (await read_text(c)).startswith(b"434[null]")


async def test_a_client_close_is_answered_and_the_session_forgotten() -> None:
    async with run_prophit() as p:
        c, session = await fresh(p)
        c.writer.write(client_frame(subscribe(1)))
        assert (await read_text(c)).startswith(b"431[null]")
        assert p.gw.node.hub.subscription_count() == 1
        c.writer.write(client_frame(struct.pack("!H", 1000) + b"bye", CLOSE))
        assert await read_close(c) == 1000
        assert await at_eof(c)
        assert session.gone and not server(p).sessions
        assert p.gw.node.hub.subscription_count() == 0 and not p.gw.node.hub.connections
        assert not server(p).sockets


async def test_our_close_waits_for_the_clients_answer() -> None:
    async with run_prophit() as p:
        c, session = await fresh(p)
        c.writer.write(client_frame(b"1"))  # Engine.IO close
        assert await read_close(c) == 1000
        assert session.gone and not p.gw.node.hub.connections
        # the socket stays open (what the client still sends is dropped) until it answers
        assert len(server(p).sockets) == 1
        c.writer.write(client_frame(subscribe(2)))
        c.writer.write(client_frame(struct.pack("!H", 1000), CLOSE))
        assert await at_eof(c)
        await until(lambda: not server(p).sockets, "the socket ended")


async def test_a_drain_closes_with_3001_and_the_node_waits_for_the_answer() -> None:
    async with run_prophit() as p:
        c, session = await fresh(p)
        assert await p.gw.node.drain() == 1  # the session's one hub connection
        assert await read_close(c) == 3001
        assert session.gone
        ended = asyncio.ensure_future(connections_ended(p.gw.runner.app))
        assert len(server(p).sockets) == 1  # waited for: the node's sockets, Socket.IO's too
        c.writer.write(client_frame(struct.pack("!H", 3001), CLOSE))
        assert await asyncio.wait_for(ended, 5) == 0  # it answered: none aborted
        assert await at_eof(c)


async def test_a_binary_frame_is_refused_and_the_session_goes_on() -> None:
    async with run_prophit() as p:
        c, session = await fresh(p)
        c.writer.write(client_frame(b"\x04\x01\x02", BINARY))
        reply = await read_text(c)
        assert reply.startswith(b'42["err"') and b"binary_not_supported" in reply
        c.writer.write(client_frame(subscribe(3)))
        assert (await read_text(c)).startswith(b"433[null]")
        assert not session.gone


async def test_compressed_messages_are_inflated_when_the_client_offers_deflate() -> None:
    async with run_prophit() as p:
        url = f"ws://127.0.0.1:{p.gw.port}/socket.io/?EIO=4&transport=websocket&token={p.token}"
        async with p.gw.session.ws_connect(url, compress=15) as ws:
            assert ws.compress == 15
            assert (await ws.receive_str(timeout=5)).startswith("0{")
            await ws.send_str("40", compress=15)
            assert (await ws.receive_str(timeout=5)).startswith("40{")
            for ack in (1, 2):  # the client keeps its compression context between messages
                pad = {"path": "/real-time/crowd-sentiment", "pad": "z" * 300}
                await ws.send_str(f"42{ack}" + json.dumps(["subscribe", pad]), compress=15)
                reply = await ws.receive_str(timeout=5)
                assert reply.startswith(f"43{ack}[") and "unknown field" in reply


async def test_aiohttp_holds_no_socketio_websocket_after_its_handshake() -> None:
    async with run_prophit() as p:
        handlers = p.gw.runner.server
        assert handlers is not None
        before = set(handlers.connections)  # the keep-alive connection that got the token
        clients = [await fresh(p) for _ in range(3)]
        # the handlers end just after the handshake
        await until(lambda: set(handlers.connections) <= before, "aiohttp let go")
        for i, (c, _) in enumerate(clients):  # the sessions themselves go on
            c.writer.write(client_frame(subscribe(i)))
            assert (await read_text(c)).startswith(f"43{i}[null]".encode())
        assert len(server(p).sockets) == 3


# -- the upgrade from polling ------------------------------------------------------------


async def test_an_upgrade_moves_the_session_to_the_websocket() -> None:
    async with run_prophit() as p:
        session = await polling(p)
        c = await probe(p, session)
        c.writer.write(client_frame(b"x", PING))  # a ping frame on the probe: answered
        assert await read(c) == (PONG, b"x")
        c.writer.write(client_frame(b"5"))
        await until(lambda: not session.upgrading, "upgraded")
        c.writer.write(client_frame(subscribe(7)))
        assert (await read_text(c)).startswith(b"437[null]")
        c.writer.write(unmasked_frame(b"3"))  # now the session's own socket: it ends
        assert await read_close(c) == 1002
        assert session.gone


async def test_a_probe_that_goes_away_mid_upgrade_leaves_the_session_polling() -> None:
    async with run_prophit() as p:
        session = await polling(p)
        c = await probe(p, session)
        c.writer.close()  # gone between 3probe and 5
        await until(lambda: session.ws is None, "the probe forgotten")
        assert not session.upgrading and not session.gone
        assert await poll(p, session) == "6"  # the noop that let the pending GET go
        assert (await poll(p, session, post=subscribe(1))).startswith("431[null]")
        # and a later upgrade succeeds
        c = await probe(p, session)
        c.writer.write(client_frame(b"5"))
        await until(lambda: not session.upgrading, "upgraded")
        c.writer.write(client_frame(subscribe(2)))
        assert (await read_text(c)).startswith(b"432[null]")


async def test_an_unmasked_frame_on_the_probe_closes_it_with_1002_and_polling_goes_on() -> None:
    async with run_prophit() as p:
        session = await polling(p)
        c = await probe(p, session)
        c.writer.write(unmasked_frame(b"5"))
        assert await read_close(c) == 1002
        await until(lambda: session.ws is None, "the probe forgotten")
        assert not session.upgrading and not session.gone
        assert await poll(p, session) == "6"
        assert (await poll(p, session, post=subscribe(1))).startswith("431[null]")

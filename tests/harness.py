"""Run a real gateway on an ephemeral loopback port inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tickwire.server.app import build_app, make_runner, start_site
from tickwire.server.config import load_config
from tickwire.server.guard import GuardedSite
from tickwire.server.node import NODE_KEY, Node

from .wsraw import close_raw_clients


@dataclass
class Gateway:
    node: Node
    runner: web.AppRunner
    port: int
    session: aiohttp.ClientSession
    site: GuardedSite
    clients: list[Client] = field(default_factory=list)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def connect(self, query: str = "") -> Client:
        ws = await self.session.ws_connect(self.ws_url + query, autoclose=False)
        client = Client(ws)
        self.clients.append(client)
        return client

    async def publish(self, channel: str, data: Any, snapshot: Any | None = None) -> int:
        snap = None if snapshot is None else json.dumps(snapshot).encode()
        pub = await self.node.engine.publish(channel, json.dumps(data).encode(), snapshot=snap)
        return pub.seq


class Client:
    """A plain WebSocket client speaking the native protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._next_id = 0

    async def send(self, msg: Any) -> None:
        await self.ws.send_str(json.dumps(msg))

    async def recv(self) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=5)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {msg.type} {msg.data!r}")
        data: dict[str, Any] = json.loads(msg.data)
        return data

    async def recv_type(self, *types: str) -> dict[str, Any]:
        """The next message of one of ``types``, skipping heartbeats."""
        while True:
            msg = await self.recv()
            if msg.get("type") in types:
                return msg
            if msg.get("type") != "heartbeat":
                raise AssertionError(f"expected {types}, got {msg}")

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self._next_id += 1
        await self.send({"id": self._next_id, "op": op, **fields})
        reply = await self.recv_type("subscribed", "unsubscribed", "pong", "authenticated", "error")
        assert reply["id"] == self._next_id, reply
        return reply

    async def subscribe(self, *channels: Any) -> dict[str, Any]:
        return await self.request("subscribe", channels=list(channels))

    async def close(self) -> None:
        await self.ws.close()


@asynccontextmanager
async def run_gateway(**overrides: Any) -> AsyncIterator[Gateway]:
    """A gateway on 127.0.0.1:<ephemeral> with ``overrides`` over the defaults."""
    flags: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "markets": ["BTC-USD", "ETH-USD"]}
    flags["key_store"] = ":memory:"  # auth: no key file in the working directory
    flags.update(overrides)
    config = load_config(flags, env={})
    app = build_app(config)
    runner = make_runner(app, config, shutdown_timeout=1.0)
    await runner.setup()
    site = await start_site(runner, config, "127.0.0.1", 0)
    port = int(runner.addresses[0][1])
    async with aiohttp.ClientSession() as session:
        gw = Gateway(app[NODE_KEY], runner, port, session, site)
        try:
            yield gw
        finally:
            # Clients close first, as real ones would: a node shutting down waits (up to
            # its drain timeout) for every client to answer its close frame.
            for client in gw.clients:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.ws.close(), 2)
            await close_raw_clients()
            await runner.cleanup()

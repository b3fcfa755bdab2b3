"""The seed's own client code on Node's socket.io-client 4.x and 2.x (Engine.IO 3)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.prophitkit import Prophit, run_prophit
from tickwire.server.socketio import SOCKETIO_KEY

JS = Path(__file__).resolve().parent / "js"
CLIENT = JS / "prophit_client.js"
TS = 1_700_000_040_000
SUB = {"path": "/real-time/crowd-sentiment", "method": "GET", "params": {"ticker": "AAPL"}}


def _need_node() -> None:
    missing = None
    if shutil.which("node") is None:
        missing = "node is not installed"
    elif not (JS / "node_modules" / "socket.io-client-4").is_dir():
        missing = "tests/js/node_modules is missing (run: make jsclients)"
    if missing is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true: {missing}")
    print(f"\nskipping the Node.js Socket.IO client tests: {missing}")
    pytest.skip(missing)  # outside CI only (CI failed above)


class NodeClient:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.seen = 0
        self._id = 0

    async def next(self, ev: str, timeout: float = 10) -> dict[str, Any]:
        """The next line of event ``ev`` (earlier lines of other events are kept)."""
        while True:
            for i in range(self.seen, len(self.lines)):
                if self.lines[i]["ev"] == ev:
                    self.seen = i + 1
                    return self.lines[i]
            assert self.proc.stdout is not None
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not raw:
                raise AssertionError(f"client exited waiting for {ev}: {self.lines}")
            self.lines.append(json.loads(raw))

    def events(self, ev: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["ev"] == ev]

    async def emit(self, event: str, arg: Any) -> dict[str, Any]:
        self._id += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"emit": event, "arg": arg, "id": self._id}).encode())
        self.proc.stdin.write(b"\n")
        while True:
            ack = await self.next("ack")
            if ack["id"] == self._id:
                return ack

    async def state(self) -> dict[str, Any]:
        """Whether the client is connected and whether it will reconnect on its own."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b'{"state": true}\n')
        return await self.next("state")


@asynccontextmanager
async def node_client(p: Prophit, version: str, transports: str) -> AsyncIterator[NodeClient]:
    async with seed_client(p.http, p.token, version, transports) as client:
        yield client


@asynccontextmanager
async def seed_client(
    http: str, token: str, version: str, transports: str
) -> AsyncIterator[NodeClient]:
    """The seed's client (socket.io-client ``version``) connecting to ``http``."""
    _need_node()
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(CLIENT),
        version,
        http,
        token,
        transports,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(JS),
    )
    client = NodeClient(proc)
    try:
        yield client
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


CASES = [
    ("4", "polling,websocket", "websocket"),  # socket.io-client's default: poll, upgrade
    ("4", "polling", "polling"),
    ("2", "polling,websocket", "websocket"),
    ("2", "polling", "polling"),
    ("2", "websocket", "websocket"),
]


@pytest.mark.parametrize(("version", "transports", "final"), CASES)
async def test_the_seed_flow(version: str, transports: str, final: str) -> None:
    async with run_prophit() as p, node_client(p, version, transports) as c:
        await c.next("connect")
        assert (await c.next("ack"))["err"] is None  # the seed's subscribe, sent at once
        sessions = p.gw.runner.app[SOCKETIO_KEY].sessions
        (session,) = sessions.values()
        if final == "websocket":  # wait for the upgrade (a client-side decision)
            for _ in range(200):
                if session.ws_transport is not None and not session.upgrading:
                    break
                await asyncio.sleep(0.01)
        await p.crowd(TS, -0.0511838856522857)
        data, res = await c.next("data"), await c.next("res")
        _, rest = await p.get("/real-time/crowd-sentiment?ticker=AAPL")
        assert data["data"]["results"] == res["res"]["results"] == rest["results"]
        assert res["res"]["path"] == SUB["path"] and data["data"]["path"] == "crowd-sentiment"
        assert res["transport"] == final
        bad = await c.emit("subscribe", {**SUB, "path": "/real-time/nope"})
        assert bad["err"]["code"] == "unknown_path" and bad["err"]["status"] == 404
        assert (await c.emit("unsubscribe", SUB))["err"] is None
        await p.crowd(TS + 60_000, 0.5)
        again = await c.emit("unsubscribe", SUB)  # a round trip after the publication
        assert again["err"]["code"] == "not_subscribed"
        assert len(c.events("data")) == 1 and len(c.events("res")) == 1


@pytest.mark.parametrize("version", ["4", "2"])
async def test_bad_token_is_refused_where_the_client_looks(version: str) -> None:
    async with run_prophit() as p:
        p.token = "not.a.token"
        async with node_client(p, version, "polling,websocket") as c:
            if version == "4":  # socket.io-client 3/4: connect_error with the server's data
                err = await c.next("connect_error")
                assert err["data"]["code"] == "malformed_token" and err["message"]
            else:  # socket.io-client 2: the ERROR packet is emitted as 'error'
                err = (await c.next("error"))["err"]
                assert err["code"] == "malformed_token" and err["status"] == 401
            assert not c.events("connect")


async def test_recovery_after_the_connection_is_cut() -> None:
    async with run_prophit() as p, node_client(p, "4", "websocket") as c:
        await c.next("connect")
        assert (await c.next("ack"))["err"] is None
        server = p.gw.runner.app[SOCKETIO_KEY]
        for i in range(3):
            await p.crowd(TS + i * 60_000, i / 10)
        for _ in range(3):
            await c.next("res")
        (session,) = server.sessions.values()
        assert session.ws_transport is not None
        session.ws_transport.abort()  # the network path dies
        assert (await c.next("disconnect"))["reason"] == "transport close"
        for i in range(3, 6):  # missed while the client waits 2 s to reconnect
            await p.crowd(TS + i * 60_000, i / 10)
        back = await c.next("connect")
        assert back["recovered"] is True
        await p.crowd(TS + 6 * 60_000, 0.6)
        got = [await c.next("res") for _ in range(4)]
        values = [r["res"]["results"][0]["crowd_sentiment"] for r in c.events("res")]
        assert values == [str(i / 10) for i in range(7)], (values, got)


async def test_no_recovery_when_history_is_too_short_but_the_stream_is_restored() -> None:
    async with run_prophit(history_size=2) as p, node_client(p, "4", "websocket") as c:
        await c.next("connect")
        assert (await c.next("ack"))["err"] is None
        await p.crowd(TS, 0.1)
        await c.next("res")
        (session,) = p.gw.runner.app[SOCKETIO_KEY].sessions.values()
        assert session.ws_transport is not None
        session.ws_transport.abort()
        await c.next("disconnect")
        for i in range(2, 6):  # more than the 2 publications history keeps
            await p.crowd(TS + i * 60_000, i / 10)
        back = await c.next("connect")
        assert back["recovered"] is False
        await p.crowd(TS + 9 * 60_000, 0.9)  # the subscription was restored, fresh
        res = await c.next("res")
        assert res["res"]["results"][0]["crowd_sentiment"] == "0.9"
        assert len(c.events("res")) == 2

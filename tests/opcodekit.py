"""An InstaMrkt client written from the seed document alone (no tickwire code): aiohttp's
client used as a raw WebSocket, requests built by hand, the digest computed as the seed
shows (three sha256 updates)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import aiohttp

_last_nonce = [0]


def nonce() -> str:
    """A fresh timestamp nonce (epoch millis, as the seed suggests), rising in this process."""
    _last_nonce[0] = max(int(time.time() * 1000), _last_nonce[0] + 1)
    return str(_last_nonce[0])


def hexdigest(user_id: str, n: str, session_key: str) -> str:
    sha = hashlib.sha256()
    sha.update(user_id.encode())
    sha.update(n.encode())
    sha.update(session_key.encode())
    return sha.hexdigest()


def digest_query(user_id: str, session_key: str, n: str | None = None) -> str:
    n = n or nonce()
    return f"?id={user_id}&n={n}&h={hexdigest(user_id, n, session_key)}"


def request(op: int, **params: Any) -> dict[str, Any]:
    """A request with the seed's header."""
    header = {"session_key": "", "t": int(time.time() * 1000), "api_version": 1.0}
    return {"header": header, "op": op, **params}


async def login(session: aiohttp.ClientSession, http: str, user: str, password: str) -> str:
    async with session.post(f"{http}/login", json={"id": user, "password": password}) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert body["id"] == user
    key: str = body["session_key"]
    return key


class OpClient:
    """One raw WebSocket speaking opcodes."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, url: str) -> OpClient:
        return cls(await session.ws_connect(url, autoclose=False, autoping=True))

    async def send(self, msg: Any) -> None:
        await self.ws.send_str(json.dumps(msg))

    async def recv(self) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=10)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {msg.type} {msg.data!r}")
        data: dict[str, Any] = json.loads(msg.data)
        assert isinstance(data["response_header"]["t"], int), data
        return data

    async def recv_res(self, *codes: int) -> dict[str, Any]:
        """The next message whose ``res`` is one of ``codes``, skipping pushed data."""
        while True:
            msg = await self.recv()
            if msg["res"] in codes:
                return msg
            if msg["res"] not in (300, 301, 302):
                raise AssertionError(f"expected res {codes}, got {msg}")

    async def call(self, op: int, *codes: int, **params: Any) -> dict[str, Any]:
        await self.send(request(op, **params))
        return await self.recv_res(*codes)

    async def closed(self) -> tuple[int | None, str]:
        """The close code and reason the server sent (after any messages)."""
        while True:
            msg = await self.ws.receive(timeout=10)
            if msg.type == aiohttp.WSMsgType.CLOSE:
                return msg.data, msg.extra or ""
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return None, ""

    async def close(self) -> None:
        await self.ws.close()

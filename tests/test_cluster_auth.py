"""Auth state shared by two real ``tickwire serve`` nodes on one Redis: a client-signed
credential (an InstaMrkt digest) used on one node is refused when replayed on the other;
``tickwire keys revoke`` closes the key's open connections on both nodes (close 3504;
Socket.IO sessions: ``err`` ``key_revoked`` and a server disconnect);
failed ``POST /jwt`` attempts count against one limit across both nodes.

Both nodes share a key store (one SQLite file) and an auth secret, as a cluster must
(docs/auth.md); the engine is the shared Redis under a prefix of this test's own."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import socketio

from tickwire.auth import open_key_store
from tickwire.auth.keys import CreatedKey, KeyKind, create_key
from tickwire.hub import CLOSE_KEY_REVOKED, CLOSE_UNAUTHORIZED

from .conftest import redis_prefix, require_redis
from .opcodekit import OpClient, digest_query, login
from .services import REDIS_URL
from .test_cluster_redis import Gateway
from .test_prophit_node import seed_client

PASSWORD = "pw-cluster-auth-0123"
PATH = "/ws/opcode"
#: failed credential checks an address may make at once, across the cluster
BURST = 4


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    return str(tmp_path / "keys.sqlite3")


@pytest.fixture
async def bob(store_path: str) -> CreatedKey:
    """A secret key of user bob, created before the nodes start (alice has a password)."""
    store = open_key_store(store_path)
    await store.open()
    await create_key(store, kind=KeyKind.PASSWORD, user_id="alice", password=PASSWORD)
    created = await create_key(store, kind=KeyKind.SECRET, user_id="bob")
    await store.close()
    return created


@pytest.fixture
async def two_nodes(store_path: str, bob: CreatedKey) -> AsyncIterator[tuple[Gateway, Gateway]]:
    require_redis()
    prefix = redis_prefix()
    secret = "cluster-secret-0123456789-abcdefghijklmnop"
    env = {
        "TICKWIRE_KEY_STORE": store_path,
        "TICKWIRE_AUTH_SECRET": secret,
        "TICKWIRE_AUTH_RATE_BURST": str(BURST),
        "TICKWIRE_AUTH_RATE_PER_MINUTE": "1",
    }
    url = f"{REDIS_URL}?prefix={prefix}"
    nodes = (Gateway(url, "a", env=env), Gateway(url, "b", env=env))
    try:
        for node in nodes:
            await node.start()
        yield nodes
    finally:
        for node in nodes:
            await node.stop()
        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.unlink(*keys)
        await client.aclose()


def ws(node: Gateway, query: str) -> str:
    return node.ws_url.removesuffix("/ws") + PATH + query


async def test_a_digest_used_on_one_node_is_refused_on_the_other(
    two_nodes: tuple[Gateway, Gateway],
) -> None:
    a, b = two_nodes
    async with aiohttp.ClientSession() as session:
        key = await login(session, a.http, "alice", PASSWORD)
        query = digest_query("alice", key)
        ok = await OpClient.connect(session, ws(a, query))
        assert (await ok.call(1, 1))["res"] == 1  # ping answered: the digest was accepted
        replay = await OpClient.connect(session, ws(b, query))
        msg = await replay.recv()
        assert (msg["res"], msg["error"]) == (415, "nonce_reused"), msg
        assert "another node" in msg["message"]
        assert await replay.closed() == (CLOSE_UNAUTHORIZED, "unauthorized")
        # a fresh nonce with the same session key is accepted on the other node
        fresh = await OpClient.connect(session, ws(b, digest_query("alice", key)))
        assert (await fresh.call(1, 1))["res"] == 1
        for c in (ok, fresh):
            await c.close()


async def gateway_token(session: aiohttp.ClientSession, http: str, secret: str) -> str:
    basic = base64.b64encode(f"{secret}:".encode()).decode()
    async with session.post(f"{http}/jwt", headers={"Authorization": f"Basic {basic}"}) as r:
        assert r.status == 200, await r.text()
        token: str = (await r.json())["token"]
    return token


async def authenticated(
    session: aiohttp.ClientSession, url: str
) -> aiohttp.ClientWebSocketResponse:
    """A native connection whose first message says it is authenticated."""
    ws = await session.ws_connect(url, autoclose=False)
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        if json.loads(msg.data).get("type") == "authenticated":
            return ws


async def close_code(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type == aiohttp.WSMsgType.CLOSE:
            return int(msg.data), str(msg.extra)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg


async def test_revoking_a_key_closes_its_connections_on_every_node(
    two_nodes: tuple[Gateway, Gateway], store_path: str, bob: CreatedKey
) -> None:
    a, b = two_nodes
    assert bob.secret is not None
    async with aiohttp.ClientSession() as session:
        token = await gateway_token(session, a.http, bob.secret)
        on_a = await authenticated(session, f"{a.ws_url}?token={token}")
        on_b = await authenticated(session, f"{b.ws_url}?token={token}")
        key = await login(session, a.http, "alice", PASSWORD)
        other = await OpClient.connect(session, ws(a, digest_query("alice", key)))
        assert (await other.call(1, 1))["res"] == 1
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tickwire", "keys", "revoke", bob.record.name,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "TICKWIRE_KEY_STORE": store_path},
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert f"revoked {bob.record.name}" in out.decode()
        for conn in (on_a, on_b):
            assert await close_code(conn) == (CLOSE_KEY_REVOKED, "key revoked")
        # another key's connection on the same node stays open and served
        assert (await other.call(1, 1))["res"] == 1
        await other.close()
        # and the token no longer opens a connection
        refused = await session.ws_connect(f"{b.ws_url}?token={token}", autoclose=False)
        assert (await close_code(refused))[0] == CLOSE_UNAUTHORIZED


async def test_revoking_a_key_ends_its_socketio_sessions_on_every_node(
    two_nodes: tuple[Gateway, Gateway], store_path: str, bob: CreatedKey
) -> None:
    """Market Prophit's Socket.IO: the seed's client on socket.io-client 4 (WebSocket) on
    one node and 2 (long-polling) on the other hear ``err`` ``key_revoked`` (close 3504),
    then a server disconnect, after which neither tries to reconnect; the token no
    longer connects."""
    a, b = two_nodes
    assert bob.secret is not None
    async with aiohttp.ClientSession() as session:
        token = await gateway_token(session, a.http, bob.secret)
    async with (
        seed_client(a.http, token, "4", "websocket") as on_a,
        seed_client(b.http, token, "2", "polling") as on_b,
    ):
        for client in (on_a, on_b):
            await client.next("connect")
            assert (await client.next("ack"))["err"] is None  # streaming crowd-sentiment
        await revoke(store_path, bob.record.name)
        for client in (on_a, on_b):
            err = (await client.next("err"))["err"]
            assert (err["code"], err["status"], err["close"]) == ("key_revoked", 401, 3504)
            assert (await client.next("disconnect"))["reason"] == "io server disconnect"
            state = await client.state()
            assert state["connected"] is False and state["active"] is False, state
            assert state["reconnecting"] is False and state["skipReconnect"] is True, state
            assert not client.events("connect_error")
    refused: list[Any] = []
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("connect_error", refused.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(f"{b.http}?token={token}", transports=["websocket"], wait_timeout=5)
    assert [e["data"]["code"] for e in refused] == ["key_revoked"]


async def revoke(store_path: str, name: str) -> None:
    """``tickwire keys revoke name`` on the shared key store."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tickwire", "keys", "revoke", name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TICKWIRE_KEY_STORE": store_path},
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert f"revoked {name}" in out.decode()


async def test_failed_attempts_count_against_one_limit_across_nodes(
    two_nodes: tuple[Gateway, Gateway],
) -> None:
    a, b = two_nodes
    wrong = {"Authorization": "Basic " + base64.b64encode(b"twsk_wrong:").decode()}
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:
        for i in range(BURST + 2):  # alternating nodes: each sees BURST / 2 + 1 attempts
            node = (a, b)[i % 2]
            async with session.post(f"{node.http}/jwt", headers=wrong) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert int(resp.headers["Retry-After"]) >= 1
                    assert (await resp.json())["error"]["code"] == "rate_limited"
    # per node each would still allow BURST; shared, the cluster allows BURST in all
    assert statuses == [401] * BURST + [429, 429], statuses

"""Auth state shared by two real ``tickwire serve`` nodes on one Redis: a client-signed
credential (an InstaMrkt digest) used on one node is refused when replayed on the other.

Both nodes share a key store (one SQLite file) and an auth secret, as a cluster must
(docs/auth.md); the engine is the shared Redis under a prefix of this test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from tickwire.auth import open_key_store
from tickwire.auth.keys import KeyKind, create_key
from tickwire.hub import CLOSE_UNAUTHORIZED

from .conftest import redis_prefix, require_redis
from .opcodekit import OpClient, digest_query, login
from .services import REDIS_URL
from .test_cluster_redis import Gateway

PASSWORD = "pw-cluster-auth-0123"
PATH = "/ws/opcode"


@pytest.fixture
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Gateway]]:
    require_redis()
    store_path = str(tmp_path / "keys.sqlite3")
    store = open_key_store(store_path)
    await store.open()
    await create_key(store, kind=KeyKind.PASSWORD, user_id="alice", password=PASSWORD)
    await store.close()
    prefix = redis_prefix()
    secret = "cluster-secret-0123456789-abcdefghijklmnop"
    env = {"TICKWIRE_KEY_STORE": store_path, "TICKWIRE_AUTH_SECRET": secret}
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

"""The SDK against real ``tickwire serve`` processes on a private Redis, under a busy book
and trades stream: a node draining (close 3001), a node killed with SIGKILL and
restarted, Redis killed and restarted, and tokens that live 3 s refreshed in-band.
Through all of it each channel's sequence is contiguous or carries an explicit
``Resynced``, and the ``LocalBook`` ends equal to ``GET /api/v1/book``."""

from __future__ import annotations

import asyncio
import base64
import secrets
import signal
from decimal import Decimal
from pathlib import Path

import aiohttp

import tickwire
from tickwire.auth import KeyKind, create_key, open_key_store
from tickwire.client import Backoff, Connected, Reconnecting, Recovered, Resynced, TokenRefreshed

from .redis_server import RedisServer
from .sdk_support import PUBLISH_TOKEN, BookFeed, Consumer, Node, check_stream

BOOK = "book:BTC-USD"
TRADES = "trades:BTC-USD"


async def make_secret(path: Path) -> str:
    store = open_key_store(str(path))
    await store.open()
    try:
        made = await create_key(store, kind=KeyKind.SECRET, user_id="alice")
    finally:
        await store.close()
    assert made.secret is not None
    return made.secret


async def test_sdk_survives_drain_kill_redis_restart_and_token_expiry(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    await redis.start()
    keys = tmp_path / "keys.sqlite3"
    secret = await make_secret(keys)
    env = {
        "TICKWIRE_AUTH_SECRET": secrets.token_urlsafe(48),
        "TICKWIRE_KEY_STORE": str(keys),
        "TICKWIRE_TOKEN_TTL": "3",
        "TICKWIRE_PUBLISH_TOKEN": PUBLISH_TOKEN,
    }
    engine = ["--engine", redis.url]
    publisher = Node("publisher", *engine, env=env)  # the book lives in this process
    server = Node("server", *engine, env=env)  # serves only
    nodes = (publisher, server)
    basic = base64.b64encode(f"{secret}:".encode()).decode()
    issued: list[str] = []

    async with aiohttp.ClientSession() as http:

        async def token_provider() -> str:
            for node in (server, publisher):  # whichever is up
                try:
                    async with http.post(
                        node.http + "/jwt", headers={"Authorization": f"Basic {basic}"}
                    ) as resp:
                        if resp.status == 200:
                            token: str = (await resp.json())["token"]
                            issued.append(token)
                            return token
                except (aiohttp.ClientError, OSError):
                    continue
            raise RuntimeError("no node answers POST /jwt")

        feed = BookFeed(http, publisher.http)
        feed_task: asyncio.Task[None] | None = None
        consumer_task: asyncio.Task[None] | None = None
        try:
            await asyncio.gather(*(n.start() for n in nodes))
            feed_task = asyncio.create_task(feed.run())
            await feed.wait(lambda: feed.ok >= 5)
            client = tickwire.connect(
                [server.ws_url, publisher.ws_url],
                token_provider=token_provider,
                backoff=Backoff(initial=0.05, maximum=0.5, max_attempts=200),
            )
            async with client:
                consumer = Consumer(client)
                sub = client.subscribe(BOOK, TRADES)
                await sub.start()
                consumer_task = asyncio.create_task(consumer.run(sub))

                def trades() -> int:
                    return len(consumer.messages(TRADES))

                await consumer.wait(lambda: trades() >= 20)
                assert client.url == server.ws_url

                # (a) the server closes the connection mid-stream: the node drains (3001)
                await server.stop(signal.SIGTERM)
                await consumer.wait(lambda: consumer.count(Recovered) >= 2)
                assert consumer.count(Reconnecting, code=3001) == 1
                assert client.url == publisher.ws_url
                await server.start()

                # (d) tokens live 3 s: the connection outlives two of them, refreshed in-band
                await consumer.wait(lambda: consumer.since_last_connect(TokenRefreshed) >= 2)
                mark = trades()
                await consumer.wait(lambda: trades() >= mark + 20)

                # (b) the node we are on is killed (no close frame) and started again
                before = consumer.count(Recovered)
                await publisher.stop(signal.SIGKILL)
                await consumer.wait(lambda: consumer.count(Recovered) >= before + 2)
                assert consumer.count(Reconnecting, code=1006) >= 1
                assert client.url == server.ws_url
                await publisher.start()  # the publishing process: continues from Redis
                mark = trades()
                await consumer.wait(lambda: trades() >= mark + 20)

                # (c) Redis is killed and restarted empty: every stream starts a new epoch
                epoch = consumer.messages(TRADES)[-1].epoch
                book_epoch = consumer.messages(BOOK)[-1].epoch
                await redis.stop()
                await redis.start()
                await consumer.wait(
                    lambda: (
                        consumer.count(Resynced, channel=TRADES) >= 1
                        and consumer.count(Resynced, channel=BOOK) >= 1
                        and consumer.messages(TRADES)[-1].epoch != epoch
                        and consumer.messages(BOOK)[-1].epoch != book_epoch
                    )
                )
                mark = trades()
                await consumer.wait(lambda: trades() >= mark + 20)

                # the end: stop publishing, then the local book equals the server's
                feed.stopping = True
                await feed_task
                feed_task = None
                async with http.get(publisher.http + "/api/v1/book/BTC-USD?depth=1000") as r:
                    assert r.status == 200
                    view = await r.json()
                await consumer.wait(
                    lambda: (
                        client.book(BOOK).seq == view["seq"]
                        and client.book(BOOK).epoch == view["epoch"]
                    )
                )
                book = client.book(BOOK)
                bids, asks = book.rows()
                assert (bids, asks) == (
                    [tuple(level) for level in view["bids"]],
                    [tuple(level) for level in view["asks"]],
                )
                assert book.checksum() == view["checksum"] and book.synced
                assert book.best_bid is not None and book.best_ask is not None
                assert book.spread == book.best_ask.price - book.best_bid.price > Decimal(0)
                assert book.mismatches == 0 and book.verified > 50

                items = consumer.items
                resynced, recovered = check_stream(items, TRADES, stateful=False)
                assert resynced >= 1 and recovered >= 2
                resynced, recovered = check_stream(items, BOOK, stateful=True)
                assert resynced >= 1 and recovered >= 2
                assert client.stats.refreshes >= 2 and len(issued) >= 5
                assert consumer.count(Reconnecting, code=3005) == 0  # never cut for expiry
                assert consumer.count(Connected) >= 2
                assert consumer.error is None
        finally:
            feed.stopping = True
            for task in (feed_task, consumer_task):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)
            await redis.stop()

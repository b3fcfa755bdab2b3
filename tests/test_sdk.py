"""The SDK (``tickwire.client``) against a real gateway in this process, and against a
scripted WebSocket server for what a correct server never sends (garbage, duplicates,
gaps, close codes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

import tickwire
import tickwire.client as tc
from tickwire.auth import KeyKind, create_key
from tickwire.client import (
    Backoff,
    BookUpdate,
    Connected,
    ConnectError,
    Forbidden,
    InvalidChannel,
    InvalidURL,
    Item,
    Malformed,
    Reconnecting,
    Recovered,
    Resynced,
    ServerClosed,
    TokenProviderError,
    Trade,
    Unauthorized,
)
from tickwire.client import sync as tsync
from tickwire.ingest.gateway import Gateway as Ingest
from tickwire.model.payloads import TradeData
from tickwire.server.auth_routes import AUTH_KEY
from tickwire.server.data_routes import GATEWAY_KEY

from .authkit import SECRET
from .harness import Gateway, run_gateway
from .redis_server import free_port
from .sdk_support import Consumer, check_stream

TRADES = "trades:BTC-USD"
BOOK = "book:BTC-USD"
FAST = Backoff(initial=0.01, maximum=0.05, max_attempts=20)


def ingest(gw: Gateway) -> Ingest:
    return gw.runner.app[GATEWAY_KEY]


async def token_for(gw: Gateway, user: str) -> Callable[[], Awaitable[str]]:
    """A provider of fresh ``POST /jwt`` tokens for a new secret key of ``user``."""
    made = await create_key(gw.runner.app[AUTH_KEY].store, kind=KeyKind.SECRET, user_id=user)
    assert made.secret is not None
    headers = {"Authorization": aiohttp.encode_basic_auth(made.secret, "")}

    async def provider() -> str:
        async with gw.session.post(gw.http + "/jwt", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            token: str = (await resp.json())["token"]
            return token

    return provider


def test_public_surface() -> None:
    assert tickwire.connect is tc.connect
    for name in tc.__all__:
        assert getattr(tc, name) is not None
    assert set(tc.__all__) == set(tc._EXPORTS)
    with pytest.raises(AttributeError):
        _ = tc.NoSuchName


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/ws", "127.0.0.1:8080", "ws://", "ws://h:99999/ws", ""]
)
def test_a_url_that_is_not_a_websocket_url_is_refused_at_once(url: str) -> None:
    with pytest.raises(InvalidURL) as err:
        tickwire.connect(url)
    assert err.value.code == "bad_url"
    assert "URL" in err.value.message


def test_bad_channels_and_options_are_refused_before_anything_is_sent() -> None:
    client = tickwire.connect("ws://127.0.0.1:1/ws")
    with pytest.raises(InvalidChannel) as err:
        client.subscribe("trades:BTC-USD:extra")
    assert err.value.code == "bad_channel" and "trades:BTC-USD:extra" in err.value.message
    with pytest.raises(InvalidChannel) as err:
        client.subscribe("candles:BTC-USD:7m")
    assert err.value.code == "unknown_channel" and "7m" in err.value.message
    with pytest.raises(InvalidChannel) as err:
        client.subscribe(TRADES, since={TRADES: ("", -1)})
    assert err.value.code == "bad_since"
    with pytest.raises(ValueError, match="not both"):
        tickwire.connect("ws://127.0.0.1:1/ws", token="t", token_provider=lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="max_attempts"):
        Backoff(max_attempts=0)


def test_backoff_is_exponential_with_full_jitter() -> None:
    b = Backoff(initial=0.5, maximum=4.0)
    assert [b.cap(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    delays = [b.delay(3) for _ in range(500)]
    assert all(0.0 <= d <= 2.0 for d in delays)
    # full jitter spreads over the whole range, not around the cap
    assert min(delays) < 0.5 and max(delays) > 1.5
    assert b.cap(10_000) == 4.0


async def test_a_server_that_is_down_is_retried_then_a_clear_error() -> None:
    events: list[Any] = []
    port = free_port()
    client = tickwire.connect(
        f"ws://127.0.0.1:{port}/ws",
        backoff=Backoff(initial=0.01, maximum=0.02, max_attempts=3),
        on_event=events.append,
    )
    with pytest.raises(ConnectError) as err:
        await client.start()
    assert err.value.attempts == 3 and err.value.code == "unreachable"
    assert f"127.0.0.1:{port}" in err.value.message and "3 failed" in err.value.message
    assert [(e.attempt, type(e)) for e in events] == [(2, Reconnecting), (3, Reconnecting)]


async def test_trades_and_a_verified_book_from_a_live_gateway() -> None:
    async with run_gateway(demo=True, demo_rate=5) as gw, tickwire.connect(gw.ws_url) as client:
        consumer = Consumer(client)
        sub = client.subscribe(BOOK, TRADES)
        task = asyncio.create_task(consumer.run(sub))
        await consumer.wait(lambda: len(consumer.messages(TRADES)) >= 5)
        book_msgs = consumer.messages(BOOK)
        assert isinstance(book_msgs[0], BookUpdate) and book_msgs[0].snapshot
        assert all(isinstance(m, Trade) for m in consumer.messages(TRADES))
        check_stream(consumer.items, BOOK, stateful=True)
        check_stream(consumer.items, TRADES, stateful=False)
        book = client.book(BOOK)
        assert book.synced and book.verified == len(consumer.messages(BOOK))
        assert book.mismatches == 0 and book.best_bid is not None
        bids, asks = book.depth(5)
        assert len(bids) == len(asks) == 5 and bids[0] == book.best_bid
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
        await sub.close()
        await asyncio.wait_for(task, 5)  # iteration ends after close()
        with pytest.raises(InvalidChannel):
            client.book(BOOK)


async def test_an_injected_checksum_mismatch_resyncs_the_local_book() -> None:
    async with run_gateway() as gw, tickwire.connect(gw.ws_url) as client:
        gateway = ingest(gw)
        await gateway.apply_book("BTC-USD", bids=[["100.00", "1"]], asks=[["101.00", "2"]])
        consumer = Consumer(client)
        task = asyncio.create_task(consumer.run(client.subscribe(BOOK)))
        await consumer.wait(lambda: len(consumer.messages(BOOK)) == 1)
        # a publication whose checksum does not match what it does to the book
        snap = await gw.node.engine.snapshot(BOOK)
        assert snap is not None
        bad = {"bids": [["100.00", "5.00000000"]], "asks": [], "checksum": 12345}
        await gw.node.engine.publish(BOOK, json.dumps(bad).encode(), snapshot=snap.data)
        await consumer.wait(lambda: consumer.count(Resynced, reason="checksum_mismatch") == 1)
        await consumer.wait(lambda: consumer.messages(BOOK)[-1].snapshot)
        await gateway.apply_book("BTC-USD", bids=[["99.00", "3"]], asks=[])
        await consumer.wait(lambda: len(consumer.messages(BOOK)) == 3)
        book = client.book(BOOK)
        view = await gateway.book_view("BTC-USD", 10)
        assert book.rows() == (
            [tuple(r) for r in view.bids],
            [tuple(r) for r in view.asks],
        )
        assert (book.seq, book.mismatches, book.resyncs) == (view.seq, 1, 1)
        assert client.stats.checksum_mismatches == 1
        check_stream(consumer.items, BOOK, stateful=True)
        task.cancel()


async def test_malformed_publications_are_counted_and_the_stream_goes_on() -> None:
    async with run_gateway() as gw, tickwire.connect(gw.ws_url) as client:
        gateway = ingest(gw)
        consumer = Consumer(client)
        sub = client.subscribe(TRADES)
        await sub.start()
        task = asyncio.create_task(consumer.run(sub))
        await gateway.publish_trade("BTC-USD", "100", "1", "buy")
        await gw.node.engine.publish(TRADES, b'{"not": "a trade"}')
        await gateway.publish_trade("BTC-USD", "101", "1", "sell")
        await consumer.wait(lambda: len(consumer.messages(TRADES)) == 2)
        malformed = [i for i in consumer.items if isinstance(i, Malformed)]
        assert len(malformed) == 1 and malformed[0].seq == 2 and "id" in malformed[0].error
        assert [m.seq for m in consumer.messages(TRADES)] == [1, 3]
        assert client.stats.malformed == 1
        task.cancel()


async def test_a_channel_the_user_may_not_read_is_a_typed_forbidden() -> None:
    async with run_gateway(auth_secret=SECRET) as gw:
        async with tickwire.connect(gw.ws_url) as anonymous:
            with pytest.raises(Forbidden) as err:
                await anonymous.subscribe("user:alice:orders").start()
            assert err.value.code == "unauthorized" and err.value.channel == "user:alice:orders"
        provider = await token_for(gw, "alice")
        async with tickwire.connect(gw.ws_url, token_provider=provider) as alice:
            assert alice.user == "alice"
            sub = alice.subscribe("user:bob:orders", "user:alice:orders")
            with pytest.raises(Forbidden) as err:
                async for _ in sub:
                    pass
            assert err.value.code == "forbidden" and err.value.channel == "user:bob:orders"
            assert "user:bob:orders" in err.value.message
            # the refusal left nothing held: the own channel can be subscribed alone
            await alice.subscribe("user:alice:orders").start()


async def test_a_bad_token_is_unauthorized_and_a_raising_provider_a_clear_error() -> None:
    async with run_gateway(auth_secret=SECRET) as gw:
        with pytest.raises(Unauthorized) as err:
            await tickwire.connect(gw.ws_url, token="not.a.token").start()
        assert err.value.code == "malformed_token"

        async def broken() -> str:
            raise RuntimeError("vault unreachable")

        with pytest.raises(TokenProviderError) as perr:
            await tickwire.connect(
                gw.ws_url,
                token_provider=broken,
                backoff=Backoff(initial=0.01, maximum=0.01, max_attempts=2),
            ).start()
        assert "vault unreachable" in perr.value.message and perr.value.code == "token_provider"
        assert isinstance(perr.value.__cause__, RuntimeError)


async def test_a_static_token_that_expires_stops_with_token_expired() -> None:
    async with run_gateway(auth_secret=SECRET, token_ttl=1.0, token_expiry_grace=0.0) as gw:
        token = await (await token_for(gw, "alice"))()
        async with tickwire.connect(gw.ws_url, token=token, backoff=FAST) as client:
            consumer = Consumer(client)
            await consumer.run(client.subscribe(TRADES))
        assert isinstance(consumer.error, Unauthorized)
        assert consumer.error.code == "token_expired" and "3005" in consumer.error.message
        assert consumer.count(Reconnecting) == 0  # the same token cannot work again


async def test_a_provider_failing_at_refresh_time_recovers_after_the_3005_close() -> None:
    async with run_gateway(auth_secret=SECRET, token_ttl=1.0, token_expiry_grace=0.1) as gw:
        good = await token_for(gw, "alice")
        calls, down = 0, False

        async def flaky() -> str:
            nonlocal calls, down
            calls += 1
            if down:
                raise RuntimeError(f"provider down (call {calls})")
            down = calls == 1  # the first token is handed out, then the provider fails
            return await good()

        gateway = ingest(gw)
        async with tickwire.connect(gw.ws_url, token_provider=flaky, backoff=FAST) as client:
            consumer = Consumer(client)
            sub = client.subscribe(TRADES, "user:alice:orders")
            await sub.start()
            task = asyncio.create_task(consumer.run(sub))
            await gateway.publish_trade("BTC-USD", "100", "1", "buy")
            await consumer.wait(lambda: consumer.count(Reconnecting, code=3005) == 1)
            await gateway.publish_trade("BTC-USD", "100", "2", "buy")  # while it is away
            down = False
            await consumer.wait(lambda: consumer.count(Recovered) == 2)
            await gateway.publish_trade("BTC-USD", "100", "3", "buy")
            await consumer.wait(lambda: len(consumer.messages(TRADES)) == 3)
            assert [m.seq for m in consumer.messages(TRADES)] == [1, 2, 3]
            assert check_stream(consumer.items, TRADES, stateful=False) == (0, 1)
            assert calls >= 5 and consumer.count(Connected, reconnect=True) >= 1
            task.cancel()


# -- a scripted server --------------------------------------------------------------------

Script = Callable[[web.WebSocketResponse, list[dict[str, Any]]], Awaitable[None]]


@asynccontextmanager
async def scripted(*scripts: Script) -> AsyncIterator[str]:
    """A WebSocket server whose n-th connection runs ``scripts[n]`` (the last one
    again after that); each script gets the socket and the requests read so far."""
    connections = 0

    async def handler(request: web.Request) -> web.WebSocketResponse:
        nonlocal connections
        script = scripts[min(connections, len(scripts) - 1)]
        connections += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await script(ws, [])
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        await runner.cleanup()


async def request(ws: web.WebSocketResponse, seen: list[dict[str, Any]]) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(await ws.receive_str(timeout=5))
    seen.append(msg)
    return msg


def pub(seq: int, epoch: str = "e1") -> str:
    data = {"id": seq, "price": "1.00", "size": "1.00000000", "side": "buy", "ts": 1}
    return json.dumps(
        {"type": "pub", "channel": TRADES, "seq": seq, "epoch": epoch, "ts": 1, "data": data}
    )


async def test_garbage_duplicates_and_gaps_from_a_server_never_reach_the_user() -> None:
    requests: list[dict[str, Any]] = []

    async def script(ws: web.WebSocketResponse, seen: list[dict[str, Any]]) -> None:
        sub = await request(ws, requests)
        await ws.send_str(
            json.dumps(
                {
                    "id": sub["id"],
                    "type": "subscribed",
                    "channels": [{"channel": TRADES, "epoch": "e1", "seq": 0}],
                }
            )
        )
        for frame in ["not json", '{"type": "surprise"}', pub(1), pub(2), pub(2), pub(5)]:
            await ws.send_str(frame)
        again = await request(ws, requests)  # the client asks for what it missed
        await ws.send_str(pub(6))  # in flight before the reply: belongs to the old stream
        await ws.send_str(
            json.dumps(
                {
                    "id": again["id"],
                    "type": "subscribed",
                    "channels": [{"channel": TRADES, "epoch": "e1", "seq": 6, "recovered": True}],
                }
            )
        )
        for seq in (3, 4, 5, 6):
            await ws.send_str(pub(seq))
        await ws.receive(timeout=10)

    async with scripted(script) as url, tickwire.connect(url, backoff=FAST) as client:
        consumer = Consumer(client)
        task = asyncio.create_task(consumer.run(client.subscribe(TRADES)))
        await consumer.wait(lambda: len(consumer.messages(TRADES)) == 6)
        kinds: list[Item] = consumer.items
        assert [(type(i).__name__, getattr(i, "seq", None)) for i in kinds] == [
            ("Trade", 1), ("Trade", 2), ("Recovered", None),
            ("Trade", 3), ("Trade", 4), ("Trade", 5), ("Trade", 6),
        ]  # fmt: skip
        assert requests[1]["channels"] == [{"channel": TRADES, "since": {"epoch": "e1", "seq": 2}}]
        s = client.stats
        assert (s.malformed, s.duplicates, s.gaps, s.recovered) == (2, 1, 1, 1)
        task.cancel()


async def close_with(code: int) -> Script:
    async def script(ws: web.WebSocketResponse, seen: list[dict[str, Any]]) -> None:
        sub = await request(ws, seen)
        reply = {"channel": TRADES, "epoch": "e1", "seq": 0}
        await ws.send_str(json.dumps({"id": sub["id"], "type": "subscribed", "channels": [reply]}))
        await ws.send_str(pub(1))
        await ws.close(code=code, message=b"bye")

    return script


async def test_close_codes_reconnect_below_3500_and_stop_from_3500() -> None:
    async def second(ws: web.WebSocketResponse, seen: list[dict[str, Any]]) -> None:
        sub = await request(ws, seen)
        assert sub["channels"] == [{"channel": TRADES, "since": {"epoch": "e1", "seq": 1}}]
        reply = {"channel": TRADES, "epoch": "e1", "seq": 2, "recovered": True}
        await ws.send_str(json.dumps({"id": sub["id"], "type": "subscribed", "channels": [reply]}))
        await ws.send_str(pub(2))
        await ws.close(code=3503, message=b"policy violation")

    async with (
        scripted(await close_with(3008), second) as url,
        tickwire.connect(url, backoff=FAST) as client,
    ):
        consumer = Consumer(client)
        await consumer.run(client.subscribe(TRADES))
        assert isinstance(consumer.error, ServerClosed) and consumer.error.close_code == 3503
        assert "3503" in consumer.error.message
        assert [m.seq for m in consumer.messages(TRADES)] == [1, 2]
        assert consumer.count(Reconnecting, code=3008) == 1
        assert consumer.count(Recovered, channel=TRADES, replayed=1) == 1


async def test_sync_wrapper() -> None:
    async with run_gateway(demo=True, demo_rate=5) as gw:

        def script() -> tuple[list[Any], Any]:
            with tsync.connect(gw.ws_url) as client:
                got = list(client.subscribe(TRADES, BOOK, count=6))
                return got, client.book(BOOK)

        items, book = await asyncio.to_thread(script)
        assert sum(isinstance(i, tc.Message) for i in items) == 6
        assert book.synced and book.verified >= 1
        with pytest.raises(InvalidURL):
            await asyncio.to_thread(tsync.connect, "http://127.0.0.1/ws")


def test_messages_are_msgspec_structs() -> None:
    trade = Trade(
        channel=TRADES,
        seq=1,
        epoch="e",
        ts=1,
        data=TradeData(id=1, price="1.00", size="1", side="buy", ts=1),
    )
    assert msgspec.json.decode(msgspec.json.encode(trade), type=Trade) == trade


async def test_a_subscription_starts_its_client() -> None:
    async with run_gateway() as gw:
        client = tickwire.connect(gw.ws_url)
        assert not client.connected
        sub = client.subscribe(TRADES)
        await sub.start()  # connects first
        assert client.connected and client.url == gw.ws_url
        await ingest(gw).publish_trade("BTC-USD", "100", "1", "buy")
        item = await asyncio.wait_for(sub.__anext__(), 5)
        assert isinstance(item, Trade) and item.seq == 1
        await client.close()
        assert not client.connected
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()

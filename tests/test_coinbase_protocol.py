"""The Coinbase feed over a real (in-process) gateway: subscriptions, the channels'
shapes, per-message JWTs, and every bad input the issue lists."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from tickwire.auth import Authenticator, KeyKind, create_key
from tickwire.dialects.base import Handshake
from tickwire.dialects.coinbase import Coinbase
from tickwire.dialects.core import ConnectionCore, Limits
from tickwire.engine import HistorySettings, MemoryEngine
from tickwire.hub import Hub
from tickwire.model.markets import default_registry
from tickwire.server.auth_routes import AUTH_KEY
from tickwire.server.data_routes import GATEWAY_KEY

from .authkit import SECRET, coinbase_jwt, load_private
from .harness import Gateway, run_gateway
from .test_connection_core import ManualServices
from .test_hub import MemoryTransport, next_iteration


class Feed:
    """A raw client of the Coinbase feed."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, msg: Any) -> None:
        await self.ws.send_str(msg if isinstance(msg, str) else json.dumps(msg))

    async def recv(self) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
        data: dict[str, Any] = json.loads(msg.data)
        return data

    async def recv_channel(self, channel: str) -> dict[str, Any]:
        """The next message of ``channel`` (skipping heartbeats and others)."""
        while True:
            msg = await self.recv()
            if msg.get("type") == "error":
                raise AssertionError(f"unexpected error {msg}")
            if msg.get("channel") == channel:
                return msg

    async def error(self) -> dict[str, Any]:
        msg = await self.recv()
        assert msg.get("type") == "error", msg
        return msg

    async def subscribe(self, channel: str, products: list[str] | None = None, **extra: Any) -> Any:
        msg: dict[str, Any] = {"type": "subscribe", "channel": channel, **extra}
        if products is not None:
            msg["product_ids"] = products
        await self.send(msg)


@asynccontextmanager
async def feed_gateway() -> AsyncIterator[tuple[Gateway, Authenticator]]:
    async with run_gateway(auth_secret=SECRET, markets=["BTC-USD", "ETH-USD"]) as gw:
        yield gw, gw.runner.app[AUTH_KEY]


async def connect(gw: Gateway) -> Feed:
    ws = await gw.session.ws_connect(f"ws://127.0.0.1:{gw.port}/ws/coinbase", autoclose=False)
    return Feed(ws)


async def test_public_channels_stream_with_one_sequence_over_all_channels() -> None:
    async with feed_gateway() as (gw, _):
        f = await connect(gw)
        await f.subscribe("market_trades", ["BTC-USD"])
        sub = await f.recv_channel("subscriptions")
        assert sub["events"] == [{"subscriptions": {"market_trades": ["BTC-USD"]}}]
        ingest = gw.runner.app[GATEWAY_KEY]
        await ingest.apply_book("BTC-USD", bids=[["100", "1"], ["99", "2"]], asks=[["101", "3"]])
        await f.subscribe("level2", ["BTC-USD"])
        sub = await f.recv_channel("subscriptions")
        assert sub["events"][0]["subscriptions"] == {
            "market_trades": ["BTC-USD"],
            "level2": ["BTC-USD"],
        }
        await ingest.publish_trade("BTC-USD", "101", "0.5", "buy")
        await ingest.apply_book("BTC-USD", bids=[["100", "0"]])
        seen = [sub]
        while len([m for m in seen if m["channel"] in ("l2_data", "market_trades")]) < 3:
            seen.append(await f.recv())
        nums = [m["sequence_num"] for m in seen]
        assert nums == list(range(nums[0], nums[0] + len(nums)))  # +1 per message
        l2 = [m for m in seen if m["channel"] == "l2_data"]
        assert [m["events"][0]["type"] for m in l2] == ["snapshot", "update"]
        [trades] = [m for m in seen if m["channel"] == "market_trades"]
        trade = trades["events"][0]["trades"][0]
        assert (trade["price"], trade["size"], trade["side"]) == ("101.00", "0.50000000", "SELL")
        assert trade["product_id"] == "BTC-USD" and trade["time"].endswith("Z")
        for m in seen:
            assert set(m) >= {"channel", "client_id", "timestamp", "sequence_num", "events"}
            assert len(m["timestamp"].split(".")[1]) == 10  # nanoseconds + Z


async def test_level2_starts_with_a_snapshot_then_absolute_updates() -> None:
    async with feed_gateway() as (gw, _):
        ingest = gw.runner.app[GATEWAY_KEY]
        await ingest.apply_book("ETH-USD", bids=[["100", "1"], ["99", "2"]], asks=[["101", "3"]])
        f = await connect(gw)
        await f.subscribe("level2", ["ETH-USD"])
        snap = (await f.recv_channel("l2_data"))["events"][0]
        assert snap["type"] == "snapshot" and snap["product_id"] == "ETH-USD"
        levels = {(u["side"], u["price_level"], u["new_quantity"]) for u in snap["updates"]}
        assert levels == {
            ("bid", "100.00", "1.0000"),
            ("bid", "99.00", "2.0000"),
            ("offer", "101.00", "3.0000"),
        }
        await ingest.apply_book("ETH-USD", bids=[["100", "0"]], asks=[["102", "1.5"]])
        upd = (await f.recv_channel("l2_data"))["events"][0]
        assert upd["type"] == "update"
        assert {(u["side"], u["price_level"], u["new_quantity"]) for u in upd["updates"]} == {
            ("bid", "100.00", "0"),
            ("offer", "102.00", "1.5000"),
        }


async def test_unsubscribe_without_product_ids_drops_the_channel_and_ends_empty() -> None:
    async with feed_gateway() as (gw, _):
        f = await connect(gw)
        await f.subscribe("market_trades", ["BTC-USD", "ETH-USD"])
        await f.recv_channel("subscriptions")
        await f.subscribe("heartbeats", [])
        await f.recv_channel("subscriptions")
        await f.send(
            {"type": "unsubscribe", "channel": "market_trades", "product_ids": ["ETH-USD"]}
        )
        sub = await f.recv_channel("subscriptions")
        assert sub["events"][0]["subscriptions"] == {
            "market_trades": ["BTC-USD"],
            "heartbeats": ["heartbeats"],
        }
        await f.send({"type": "unsubscribe", "channel": "market_trades"})
        await f.send({"type": "unsubscribe", "channel": "heartbeats"})
        await f.recv_channel("subscriptions")
        sub = await f.recv_channel("subscriptions")
        assert sub["events"][0]["subscriptions"] == {}
        assert gw.node.hub.subscription_count() == 0


async def test_status_lists_the_products_with_their_increments() -> None:
    async with feed_gateway() as (gw, _):
        f = await connect(gw)
        await f.subscribe("status", ["BTC-USD"])
        await f.recv_channel("subscriptions")
        status = await f.recv_channel("status")
        [product] = status["events"][0]["products"]
        assert (product["id"], product["base_increment"], product["quote_increment"]) == (
            "BTC-USD",
            "0.00000001",
            "0.01",
        )


async def test_the_user_channel_shows_only_the_jwt_users_orders() -> None:
    async with feed_gateway() as (gw, auth):
        alice = await create_key(auth.store, kind=KeyKind.EC, user_id="alice")
        bob = await create_key(auth.store, kind=KeyKind.ED25519, user_id="bob")
        assert alice.secret and bob.secret
        ingest = gw.runner.app[GATEWAY_KEY]
        f = await connect(gw)
        token = coinbase_jwt(alice.record.name, load_private(alice.secret), now=time.time())
        await f.subscribe("user", ["BTC-USD"], jwt=token)
        sub = await f.recv_channel("subscriptions")
        assert sub["events"][0]["subscriptions"] == {"user": ["BTC-USD"]}
        common = {"market": "BTC-USD", "side": "buy", "state": "open", "size": "2"}
        empty = await f.recv_channel("user")  # nothing published for alice yet
        assert [(e["type"], e["orders"]) for e in empty["events"]] == [("snapshot", [])]
        await ingest.publish_order("bob", id="o-bob", price="100", **common)
        await ingest.publish_order("alice", id="o-alice", price="100", filled="0.5", **common)
        user = await f.recv_channel("user")  # the first open orders: a snapshot again
        assert user["events"][0]["type"] == "snapshot"
        [order] = user["events"][0]["orders"]
        assert (order["order_id"], order["status"], order["order_side"]) == (
            "o-alice",
            "OPEN",
            "BUY",
        )
        assert (order["cumulative_quantity"], order["leaves_quantity"]) == (
            "0.50000000",
            "1.50000000",
        )
        assert user["events"][0]["positions"] == {
            "perpetual_futures_positions": [],
            "expiring_futures_positions": [],
        }
        # bob's JWT on a second connection reads bob's orders, never alice's
        g = await connect(gw)
        token_b = coinbase_jwt(bob.record.name, load_private(bob.secret), now=time.time())
        await g.subscribe("user", [], jwt=token_b)
        await g.recv_channel("subscriptions")
        snap = (await g.recv_channel("user"))["events"]
        assert [(e["type"], [o["order_id"] for o in e["orders"]]) for e in snap] == [
            ("snapshot", ["o-bob"])
        ]
        await ingest.publish_order("alice", id="o-alice-2", price="100", **common)
        await ingest.publish_order("bob", id="o-bob-2", price="100", **common)
        got = (await g.recv_channel("user"))["events"][0]
        assert (got["type"], got["orders"][0]["order_id"]) == ("update", "o-bob-2")
        assert (await f.recv_channel("user"))["events"][0]["orders"][0]["order_id"] == "o-alice-2"


async def test_the_user_snapshot_lists_open_orders_in_batches_of_50() -> None:
    async with feed_gateway() as (gw, auth):
        made = await create_key(auth.store, kind=KeyKind.EC, user_id="olga")
        assert made.secret
        ingest = gw.runner.app[GATEWAY_KEY]
        common = {"market": "ETH-USD", "side": "sell", "size": "1", "price": "100"}
        for i in range(120):
            await ingest.publish_order(
                "olga", id=f"o-{i}", state="open", created_at=T0 + i, **common
            )
        for i in range(0, 120, 6):  # 20 of them are done
            await ingest.publish_order(
                "olga", id=f"o-{i}", state="filled", created_at=T0 + i, **common
            )
        f = await connect(gw)
        token = coinbase_jwt(made.record.name, load_private(made.secret), now=time.time())
        await f.subscribe("user", [], jwt=token)
        events = (await f.recv_channel("user"))["events"]
        assert [(e["type"], len(e["orders"])) for e in events] == [
            ("snapshot", 50),
            ("snapshot", 50),
        ]
        ids = [o["order_id"] for e in events for o in e["orders"]]
        assert ids == [f"o-{i}" for i in range(120) if i % 6]


def sub(**fields: Any) -> str:
    return json.dumps({"type": "subscribe", **fields})


L2 = "level2"
T0 = 1_700_000_000_000
BAD_FRAMES = [
    ("{not json", "bad_json", "not valid JSON"),
    ("[1, 2]", "bad_request", "JSON object"),
    ('{"channel": "level2", "product_ids": ["BTC-USD"]}', "bad_request", "'type' is missing"),
    ('{"type": "subscrib", "channel": "level2"}', "unknown_op", "'subscrib'"),
    (sub(channel="level3", product_ids=["BTC-USD"]), "unknown_channel", "'level3'"),
    (sub(channel=L2, product_ids=["DOGE-USD"]), "unknown_channel", "'DOGE-USD'"),
    (sub(channel=L2, product_ids="BTC-USD"), "bad_request", "list of strings"),
    (sub(channel=L2, product_ids=["BTC-USD", 7]), "bad_request", "list of strings"),
    (sub(channel=L2, product_ids=[]), "bad_request", "must name a product"),
    (sub(channel=5), "bad_request", "'channel'"),
    (sub(channel="user"), "unauthorized", "credentials"),
    (sub(channel="heartbeats", jwt=12), "bad_request", "'jwt'"),
    (sub(channel=L2, product_ids=["BTC-USD"] * 1000), "bad_request", "1000 products"),
]


@pytest.mark.parametrize(("raw", "code", "fragment"), BAD_FRAMES)
async def test_bad_input_is_named_and_the_connection_stays_open(
    raw: str, code: str, fragment: str
) -> None:
    async with feed_gateway() as (gw, _):
        f = await connect(gw)
        await f.send(raw)
        err = await f.error()
        assert set(err) == {"type", "message", "code"}
        assert err["code"] == code and fragment in err["message"], err
        await f.subscribe("market_trades", ["BTC-USD"])
        sub = await f.recv_channel("subscriptions")
        assert sub["events"][0]["subscriptions"] == {"market_trades": ["BTC-USD"]}


async def test_bad_jwts_are_refused_and_the_connection_stays_open() -> None:
    async with feed_gateway() as (gw, auth):
        made = await create_key(auth.store, kind=KeyKind.EC, user_id="carol")
        ed = await create_key(auth.store, kind=KeyKind.ED25519, user_id="carol")
        gone = await create_key(auth.store, kind=KeyKind.EC, user_id="carol")
        assert made.secret and ed.secret and gone.secret
        await auth.store.revoke(gone.record.name, time.time())
        key = load_private(made.secret)
        now = time.time()
        reused = coinbase_jwt(made.record.name, key, now=now, nonce="n" * 16)
        cases = [
            (coinbase_jwt(made.record.name, key, now=now - 600), "token_expired"),
            (coinbase_jwt("nobody", key, now=now), "unknown_key"),
            (coinbase_jwt(gone.record.name, load_private(gone.secret), now=now), "key_revoked"),
            (coinbase_jwt(ed.record.name, key, now=now, alg="ES256"), "alg_not_allowed"),
            (coinbase_jwt(made.record.name, key, now=now, lifetime=600), "lifetime_too_long"),
            ("not-a-jwt", "malformed_token"),
        ]
        f = await connect(gw)
        await f.subscribe("user", [], jwt=reused)
        await f.recv_channel("subscriptions")
        await f.recv_channel("user")  # the (empty) open orders
        await f.subscribe("user", [], jwt=reused)
        assert (await f.error())["code"] == "nonce_reused"
        for token, code in cases:
            await f.subscribe("user", ["BTC-USD"], jwt=token)
            err = await f.error()
            assert err["code"] == code, (code, err)
        # a refused JWT on a public channel: refused too (the upstream checks every JWT)
        await f.subscribe("level2", ["BTC-USD"], jwt=cases[0][0])
        assert (await f.error())["code"] == "token_expired"
        await f.subscribe("market_trades", ["BTC-USD"])
        sub = await f.recv_channel("subscriptions")
        assert sub["events"][0]["subscriptions"] == {"user": ["user"], "market_trades": ["BTC-USD"]}


# -- the core's rules, with a clock the test moves -----------------------------------------


async def rig_core() -> tuple[ConnectionCore, ManualServices, MemoryTransport, MemoryEngine]:
    engine = MemoryEngine(HistorySettings(size=100, ttl=60))
    hub = Hub(engine, drain_timeout=0.01)
    await engine.start(hub)
    services = ManualServices(hub, Limits())
    dialect = Coinbase.configure(default_registry())
    transport = MemoryTransport()
    conn = hub.connect(transport, dialect.fmt, 1 << 20)
    core = ConnectionCore(services, dialect(Handshake("/ws/coinbase")), conn)
    assert await core.open()
    return core, services, transport, engine


def close_code(t: MemoryTransport) -> int | None:
    data = b"".join(t.writes)
    at = data.find(b"\x88")
    return None if at < 0 else int.from_bytes(data[at + 2 : at + 4])


async def test_a_connection_that_subscribes_to_nothing_is_closed_after_5_s() -> None:
    core, services, t, _ = await rig_core()
    services.advance(4.9)
    assert not core.closed
    services.advance(0.2)
    assert core.closed
    await next_iteration()
    assert close_code(t) == 3503  # not 1000/1001/1005: the SDK reconnects


async def test_heartbeats_every_second_count_up_in_the_sequence() -> None:
    core, services, t, _ = await rig_core()
    await core.receive('{"type": "subscribe", "channel": "heartbeats"}')
    for _ in range(3):
        services.advance(1.0)
    await next_iteration()
    msgs = t.messages()
    beats = [m for m in msgs if m["channel"] == "heartbeats"]
    assert [b["events"][0]["heartbeat_counter"] for b in beats] == [1, 2, 3]
    assert [m["sequence_num"] for m in msgs] == [0, 1, 2, 3]
    assert " +0000 UTC m=+" in beats[0]["events"][0]["current_time"]
    await core.receive('{"type": "unsubscribe", "channel": "heartbeats"}')
    services.advance(1.0)
    await next_iteration()
    assert [m["channel"] for m in t.messages()[4:]] == ["subscriptions"]
    core.finish()


async def test_the_user_subscription_outlives_its_jwt() -> None:
    """The JWT authorizes the subscribe only (as upstream); the stream goes on."""
    core, services, t, engine = await rig_core()
    # ManualServices accepts "<user>:<ttl>" as a credential
    await core.receive('{"type": "subscribe", "channel": "user", "jwt": "alice:120"}')
    services.advance(600)
    assert not core.closed
    order = {
        "id": "o-1", "market": "BTC-USD", "side": "sell", "type": "market", "state": "filled",
        "price": None, "size": "1.00000000", "filled": "1.00000000", "remaining": "0.00000000",
        "avg_price": "99.00", "client_id": None, "trades_count": 2, "created_at": 1,
        "updated_at": 2,
    }  # fmt: skip
    none = b'{"orders": []}'
    for uid in ("alice", "bob", "alice"):
        engine.publish_now(f"user:{uid}:open_orders", json.dumps(order).encode(), snapshot=none)
        for _ in range(3):
            await next_iteration()
    user = [m["events"][0] for m in t.messages() if m["channel"] == "user"]
    # no open orders (nothing published yet), no open orders (the first publication's
    # snapshot: the order is filled), then alice's update; bob's never
    assert [(e["type"], len(e["orders"])) for e in user] == [
        ("snapshot", 0),
        ("snapshot", 0),
        ("update", 1),
    ]
    o = user[2]["orders"][0]
    assert (o["status"], o["order_type"], o["avg_price"], o["limit_price"]) == (
        "FILLED",
        "MARKET",
        "99.00",
        "",
    )
    core.finish()


async def test_rest_products_list_the_registry_in_the_upstream_shape() -> None:
    async with feed_gateway() as (gw, _):
        ingest = gw.runner.app[GATEWAY_KEY]
        await ingest.apply_book("BTC-USD", bids=[["100", "1"]], asks=[["101", "1"]])
        await ingest.publish_trade("BTC-USD", "101", "0.5", "buy")
        base = gw.http + "/api/v3/brokerage/market/products"
        async with gw.session.get(base) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["num_products"] == 2
        ids = [p["product_id"] for p in body["products"]]
        assert ids == ["BTC-USD", "ETH-USD"]
        async with gw.session.get(base + "/BTC-USD") as resp:
            btc = await resp.json()
        assert (btc["price"], btc["mid_market_price"], btc["quote_increment"]) == (
            "101.00",
            "100.500",
            "0.01",
        )
        assert (btc["base_increment"], btc["status"], btc["product_type"]) == (
            "0.00000001",
            "online",
            "SPOT",
        )
        async with gw.session.get(base + "/DOGE-USD") as resp:
            assert resp.status == 404
            err = await resp.json()
        assert err["error"] == "NOT_FOUND" and "'DOGE-USD'" in err["message"]


async def test_tickwire_bench_speaks_the_coinbase_dialect() -> None:
    import asyncio

    from tickwire.client.bench.config import BenchConfig, Target
    from tickwire.client.bench.dialects import CoinbaseDialect
    from tickwire.client.bench.runner import run_bench

    d = CoinbaseDialect(["trades:BENCH", "book:BENCH"])
    assert [json.loads(m)["channel"] for m in d.opening()] == ["market_trades", "level2"]
    spec = "channel=trades:BENCH,rate=200,batch=1,size=150"
    async with run_gateway(synthetic=spec) as gw:
        config = BenchConfig(
            target=Target("127.0.0.1", gw.port, "/ws/coinbase"),
            dialect="coinbase",
            channels=("trades:BENCH",),
            connections=5,
            workers=1,
            warmup=0.2,
            duration=0.5,
        )
        result: dict[str, Any] = await asyncio.to_thread(run_bench, config, display=False)
    assert (result["ready"], result["failed"], result["errors"]) == (5, 0, {})
    assert result["messages"] > 0 and result["latency"]["samples"] > 0  # "bt" passed through


async def test_permessage_deflate_is_accepted_and_frames_stay_numbered() -> None:
    import zlib

    from .wsraw import RawClient

    async with feed_gateway() as (gw, _):
        raw = await RawClient.connect(gw.port, "/ws/coinbase", extensions="permessage-deflate")
        assert "permessage-deflate" in raw.response_headers
        raw.send({"type": "subscribe", "channel": "market_trades", "product_ids": ["BTC-USD"]})
        _, reply, reply_compressed = await raw.read_frame_bits()
        assert not reply_compressed and json.loads(reply)["sequence_num"] == 0
        await gw.runner.app[GATEWAY_KEY].publish_trade("BTC-USD", "101", "0.5", "sell")
        _, payload, compressed = await raw.read_frame_bits()
        assert compressed  # the shared compressed rest behind this connection's number
        msg = json.loads(zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff"))
        assert (msg["sequence_num"], msg["channel"]) == (1, "market_trades")
        assert msg["events"][0]["trades"][0]["side"] == "BUY"
        raw.writer.close()

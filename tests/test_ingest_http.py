"""The market data HTTP API on a real server: POST /api/v1/publish, GET /api/v1/book."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from typing import Any

import pytest

from tests.harness import Client, Gateway, run_gateway
from tests.test_book import kraken_reference
from tickwire.auth.keys import KeyKind, create_key
from tickwire.ingest.gateway import Gateway as Ingest
from tickwire.server.auth_routes import AUTH_KEY
from tickwire.server.data_routes import GATEWAY_KEY, PUBLISHER_AUTH_KEY, _IdempotencyKeys

TOKEN = "s3cret-publisher-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def ingest(gw: Gateway) -> Ingest:
    return gw.runner.app[GATEWAY_KEY]


async def post(gw: Gateway, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with gw.session.post(
        gw.http + "/api/v1/publish", headers=AUTH if headers is None else headers, **kwargs
    ) as resp:
        return resp.status, await resp.json()


async def get_book(gw: Gateway, market: str, query: str = "") -> tuple[int, Any]:
    async with gw.session.get(f"{gw.http}/api/v1/book/{market}{query}") as resp:
        return resp.status, await resp.json()


async def positions(gw: Gateway) -> dict[str, int]:
    engine = gw.node.engine
    return {
        ch: (await engine.position(ch)).seq
        for ch in ("book:BTC-USD", "trades:BTC-USD", "ticker:BTC-USD", "sentiment:AAPL")
    }


async def test_publish_reaches_websocket_subscribers() -> None:
    async with run_gateway(publish_token=TOKEN) as gw:
        client = await gw.connect()
        reply = await client.subscribe("book:BTC-USD", "trades:BTC-USD", "sentiment:AAPL")
        assert reply["type"] == "subscribed"
        batch = {
            "events": [
                {
                    "type": "book",
                    "market": "BTC-USD",
                    "bids": [["65000", "1"]],
                    "asks": [["65001.5", "0.5"]],
                },
                {
                    "type": "trade",
                    "market": "BTC-USD",
                    "price": "65001.5",
                    "size": "0.1",
                    "side": "buy",
                },
                {
                    "type": "sentiment",
                    "ticker": "AAPL",
                    "user_id": "u1",
                    "sentiment": 0.5,
                    "user_score": 2,
                },
            ]
        }
        status, body = await post(gw, batch)
        assert (status, body["accepted"]) == (200, 3)
        got: dict[str, dict[str, Any]] = {}
        async with asyncio.timeout(10):  # sentiment ticks every second: bound the wait
            while len(got) < 3:
                msg = await client.recv_type("pub", "snapshot")
                got.setdefault(msg["channel"], msg)
        # the book had no state when the client subscribed: it starts from a snapshot
        assert got["book:BTC-USD"]["type"] == "snapshot"
        assert got["trades:BTC-USD"]["type"] == "pub"
        assert got["book:BTC-USD"]["data"]["bids"] == [["65000.00", "1.00000000"]]
        assert got["book:BTC-USD"]["data"]["asks"] == [["65001.50", "0.50000000"]]
        assert isinstance(got["book:BTC-USD"]["data"]["checksum"], int)
        assert got["trades:BTC-USD"]["data"]["price"] == "65001.50"
        assert got["sentiment:AAPL"]["data"]["type"] == "user"
        await client.close()


def book(market: str = "BTC-USD", bids: Any = (), asks: Any = ()) -> dict[str, Any]:
    return {"type": "book", "market": market, "bids": list(bids), "asks": list(asks)}


GOOD = book(bids=[["100", "1"]], asks=[["101", "1"]])


@pytest.mark.parametrize(
    ("events", "status", "code", "field", "index"),
    [
        ([GOOD, book("DOGE-USD", [["1", "1"]])], 400, "unknown_market", "events[1].market", 1),
        ([GOOD, book(bids=[["99.001", "1"]])], 400, "wrong_precision", "events[1].bids[0][0]", 1),
        ([book(asks=[["101", "-2"]])], 400, "negative_size", "events[0].asks[0][1]", 0),
        ([book(bids=[["ten", "1"]])], 400, "not_a_number", "events[0].bids[0][0]", 0),
        ([book(bids=[["1e3", "1"]])], 400, "not_a_number", "events[0].bids[0][0]", 0),
        ([book(bids=[[100.5, "1"]])], 400, "invalid_field", "events[0].bids[0][0]", 0),
        ([GOOD, book(bids=[["101", "1"]])], 422, "crossed_book", "events[1].bids", 1),
        ([GOOD, book(asks=[["99", "1"]])], 422, "crossed_book", "events[1].asks", 1),
        (
            [
                {
                    "type": "trade",
                    "market": "BTC-USD",
                    "price": "1",
                    "size": "1",
                    "side": "buy",
                    "ts": 1_700_000_120_000,
                },
                GOOD,
                {
                    "type": "trade",
                    "market": "BTC-USD",
                    "price": "1",
                    "size": "1",
                    "side": "buy",
                    "ts": 1_700_000_000_000,
                },
            ],
            422,
            "trade_out_of_order",
            "events[2].ts",
            2,
        ),
        ([{"type": "quote", "market": "BTC-USD"}], 400, "invalid_field", "events[0].type", 0),
        (
            [{"type": "trade", "market": "BTC-USD", "price": "1", "size": "1"}],
            400,
            "invalid_field",
            "events[0].side",
            0,
        ),
        (
            [
                {
                    "type": "sentiment",
                    "ticker": "AAPL",
                    "user_id": "u",
                    "sentiment": 3,
                    "user_score": 1,
                }
            ],
            400,
            "out_of_range",
            "events[0].sentiment",
            0,
        ),
        ([], 400, "empty_batch", "events", None),
    ],
)
async def test_bad_batches_get_their_error_and_change_nothing(
    events: list[Any], status: int, code: str, field: str, index: int | None
) -> None:
    async with run_gateway(publish_token=TOKEN) as gw:
        before = await positions(gw)
        got_status, body = await post(gw, {"events": events})
        assert got_status == status, body
        err = body["error"]
        assert (err["code"], err.get("field"), err.get("index")) == (code, field, index), err
        assert err["message"]
        assert await positions(gw) == before
        _, view = await get_book(gw, "BTC-USD")
        assert (view["bids"], view["asks"]) == ([], [])


async def test_auth_and_limits() -> None:
    async with run_gateway(publish_token=TOKEN, publish_max_events=3) as gw:
        one = {"events": [GOOD]}
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
            status, body = await post(gw, one, headers=headers)
            assert (status, body["error"]["code"]) == (401, "unauthorized")
        status, body = await post(gw, {"events": [GOOD] * 4})
        assert (status, body["error"]["code"], body["error"]["field"]) == (
            413,
            "batch_too_large",
            "events",
        )
        status, body = await post(gw, b"x" * (1 << 21))
        assert (status, body["error"]["code"]) == (413, "body_too_large")
        status, body = await post(gw, b"{not json")
        assert (status, body["error"]["code"]) == (400, "bad_json")
        assert await positions(gw) == dict.fromkeys(await positions(gw), 0)

        # The check is pluggable: the auth layer swaps in its own.
        async def keystore(token: str | None) -> str | None:
            return "feed-1" if token == "other" else None

        gw.runner.app[PUBLISHER_AUTH_KEY].check = keystore
        status, _ = await post(gw, one, headers={"Authorization": "Bearer other"})
        assert status == 200
        status, _ = await post(gw, one)
        assert status == 401


async def test_key_store_publisher_keys() -> None:
    async with run_gateway() as gw:  # no publish_token: only key-store keys
        auth = gw.runner.app[AUTH_KEY]
        pub = await create_key(auth.store, kind=KeyKind.PUBLISHER, user_id="feed")
        other = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice")
        assert pub.secret and other.secret
        status, body = await post(gw, {"events": [GOOD]}, {"Authorization": "Bearer " + pub.secret})
        assert (status, body["accepted"]) == (200, 1)
        for secret in (other.secret, TOKEN):  # a reader's key is not a publisher key
            status, body = await post(gw, {"events": [GOOD]}, {"Authorization": "Bearer " + secret})
            assert (status, body["error"]["code"]) == (401, "unauthorized")
        await auth.store.revoke(pub.record.name, auth.now())
        status, _ = await post(gw, {"events": [GOOD]}, {"Authorization": "Bearer " + pub.secret})
        assert status == 401
        gw.runner.app[PUBLISHER_AUTH_KEY].check = None
        status, body = await post(gw, {"events": [GOOD]})
        assert (status, body["error"]["code"]) == (403, "publish_disabled")


async def test_idempotency_key() -> None:
    async with run_gateway(publish_token=TOKEN) as gw:
        batch = {"idempotency_key": "k-1", "events": [GOOD]}
        status, body = await post(gw, batch)
        assert (status, body) == (200, {"accepted": 1, "published": 2})
        before = await positions(gw)
        status, body = await post(gw, batch)
        assert status == 409
        assert body["error"]["code"] == "duplicate_idempotency_key"
        assert body["error"]["field"] == "idempotency_key"
        assert body["error"]["applied"] == {"accepted": 1, "published": 2}
        # Same key in the header, different batch: refused, nothing applied.
        other = {"events": [book(bids=[["100", "2"]])]}
        status, body = await post(gw, other, headers={**AUTH, "Idempotency-Key": "k-1"})
        assert (status, body["error"]["code"], body["error"]["applied"]) == (
            409,
            "duplicate_idempotency_key",
            None,
        )
        assert await positions(gw) == before
        # A refused batch does not use up its key.
        bad = {"idempotency_key": "k-2", "events": [book(bids=[["200", "1"]])]}
        assert (await post(gw, bad))[0] == 422
        fixed = {"idempotency_key": "k-2", "events": [book(bids=[["100.5", "1"]])]}
        assert (await post(gw, fixed))[0] == 200
        status, body = await post(gw, {**batch, "idempotency_key": "x" * 129})
        assert (status, body["error"]["code"]) == (400, "bad_idempotency_key")


def test_idempotency_keys_are_bounded() -> None:
    keys = _IdempotencyKeys(size=2, ttl=3600)
    for k in ("a", "b", "c"):
        keys.put(k, b"d", {})
    assert keys.get("a") is None and keys.get("b") is not None and keys.get("c") is not None
    expired = _IdempotencyKeys(size=10, ttl=-1)
    expired.put("a", b"d", {})
    assert expired.get("a") is None


async def test_book_endpoint() -> None:
    async with run_gateway(publish_token=TOKEN) as gw:
        levels = [[str(100 - i), "1"] for i in range(30)]
        await post(gw, {"events": [book(bids=levels, asks=[["101", "2"]])]})
        status, view = await get_book(gw, "BTC-USD", "?depth=5")
        assert status == 200
        assert view["market"] == "BTC-USD" and view["seq"] == 1 and len(view["bids"]) == 5
        assert view["bids"][0] == ["100.00", "1.00000000"]
        assert isinstance(view["epoch"], str) and isinstance(view["checksum"], int)
        assert len((await get_book(gw, "BTC-USD"))[1]["bids"]) == 30
        for query in ("?depth=0", "?depth=x", "?depth=-1", "?depth=999999"):
            status, body = await get_book(gw, "BTC-USD", query)
            assert (status, body["error"]["code"], body["error"]["field"]) == (
                400,
                "bad_depth",
                "depth",
            )
        status, body = await get_book(gw, "NOPE-USD")
        assert (status, body["error"]["code"]) == (404, "unknown_market")


# --- the end-to-end test ------------------------------------------------------


class LocalBook:
    """What a client keeps: string levels, sorted with Decimal; checksums on strings."""

    def __init__(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.bids = {p: s for p, s in bids}
        self.asks = {p: s for p, s in asks}

    def apply(self, data: dict[str, Any]) -> None:
        for side, rows in ((self.bids, data["bids"]), (self.asks, data["asks"])):
            for price, size in rows:
                if Decimal(size) == 0:
                    side.pop(price, None)
                else:
                    side[price] = size

    def sorted(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))
        return bids, asks

    def checksum(self) -> int:
        bids, asks = self.sorted()
        return kraken_reference(bids, asks)


def size(rng: random.Random) -> int:
    """A level size in units: removal one time in three."""
    return 0 if rng.random() < 1 / 3 else rng.randint(1, 10**6)


async def publish_random_updates(gw: Gateway, n: int, rng: random.Random) -> int:
    """``n`` accepted random updates (refused crossed ones are retried); returns refusals."""
    gateway = ingest(gw)
    mid, refused, done = 6_500_000, 0, 0
    while done < n:
        mid += rng.choice((-1, 0, 0, 1)) * rng.randint(0, 3)
        bids = [(mid - rng.randint(1, 120), size(rng)) for _ in range(rng.randint(0, 3))]
        asks = [(mid + rng.randint(-2, 120), size(rng)) for _ in range(rng.randint(0, 3))]
        try:
            await gateway.apply_book_units("BTC-USD", bids, asks)
        except Exception as exc:
            assert getattr(exc, "code", None) == "crossed_book", exc
            refused += 1
            continue
        done += 1
        if done % 20 == 0:
            await asyncio.sleep(0)
    return refused


async def test_http_snapshot_plus_stream_equals_server_book() -> None:
    rng = random.Random(2024)
    async with run_gateway(publish_token=TOKEN, max_queue_bytes=16 << 20) as gw:
        gateway = ingest(gw)
        await gateway.apply_book_units("BTC-USD", [(6_499_990, 5)], [(6_500_010, 5)])
        client: Client = await gw.connect()
        await client.subscribe("book:BTC-USD")
        buffered: list[dict[str, Any]] = []

        async def read_until(pred: Any) -> None:
            while not pred():
                msg = await client.recv_type("pub", "snapshot")
                if msg["type"] == "pub":
                    buffered.append(msg)

        publisher = asyncio.create_task(publish_random_updates(gw, 10_000, rng))
        # Binance procedure: buffer the stream, fetch the HTTP snapshot, drop what it
        # already covers, then apply the rest in order, verifying every checksum.
        await read_until(lambda: len(buffered) >= 2000)
        status, snap = await get_book(gw, "BTC-USD", "?depth=5000")
        assert status == 200
        local = LocalBook(snap["bids"], snap["asks"])
        assert local.checksum() == snap["checksum"]
        seq = snap["seq"]
        applied = 0
        while True:
            while buffered:
                msg = buffered.pop(0)
                if msg["seq"] <= seq:
                    continue
                assert msg["seq"] == seq + 1, "gap in the stream"
                assert msg["epoch"] == snap["epoch"]
                local.apply(msg["data"])
                assert local.checksum() == msg["data"]["checksum"], msg["seq"]
                seq = msg["seq"]
                applied += 1
            if publisher.done() and seq == (await gw.node.engine.position("book:BTC-USD")).seq:
                break
            await read_until(lambda: bool(buffered))
        refused = publisher.result()
        assert applied > 5000 and refused > 0
        status, final = await get_book(gw, "BTC-USD", "?depth=5000")
        assert final["seq"] == seq
        bids, asks = local.sorted()
        assert [list(x) for x in bids] == final["bids"]
        assert [list(x) for x in asks] == final["asks"]
        assert len(bids) > 50 and len(asks) > 50
        await client.close()

"""Issue 10: hostile input on every route. Each test reproduces one reported defect."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tickwire.auth import KeyKind, create_key
from tickwire.server.auth_routes import AUTH_KEY

from .authkit import SECRET, b64url, b64url_json
from .harness import Gateway, run_gateway

PUBLISH_TOKEN = "hostile-input-publisher-token"
BEARER = {"Authorization": f"Bearer {PUBLISH_TOKEN}"}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


# --- defect 1: deeply nested JSON -------------------------------------------------------


async def test_deeply_nested_native_frame_is_bad_json_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with run_gateway() as gw:
        c = await gw.connect()
        for depth in (33, 1000, 20_000):
            await c.ws.send_str('{"id": 1, "op": "ping", "x": ' + nested(depth) + "}")
            err = await c.recv_type("error")
            assert err["code"] == "bad_json", err
            assert "nested deeper than 32 levels" in err["message"]
        # inside a string, brackets are text
        await c.send({"id": 2, "op": "ping", "x": nested(5000)})
        assert (await c.recv_type("pong"))["id"] == 2
        await c.ws.send_str("[" * 40)  # unterminated: still bad_json
        assert (await c.recv_type("error"))["code"] == "bad_json"
        assert (await c.request("ping"))["type"] == "pong"
    no_tracebacks(caplog)


async def test_deeply_nested_login_body_is_400_with_the_documented_shape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with run_gateway(auth_secret=SECRET) as gw:
        body = nested(2048).encode()
        assert len(body) == 4096
        async with gw.session.post(
            gw.http + "/login", data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 400
            assert resp.content_type == "application/json"
            error = (await resp.json())["error"]
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "bad_request"
        assert "nested deeper than 32 levels" in error["message"]
    no_tracebacks(caplog)


async def test_deeply_nested_publish_body_is_bad_json(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with run_gateway(publish_token=PUBLISH_TOKEN) as gw:
        # the tag comes last, so the decoder must skip the nested field to find it
        body = '{"events": [{"market": ' + nested(5000) + ', "type": "book"}]}'
        async with gw.session.post(
            gw.http + "/api/v1/publish", data=body.encode(), headers=BEARER
        ) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
        assert error["code"] == "bad_json"
        assert "nested deeper than 32 levels" in error["message"]
    no_tracebacks(caplog)


@pytest.mark.parametrize("segment", ["header", "claims"])
async def test_deeply_nested_token_is_malformed(
    segment: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    deep = b'{"a": ' + nested(2000).encode() + b"}"
    head = b64url_json({"alg": "HS256", "typ": "JWT"})
    claims = b64url_json({"sub": "x"})
    token = (
        f"{b64url(deep)}.{claims}.c2ln" if segment == "header" else f"{head}.{b64url(deep)}.c2ln"
    )
    async with run_gateway(auth_secret=SECRET) as gw:
        c = await gw.connect()
        reply = await c.request("auth", token=token)
        assert reply["code"] == "malformed_token", reply
        assert f"{segment} is nested deeper" in reply["message"]
    no_tracebacks(caplog)


# --- defect 4: the publish API is rate limited per address ------------------------------


async def test_wrong_publisher_keys_are_rate_limited_like_jwt_and_login() -> None:
    async with run_gateway(
        publish_token=PUBLISH_TOKEN, auth_rate_burst=3, auth_rate_per_minute=1
    ) as gw:
        statuses = []
        for i in range(6):
            async with gw.session.post(
                gw.http + "/api/v1/publish",
                json={"events": []},
                headers={"Authorization": f"Bearer wrong-{i}"},
            ) as resp:
                statuses.append(resp.status)
                body = await resp.json()
                if resp.status == 429:
                    assert body["error"]["code"] == "rate_limited"
                    assert int(resp.headers["Retry-After"]) >= 1
        assert statuses == [401, 401, 401, 429, 429, 429]
        # the limit is per address and shared: /jwt from here is refused too
        async with gw.session.post(gw.http + "/jwt") as resp:
            assert resp.status == 429


async def test_successful_publishes_do_not_use_up_the_limit() -> None:
    async with run_gateway(
        publish_token=PUBLISH_TOKEN, auth_rate_burst=2, auth_rate_per_minute=1
    ) as gw:
        batch = {"events": [{"type": "trade", "market": "BTC-USD", "price": "1", "size": "1"}]}
        batch["events"][0]["side"] = "buy"
        for _ in range(5):
            async with gw.session.post(
                gw.http + "/api/v1/publish", json=batch, headers=BEARER
            ) as resp:
                assert resp.status == 200, await resp.text()


# --- defect 7: numeric input bounded to what the domain allows --------------------------


def trade(**fields: Any) -> dict[str, Any]:
    return {"type": "trade", "market": "BTC-USD", "price": "100", "size": "1", "side": "buy"} | (
        fields
    )


async def publish(gw: Gateway, *events: dict[str, Any]) -> tuple[int, Any]:
    async with gw.session.post(
        gw.http + "/api/v1/publish", json={"events": list(events)}, headers=BEARER
    ) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (trade(id=10**30), "events[0].id"),
        (trade(id=2**63), "events[0].id"),
        (trade(id=-1), "events[0].id"),
        (trade(ts=10**30), "events[0].ts"),
        (trade(ts=5), "events[0].ts"),
        (
            {
                "type": "user_trade",
                "user_id": "alice",
                "id": 2**64,
                "order_id": "o1",
                "market": "BTC-USD",
                "side": "buy",
                "price": "1",
                "size": "1",
                "liquidity": "maker",
            },
            "events[0].id",
        ),
        (
            {
                "type": "order",
                "user_id": "alice",
                "id": "o1",
                "market": "BTC-USD",
                "side": "buy",
                "state": "wait",
                "size": "1",
                "price": "1",
                "trades_count": 10**20,
            },
            "events[0].trades_count",
        ),
        (
            {"type": "sentiment", "ticker": "AAPL", "user_id": "u", "sentiment": 0.1}
            | {"user_score": 1.0, "ts": -(10**25)},
            "events[0].ts",
        ),
    ],
)
async def test_out_of_range_numbers_are_refused_with_the_field_named(
    event: dict[str, Any], field: str
) -> None:
    async with run_gateway(publish_token=PUBLISH_TOKEN) as gw:
        status, body = await publish(gw, event)
        assert status == 400, body
        assert body["error"]["field"] == field, body
        assert body["error"]["code"] == "invalid_field"


async def test_a_refused_huge_trade_id_does_not_move_the_assigned_ids() -> None:
    async with run_gateway(publish_token=PUBLISH_TOKEN) as gw:
        c = await gw.connect()
        await c.subscribe("trades:BTC-USD")
        status, _ = await publish(gw, trade(id=10**30))
        assert status == 400
        assert (await publish(gw, trade()))[0] == 200
        assert (await c.recv_type("pub"))["data"]["id"] == 1


async def test_native_request_ids_are_64_bit() -> None:
    async with run_gateway() as gw:
        c = await gw.connect()
        await c.ws.send_str('{"id": 100000000000000000000000000000, "op": "ping"}')
        err = await c.recv_type("error")
        assert err["code"] == "bad_request" and "64-bit" in err["message"]
        await c.send({"id": 2**63 - 1, "op": "ping"})
        assert (await c.recv_type("pong"))["id"] == 2**63 - 1


# --- the key store check behind the publish API is covered by the same limiter ----------


async def test_key_store_publisher_keys_still_publish_under_the_limiter() -> None:
    async with run_gateway(auth_secret=SECRET, auth_rate_burst=1, auth_rate_per_minute=1) as gw:
        auth = gw.runner.app[AUTH_KEY]
        made = await create_key(auth.store, kind=KeyKind.PUBLISHER, user_id="feed")
        assert made.secret
        for _ in range(3):
            async with gw.session.post(
                gw.http + "/api/v1/publish",
                json={"events": [trade()]},
                headers={"Authorization": f"Bearer {made.secret}"},
            ) as resp:
                assert resp.status == 200, await resp.text()
        async with gw.session.post(
            gw.http + "/api/v1/publish",
            json={"events": [trade()]},
            headers={"Authorization": "Bearer nope"},
        ) as resp:
            assert resp.status == 401
        async with gw.session.post(
            gw.http + "/api/v1/publish",
            json={"events": [trade()]},
            headers={"Authorization": "Bearer nope"},
        ) as resp:
            assert resp.status == 429


# --- issue 11: errors shown to publishers give prices as decimals, never integer units -----


async def test_a_crossed_book_error_names_prices_at_the_markets_precision() -> None:
    async with run_gateway(publish_token=PUBLISH_TOKEN) as gw:
        book = {"type": "book", "market": "BTC-USD", "bids": [["65000.5", "1"]], "asks": []}
        assert (await publish(gw, book))[0] == 200
        cross = {"type": "book", "market": "BTC-USD", "bids": [], "asks": [["65000", "1"]]}
        status, body = await publish(gw, cross)
        assert status == 422 and body["error"]["code"] == "crossed_book"
        message = body["error"]["message"]
        assert "best bid 65000.50 >= best ask 65000.00" in message, message
        assert "6500050" not in message

"""The ranger dialect end to end: a real server, plain WebSocket clients, data through the
market-data gateway."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tickwire.ingest.gateway import Gateway as MarketGateway
from tickwire.server.data_routes import GATEWAY_KEY

from .harness import Gateway, run_gateway
from .rangerkit import PRIVATE, PUBLIC, IdentityProvider, RangerBook, RangerClient
from .wsraw import RawClient

INVALID_EVENT = "Could not parse Type: Invalid event"
TOKEN_TYPE = "Token type is not provided or invalid."


@pytest.fixture(scope="module")
def idp() -> IdentityProvider:
    return IdentityProvider()


@asynccontextmanager
async def ranger_gateway(
    idp: IdentityProvider, tmp: Path, **overrides: Any
) -> AsyncIterator[tuple[Gateway, MarketGateway]]:
    async with run_gateway(bearer_jwks=idp.jwks(tmp), **overrides) as gw:
        yield gw, gw.runner.app[GATEWAY_KEY]


async def connect(gw: Gateway, path: str = PUBLIC, **kw: Any) -> RangerClient:
    return await RangerClient.connect(gw.session, gw.http, path, **kw)


async def test_streams_from_query_snapshot_increments_trades_tickers(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    async with ranger_gateway(idp, tmp_path) as (gw, market):
        await market.apply_book("BTC-USD", bids=[["100", "1"], ["99", "2"]], asks=[["101", "3"]])
        c = await connect(
            gw, streams=["btcusd.trades", "btcusd.ob-inc,global.tickers", "btcusd.kline-1m"]
        )
        assert set(await c.recv()) == {"challenge"}
        assert await c.recv() == {
            "success": {
                "message": "subscribed",
                "streams": ["btcusd.kline-1m", "btcusd.ob-inc", "btcusd.trades", "global.tickers"],
            }
        }
        native = await gw.connect()
        await native.subscribe("book:BTC-USD")
        native_snap = await native.recv_type("snapshot")
        book = RangerBook()
        snap = await c.recv_key("btcusd.ob-snap")
        book.snapshot(snap["btcusd.ob-snap"])
        assert book.sequence == native_snap["seq"]
        assert snap["btcusd.ob-snap"]["asks"] == [["101.00", "3.00000000"]]
        # one level per change is Peatio's shape; several levels come as a list of levels
        await market.apply_book("BTC-USD", bids=[["99", "0"]])
        await market.apply_book("BTC-USD", bids=[["100", "1.5"], ["98", "4"]], asks=[["102", "1"]])
        inc1 = (await c.recv_key("btcusd.ob-inc"))["btcusd.ob-inc"]
        assert book.sequence is not None
        assert inc1 == {"bids": ["99.00", "0.00000000"], "sequence": book.sequence + 1}
        book.increment(inc1)
        inc2 = (await c.recv_key("btcusd.ob-inc"))["btcusd.ob-inc"]
        assert inc2["bids"] == [["100.00", "1.50000000"], ["98.00", "4.00000000"]]
        book.increment(inc2)
        # the same seq as the native client and the HTTP book
        for _ in range(2):
            pub = await native.recv_type("pub")
        assert pub["seq"] == book.sequence
        async with gw.session.get(gw.http + "/api/v1/book/BTC-USD") as resp:
            http = await resp.json()
        assert http["seq"] == book.sequence
        assert book.rows() == (http["bids"], http["asks"])
        await market.publish_trade("BTC-USD", "101", "0.25", "buy", id=42, ts=1_700_000_000_123)
        got: dict[str, str] = {}
        while not (
            {"btcusd.trades", "btcusd.kline-1m"} <= set(got)
            and '"101.00"' in got.get("global.tickers", "")
        ):
            text = await c.recv_raw()
            got[next(iter(json.loads(text)))] = text
        assert json.loads(got["btcusd.trades"]) == {
            "btcusd.trades": {
                "trades": [
                    {
                        "tid": 42,
                        "taker_type": "buy",
                        "date": 1_700_000_000,
                        "price": "101.00",
                        "amount": "0.25000000",
                    }
                ]
            }
        }
        # kline values are JSON numbers with the exact digits, as Peatio sends them
        assert got["btcusd.kline-1m"] == (
            '{"btcusd.kline-1m":[1699999980,101.00,101.00,101.00,101.00,0.25000000]}'
        )
        kline = json.loads(got["btcusd.kline-1m"])["btcusd.kline-1m"]
        assert kline[0] == 1_699_999_980  # the minute's start, seconds
        assert kline[1:] == [101.0, 101.0, 101.0, 101.0, 0.25]
        tickers = json.loads(got["global.tickers"])["global.tickers"]
        btc = tickers["btcusd"]
        assert all(isinstance(v, str) for k, v in btc.items() if k != "at")
        assert btc["last"] == "101.00" and btc["price_change_percent"] == "+0.00%"
        assert btc["amount"] == "0.25000000" and btc["volume"] == "25.2500000000"
        await c.close()
        await native.close()


async def test_global_tickers_carry_every_market(idp: IdentityProvider, tmp_path: Path) -> None:
    async with ranger_gateway(idp, tmp_path, ranger_challenge=False) as (gw, market):
        c = await connect(gw, streams=["global.tickers"])
        await c.recv_key("success")
        await market.publish_trade("BTC-USD", "100", "1", "buy")
        first = (await c.recv_key("global.tickers"))["global.tickers"]
        assert set(first) == {"btcusd"}
        await market.publish_trade("ETH-USD", "10", "1", "sell")
        both = (await c.recv_key("global.tickers"))["global.tickers"]
        assert set(both) == {"btcusd", "ethusd"}  # the front end replaces its whole table
        assert both["btcusd"] == first["btcusd"]


async def test_in_band_subscribe_unsubscribe_ping_and_errors(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    async with ranger_gateway(idp, tmp_path, ranger_challenge=False) as (gw, _):
        c = await connect(gw)
        await c.send({"event": "subscribe", "streams": ["btcusd.trades", "ethusd.ob-inc"]})
        reply = await c.recv()
        assert reply["success"]["streams"] == ["btcusd.trades", "ethusd.ob-inc"]
        await c.send({"event": "subscribe", "streams": ["global.tickers"]})
        reply = await c.recv()
        assert reply["success"] == {
            "message": "subscribed",
            "streams": ["btcusd.trades", "ethusd.ob-inc", "global.tickers"],
        }
        await c.send({"event": "unsubscribe", "streams": ["btcusd.trades", "global.tickers"]})
        assert await c.recv() == {
            "success": {"message": "unsubscribed", "streams": ["ethusd.ob-inc"]}
        }
        await c.send("ping")
        assert await c.recv_raw() == "pong"
        bad: list[tuple[Any, dict[str, Any]]] = [
            ("{nope", {"error": None}),
            ([1, 2], {"error": "Could not parse message: expected a JSON object"}),
            (
                {"event": "dance", "streams": ["x"]},
                {"error": "Could not parse Type: Invalid event"},
            ),
            ({"event": "subscribe"}, {"error": "No streams provided"}),
            ({"event": "subscribe", "streams": []}, {"error": "No streams provided"}),
            ({"event": "subscribe", "streams": "btcusd.trades"}, {"error": None}),
            ({"event": "subscribe", "streams": [1]}, {"error": None}),
            ({"event": "subscribe", "streams": ["dogeusd.trades"]}, {"error": None}),
            ({"event": "subscribe", "streams": ["btcusd.weather"]}, {"error": None}),
            ({"event": "subscribe", "streams": ["btcusd.kline-7m"]}, {"error": None}),
            ({"event": "subscribe", "streams": ["admin.btcusd.trades"]}, {"error": None}),
            ({"event": "subscribe", "streams": ["order"]}, {"error": None}),
            ("x" * 70_000, {"error": None}),
        ]
        for msg, expected in bad:
            await c.send(msg)
            got = await c.recv()
            assert set(got) == {"error"} and isinstance(got["error"], str), (msg, got)
            if expected["error"] is not None:
                assert got == expected
        errors = []
        for msg, _ in bad[:2] + bad[5:12]:
            await c.send(msg)
            errors.append((await c.recv())["error"])
        assert errors[0].startswith("Could not parse message")
        assert errors[2].startswith("Could not parse Streams")
        assert "dogeusd.trades" in errors[4] and "btcusd.weather" in errors[5]
        assert "Authentication required" in errors[8]
        # the good streams of a request are subscribed, the bad ones named
        await c.send({"event": "subscribe", "streams": ["btcusd.trades", "deposit_address"]})
        assert (await c.recv()) == {"error": "Unknown streams: deposit_address"}
        reply = await c.recv()
        assert reply["success"]["streams"] == ["btcusd.trades", "ethusd.ob-inc"]
        await c.close()


async def test_private_endpoint_refuses_without_valid_token(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    other = IdentityProvider()
    async with ranger_gateway(idp, tmp_path) as (gw, _):
        cases: list[tuple[dict[str, str], str]] = [
            ({}, "needs a credential"),
            ({"Authorization": "Bearer not.a.jwt"}, ""),
            ({"Authorization": "Basic dXNlcjpwYXNz"}, ""),
            ({"Authorization": "Bearer " + idp.token("U1", exp=1_600_000_000)}, "expired"),
            ({"Authorization": "Bearer " + other.token("U1")}, ""),  # wrong signature
            ({"Authorization": "Bearer " + idp.token("U1", sub="api")}, "sub"),
            ({"Authorization": "Bearer " + idp.token("U1", jti=None)}, "jti"),
        ]
        for path in (PRIVATE, PRIVATE.rstrip("/")):
            for headers, words in cases:
                async with gw.session.get(gw.http + path, headers=headers) as resp:
                    assert resp.status == 401, (path, headers)
                    body = await resp.json()
                    assert isinstance(body["error"], str) and words in body["error"], body
        # a wrong-algorithm token (HS256 with the RSA public key as secret)
        pem = idp.rsa.public_key().public_bytes(*_pem_args())
        forged = _hs256(idp.claims("U1"), pem)
        async with gw.session.get(
            gw.http + PRIVATE, headers={"Authorization": "Bearer " + forged}
        ) as resp:
            assert resp.status == 401
        # /public without a token is fine; with a bad one it is refused too
        c = await connect(gw)
        assert "challenge" in await c.recv()
        await c.close()
        async with gw.session.get(
            gw.http + PUBLIC, headers={"Authorization": "Bearer nope"}
        ) as resp:
            assert resp.status == 401


def _pem_args() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo


def _hs256(claims: dict[str, Any], secret: bytes) -> str:
    from .authkit import forge_hmac

    return forge_hmac({"alg": "HS256", "typ": "JWT", "kid": "rs"}, claims, secret)


@pytest.mark.parametrize("alg", ["RS256", "EdDSA"])
async def test_private_streams_reach_only_their_user(
    idp: IdentityProvider, tmp_path: Path, alg: str
) -> None:
    async with ranger_gateway(idp, tmp_path, ranger_challenge=False) as (gw, market):
        alice = await connect(
            gw, PRIVATE, streams=["order", "trade", "btcusd.trades"], token=idp.token("UA1", alg)
        )
        bob = await connect(gw, PRIVATE, token=idp.token("UB2", alg))
        reply = await alice.recv()
        assert reply["success"]["streams"] == ["btcusd.trades", "order", "trade"]
        # bob is subscribed to his own order and trade streams without asking
        await bob.send({"event": "subscribe", "streams": ["ethusd.trades"]})
        assert (await bob.recv())["success"]["streams"] == ["ethusd.trades", "order", "trade"]
        await market.publish_order(
            "UA1",
            id="17",
            market="BTC-USD",
            side="buy",
            state="open",
            size="2",
            price="100",
            filled="0.5",
            created_at=1_700_000_000_000,
        )
        await market.publish_user_trade(
            "UA1",
            id=9,
            order_id="17",
            market="BTC-USD",
            side="buy",
            price="100",
            size="0.5",
            liquidity="maker",
            ts=1_700_000_001_000,
        )
        await market.publish_order(
            "UB2",
            id="18",
            market="ETH-USD",
            side="sell",
            state="filled",
            size="1",
            price="10",
            filled="1",
        )
        order = (await alice.recv_key("order"))["order"]
        assert order == {
            "id": 17,
            "market": "btcusd",
            "kind": "bid",
            "side": "buy",
            "ord_type": "limit",
            "price": "100.00",
            "avg_price": "0.0",
            "state": "wait",
            "origin_volume": "2.00000000",
            "remaining_volume": "1.50000000",
            "executed_volume": "0.50000000",
            "trades_count": 0,
            "at": 1_700_000_000,
            "created_at": 1_700_000_000,
            "updated_at": 1_700_000_000,
        }
        trade = (await alice.recv_key("trade"))["trade"]
        assert trade == {
            "id": 9,
            "price": "100.00",
            "amount": "0.50000000",
            "total": "50.0000000000",
            "market": "btcusd",
            "side": "buy",
            "taker_type": "sell",
            "order_id": 17,
            "created_at": 1_700_000_001,
        }
        got = (await bob.recv_key("order"))["order"]
        assert (got["id"], got["state"], got["market"]) == (18, "done", "ethusd")
        # alice received nothing of bob's: her next message is the next thing sent to her
        await alice.send("ping")
        assert await alice.recv_raw() == "pong"
        await alice.close()
        await bob.close()


async def test_challenge_flow_answers_with_the_seed_messages(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    async with ranger_gateway(idp, tmp_path) as (gw, market):
        c = await connect(gw)
        challenge = await c.recv()
        assert isinstance(challenge["challenge"], str) and len(challenge["challenge"]) >= 32
        for msg, answer in [
            (
                {"jwt": "Basic abc"},
                {"error": {"message": "Token type is not provided or invalid."}},
            ),
            ({"jwt": 12}, {"error": {"message": "Token type is not provided or invalid."}}),
            ({"jwt": "Bearer "}, {"error": {"message": "Authentication failed."}}),
            ({"jwt": "Bearer x.y.z"}, {"error": {"message": "Authentication failed."}}),
            (
                {"jwt": "Bearer " + idp.token("UC3", exp=1_600_000_000)},
                {"error": {"message": "Authentication failed."}},
            ),
            (
                {"jwt": "Bearer " + IdentityProvider().token("UC3", "EdDSA")},
                {"error": {"message": "Authentication failed."}},
            ),
        ]:
            await c.send(msg)
            assert await c.recv() == answer, msg
        await c.send({"jwt": "Bearer " + idp.token("UC3", "EdDSA")})
        assert await c.recv() == {"success": {"message": "Authenticated."}}
        await market.publish_user_trade(
            "UC3",
            id=1,
            order_id="5",
            market="BTC-USD",
            side="sell",
            price="100",
            size="1",
            liquidity="taker",
        )
        trade = (await c.recv_key("trade"))["trade"]
        assert (trade["id"], trade["side"], trade["taker_type"]) == (1, "sell", "sell")
        await c.send({"event": "subscribe", "streams": ["btcusd.trades"]})
        assert (await c.recv())["success"]["streams"] == ["btcusd.trades", "order", "trade"]
        await c.close()


async def test_reset_sends_a_sequence_gap_then_a_new_snapshot(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    # a snapshot with every update, so the new snapshot alone shows the book as of the reset
    async with ranger_gateway(
        idp, tmp_path, ranger_challenge=False, history_size=3, book_snapshot_every=1
    ) as (gw, market):
        await market.apply_book("BTC-USD", bids=[["100", "1"]], asks=[["101", "1"]])
        c = await connect(gw, streams=["btcusd.ob-inc"])
        await c.recv_key("success")
        book = RangerBook()
        book.snapshot((await c.recv_key("btcusd.ob-snap"))["btcusd.ob-snap"])
        # the node misses publications beyond its history: the hub must reset the stream
        engine = gw.node.engine
        await engine.unsubscribe(["book:BTC-USD"])
        for i in range(10):
            await market.apply_book("BTC-USD", bids=[["100", str(2 + i)]])
        await engine.subscribe(["book:BTC-USD"])
        await market.apply_book("BTC-USD", asks=[["101", "7"]])
        gap = (await c.recv_key("btcusd.ob-inc"))["btcusd.ob-inc"]
        assert gap == {"sequence": 0}  # follows no sequence: a checking client rebuilds
        with pytest.raises(AssertionError):
            book.increment(gap)
        snap = (await c.recv_key("btcusd.ob-snap"))["btcusd.ob-snap"]
        book.snapshot(snap)
        assert book.rows() == ([["100.00", "11.00000000"]], [["101.00", "7.00000000"]])
        # what the openware front end does on a gap: reconnect and subscribe again
        await c.close()
        again = await connect(gw, streams=["btcusd.ob-inc"])
        await again.recv_key("success")
        fresh = (await again.recv_key("btcusd.ob-snap"))["btcusd.ob-snap"]
        assert fresh == snap
        await market.apply_book("BTC-USD", bids=[["99", "1"]])
        book.increment((await again.recv_key("btcusd.ob-inc"))["btcusd.ob-inc"])
        await again.close()


async def test_paths_are_configurable_and_bad_paths_refused(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    async with ranger_gateway(
        idp, tmp_path, ranger_public_paths=["/ranger/pub"], ranger_private_paths=["/ranger/priv/"]
    ) as (gw, _):
        for path in ("/ranger/pub", "/ranger/pub/"):
            c = await connect(gw, path)
            assert "challenge" in await c.recv()
            await c.close()
        async with gw.session.get(gw.http + "/ranger/priv") as resp:
            assert resp.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await connect(gw, PUBLIC)


async def test_a_client_that_falls_behind_is_closed_3008_and_others_go_on(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    async with ranger_gateway(idp, tmp_path, ranger_challenge=False, max_queue_bytes=65_536) as (
        gw,
        _,
    ):
        slow = await RawClient.connect(gw.port, PUBLIC + "?stream=btcusd.trades", rcvbuf=4096)
        opcode, payload = await slow.read_frame()
        assert json.loads(payload)["success"]["streams"] == ["btcusd.trades"]
        fast = await connect(gw, streams=["btcusd.trades"])
        await fast.recv_key("success")
        hub = gw.node.hub
        big = {"pad": "x" * 20_000}  # outside the trade contract: sent as it is
        sent = 0
        while hub.stats.slow_disconnects == 0 and sent < 2_000:
            await gw.publish("trades:BTC-USD", big)
            sent += 1
            assert "btcusd.trades" in await fast.recv()  # the reading client keeps up
        assert hub.stats.slow_disconnects == 1
        while opcode != 0x8:  # what was already written, then the close frame
            opcode, payload = await slow.read_frame()
        assert int.from_bytes(payload[:2]) == 3008
        await gw.publish("trades:BTC-USD", {"pad": "after"})
        assert (await fast.recv())["btcusd.trades"] == {"pad": "after"}
        await fast.close()


async def test_role_gated_streams_reach_only_the_roles_permitted(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    rbac = "admin=admin,superadmin;ops=superadmin"
    async with ranger_gateway(idp, tmp_path, ranger_challenge=False, ranger_rbac=rbac) as (
        gw,
        market,
    ):
        boss = await connect(gw, PRIVATE, token=idp.token("UA1", role="admin"))
        member = await connect(gw, PRIVATE, token=idp.token("UB2"))  # role "member"
        anon = await connect(gw)
        ask = {"event": "subscribe", "streams": ["admin.btcusd.trades", "ops.btcusd.trades"]}
        await boss.send(ask)
        # rango's answer for a prefix the role may not read, and the rest is subscribed
        assert await boss.recv() == {
            "success": {"message": "cannot subscribe to ops.btcusd.trades"}
        }
        assert (await boss.recv())["success"]["streams"] == [
            "admin.btcusd.trades",
            "order",
            "trade",
        ]
        for client in (member, anon):
            await client.send({**ask, "streams": ["admin.btcusd.trades", "btcusd.trades"]})
            refused = await client.recv()
            assert refused == {"success": {"message": "cannot subscribe to admin.btcusd.trades"}}
            assert "btcusd.trades" in (await client.recv())["success"]["streams"]
        # a prefix nobody configured is no stream at all
        await anon.send({**ask, "streams": ["root.btcusd.trades"]})
        assert await anon.recv() == {"error": "Unknown streams: root.btcusd.trades"}
        # what RabbitMQ's admin.btcusd.trades carries reaches the admin, under the topic
        await market.publish_scoped("admin", "btcusd.trades", b'{"note":"halt at 10:00"}')
        assert await boss.recv() == {"btcusd.trades": {"note": "halt at 10:00"}}
        for client in (member, anon):  # nothing for them: their next message is the pong
            await client.send("ping")
            assert await client.recv_raw() == "pong"
        # the same channel is refused in the native dialect to a principal without the role
        native = await gw.connect()
        reply = await native.subscribe("scoped:admin:btcusd.trades")
        assert (reply["type"], reply["code"]) == ("error", "forbidden")
        assert "prefix 'admin'" in reply["message"]
        # in the query too, on connecting with the token
        boss2 = await connect(
            gw, PRIVATE, streams=["admin.btcusd.trades"], token=idp.token("UA3", role="superadmin")
        )
        assert "admin.btcusd.trades" in (await boss2.recv())["success"]["streams"]
        for client in (boss, boss2, member, anon):
            await client.close()


async def test_role_gated_settings_are_checked(idp: IdentityProvider, tmp_path: Path) -> None:
    from tickwire.server.config import ConfigError, load_config, parse_rbac

    assert parse_rbac(" admin = admin , superadmin ; ops=superadmin;") == {
        "admin": frozenset({"admin", "superadmin"}),
        "ops": frozenset({"superadmin"}),
    }
    env = {"RANGO_RBAC_ADMIN": "admin,superadmin", "RANGO_RBAC_OPS": "superadmin"}
    config = load_config({}, env=env)
    assert parse_rbac(config.ranger_rbac) == parse_rbac("admin=admin,superadmin;ops=superadmin")
    for bad in ("admin", "Admin=x", "admin=", "=x", "a.b=x"):
        with pytest.raises(ConfigError, match="ranger_rbac"):
            load_config({"ranger_rbac": bad}, env={})


async def test_every_peatio_kline_period_is_served(idp: IdentityProvider, tmp_path: Path) -> None:
    periods = ["1m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "3d", "1w"]
    async with ranger_gateway(idp, tmp_path, ranger_challenge=False) as (gw, market):
        streams = [f"btcusd.kline-{p}" for p in periods]
        c = await connect(gw, streams=streams)
        assert (await c.recv())["success"]["streams"] == sorted(streams)
        ts = 1_700_000_123_000  # Tuesday 2023-11-14 22:15:23 UTC
        await market.publish_trade("BTC-USD", "101", "0.25", "buy", ts=ts)
        starts = {}
        for _ in periods:
            [(key, kline)] = (await c.recv_key(*streams)).items()
            starts[key.rsplit("-", 1)[1]] = kline[0]
        assert starts["1w"] == 1_699_488_000  # Thursday 2023-11-09 00:00 UTC (epoch-aligned)
        assert starts["3d"] == 1_699_833_600  # 2023-11-13 00:00 UTC: day 19,674, a multiple of 3
        assert (starts["12h"], starts["30m"]) == (1_699_963_200, 1_699_999_200)
        await c.close()

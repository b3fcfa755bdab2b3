"""``POST /jwt``, ``POST /login`` and native-dialect authentication on a real gateway."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tickwire.auth import Authenticator, Entitlements, KeyKind, create_key
from tickwire.hub import CLOSE_TOKEN_EXPIRED, CLOSE_UNAUTHORIZED
from tickwire.server.auth_routes import AUTH_KEY, redact_credentials

from .authkit import SECRET, claims_of, digest, forge_hmac, public_pem
from .harness import Client, Gateway, run_gateway


@asynccontextmanager
async def gateway(**overrides: Any) -> AsyncIterator[tuple[Gateway, Authenticator]]:
    async with run_gateway(auth_secret=SECRET, **overrides) as gw:
        yield gw, gw.runner.app[AUTH_KEY]


def basic(user: str, password: str = "") -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def get_token(gw: Gateway, secret: str) -> str:
    async with gw.session.post(gw.http + "/jwt", headers=basic(secret)) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Cache-Control"] == "no-store"
        body = await resp.json()
    token: str = body["token"]
    return token


async def error_of(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    body = await resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "code", "message"}
    assert body["error"]["type"] == "invalid_request_error"
    error: dict[str, Any] = body["error"]
    return error


async def test_token_exchange_then_private_channel_of_own_user_only() -> None:
    async with gateway() as (gw, auth):
        made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice")
        assert made.secret
        token = await get_token(gw, made.secret)
        assert claims_of(token)["sub"] == "alice"
        c = await gw.connect(f"?token={token}")
        hello = await c.recv_type("authenticated")
        assert (hello["id"], hello["user"]) == (None, "alice")
        assert hello["expires_at"] == claims_of(token)["exp"]
        reply = await c.subscribe("user:alice:orders", "trades:BTC-USD")
        assert reply["type"] == "subscribed"
        assert {ch["channel"] for ch in reply["channels"]} == {
            "user:alice:orders",
            "trades:BTC-USD",
        }
        denied = await c.subscribe("user:bob:orders")
        assert denied["type"] == "error" and denied["code"] == "forbidden"
        assert "user:bob:orders" in denied["message"]
        await gw.publish("user:bob:orders", {"order": "bob's"})
        await gw.publish("user:alice:orders", {"order": "alice's"})
        pub = await c.recv_type("pub")
        assert (pub["channel"], pub["data"]) == ("user:alice:orders", {"order": "alice's"})
        await c.close()


async def test_auth_message_after_connect_and_entitlements() -> None:
    async with gateway() as (gw, auth):
        ents = Entitlements(
            kinds=frozenset({"trades"}), symbols=frozenset({"BTC-USD"}), private=False
        )
        made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="u1", entitlements=ents)
        assert made.secret
        c = await gw.connect()
        anon = await c.subscribe("user:u1:orders")
        assert anon["code"] == "unauthorized"
        reply = await c.request("auth", token=await get_token(gw, made.secret))
        assert reply["type"] == "authenticated" and reply["user"] == "u1"
        for channel, fragment in [
            ("user:u1:orders", "private"),
            ("book:BTC-USD", "kind 'book'"),
            ("trades:ETH-USD", "symbol 'ETH-USD'"),
        ]:
            err = await c.subscribe(channel)
            assert (err["code"], fragment in err["message"]) == ("forbidden", True), err
        ok = await c.subscribe("trades:BTC-USD")
        assert ok["type"] == "subscribed"
        bad = await c.request("auth", token="abc.def.ghi")
        assert bad["code"] == "malformed_token"
        await c.close()


async def test_bad_token_at_connect_closes_3500() -> None:
    async with gateway() as (gw, auth):
        made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice")
        assert made.secret
        token = await get_token(gw, made.secret)
        await auth.store.revoke(made.record.name, auth.now())
        c = await gw.connect(f"?token={token}")
        err = await c.recv_type("error")
        assert err["code"] == "key_revoked"
        msg = await c.ws.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, CLOSE_UNAUTHORIZED)


async def test_expired_token_is_told_then_closed_3005() -> None:
    async with gateway(token_ttl=1.0, token_expiry_grace=0.2, auth_leeway=0.0) as (gw, auth):
        made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice")
        assert made.secret
        c = await gw.connect(f"?token={await get_token(gw, made.secret)}")
        await c.recv_type("authenticated")
        notice = await c.recv_type("error")
        assert notice["code"] == "token_expired" and "refresh" in notice["message"]
        msg = await c.ws.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, CLOSE_TOKEN_EXPIRED)


async def test_refresh_within_the_grace_keeps_the_connection() -> None:
    async with gateway(token_ttl=1.0, token_expiry_grace=0.5, auth_leeway=0.0) as (gw, auth):
        made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice")
        other = await create_key(auth.store, kind=KeyKind.SECRET, user_id="bob")
        assert made.secret and other.secret
        c = await gw.connect(f"?token={await get_token(gw, made.secret)}")
        await c.recv_type("authenticated")
        assert (await c.subscribe("user:alice:orders"))["type"] == "subscribed"
        notice = await c.recv_type("error")
        assert notice["code"] == "token_expired"
        auth.tokens.ttl = 3600.0  # the next token lives long
        wrong_user = await c.request("refresh", token=await get_token(gw, other.secret))
        assert wrong_user["code"] == "forbidden"
        refreshed = await c.request("refresh", token=await get_token(gw, made.secret))
        assert refreshed["type"] == "authenticated" and refreshed["user"] == "alice"
        # the close was due 0.5 s after the notice; let that moment pass, then read on
        await asyncio.sleep(0.7)
        await gw.publish("user:alice:orders", {"n": 1})
        pub = await c.recv_type("pub")
        assert pub["channel"] == "user:alice:orders"
        await c.close()


async def test_jwt_refusals_have_the_documented_shape() -> None:
    async with gateway() as (gw, auth):
        made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice")
        assert made.secret
        cases: list[tuple[dict[str, str], str]] = [
            ({}, "Basic"),
            (basic("twsk_wrong"), "invalid secret"),
            (basic(made.secret, "not-empty"), "password is empty"),
            ({"Authorization": "Basic !!!"}, "base64"),
            ({"Authorization": "Bearer " + made.secret}, "Basic"),
        ]
        for headers, fragment in cases:
            async with gw.session.post(gw.http + "/jwt", headers=headers) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Basic")
                err = await error_of(resp)
                assert err["code"] == "unauthorized" and fragment in err["message"], err
        await auth.store.revoke(made.record.name, auth.now())
        async with gw.session.post(gw.http + "/jwt", headers=basic(made.secret)) as resp:
            assert resp.status == 401
            assert (await error_of(resp))["code"] == "key_revoked"


async def test_brute_force_on_jwt_and_login_is_rate_limited() -> None:
    async with gateway(auth_rate_burst=3, auth_rate_per_minute=1.0) as (gw, auth):
        made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice")
        assert made.secret
        # successes do not count
        for _ in range(5):
            await get_token(gw, made.secret)
        statuses = []
        for i in range(3):
            async with gw.session.post(gw.http + "/jwt", headers=basic(f"guess{i}")) as resp:
                statuses.append(resp.status)
        assert statuses == [401, 401, 401]
        async with gw.session.post(gw.http + "/jwt", headers=basic(made.secret)) as resp:
            assert resp.status == 429  # even the right secret waits: the address is throttled
            assert int(resp.headers["Retry-After"]) >= 1
            err = await error_of(resp)
            assert err["code"] == "rate_limited"
        login = {"id": "alice", "password": "guess"}
        async with gw.session.post(gw.http + "/login", json=login) as resp:
            assert resp.status == 429
        # concurrent guesses cannot slip through together
        auth.rate_limiter._buckets.clear()
        results = await asyncio.gather(
            *(gw.session.post(gw.http + "/jwt", headers=basic(f"g{i}")) for i in range(10))
        )
        codes_seen = sorted(r.status for r in results)
        for r in results:
            r.release()
        assert codes_seen == [401] * 3 + [429] * 7


async def test_login_then_digest_verifies() -> None:
    async with gateway() as (gw, auth):
        await create_key(
            auth.store, kind=KeyKind.PASSWORD, user_id="frank", password="correct horse"
        )
        sec = await create_key(auth.store, kind=KeyKind.SECRET, user_id="frank")
        assert sec.secret
        async with gw.session.post(
            gw.http + "/login", json={"id": "frank", "password": "correct horse"}
        ) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert set(body) == {"id", "session_key", "expires_at"} and body["id"] == "frank"
        assert isinstance(body["expires_at"], int)
        n = "1700000000000-a"
        p = await auth.verify_digest("frank", n, digest("frank", n, body["session_key"]))
        assert p.user_id == "frank"
        # form-encoded, and with an API secret
        async with gw.session.post(
            gw.http + "/login", data={"id": "frank", "password": "correct horse"}
        ) as resp:
            assert resp.status == 200
        async with gw.session.post(gw.http + "/login", json={"secret": sec.secret}) as resp:
            assert resp.status == 200
            assert (await resp.json())["id"] == "frank"


async def test_login_refusals() -> None:
    async with gateway() as (gw, auth):
        await create_key(
            auth.store, kind=KeyKind.PASSWORD, user_id="frank", password="correct horse"
        )
        cases: list[tuple[dict[str, Any], int, str, str]] = [
            ({"json": {"id": "frank", "password": "wrong"}}, 401, "unauthorized", "wrong id"),
            ({"json": {"id": "frank"}}, 401, "unauthorized", "password"),
            ({"json": {"secret": "twsk_nope"}}, 401, "unauthorized", "invalid secret"),
            ({"json": ["id", "frank"]}, 400, "bad_request", "JSON object"),
            (
                {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
                400,
                "bad_request",
                "JSON",
            ),
            ({"json": {"id": "x" * 5000}}, 400, "bad_request", "4096"),
        ]
        for kwargs, status, code, fragment in cases:
            async with gw.session.post(gw.http + "/login", **kwargs) as resp:
                assert resp.status == status
                err = await error_of(resp)
                assert err["code"] == code and fragment in err["message"], err


async def test_http_flows_keep_secrets_out_of_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway() as (gw, auth):
        made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice")
        assert made.secret
        token = await get_token(gw, made.secret)
        async with gw.session.post(gw.http + "/jwt", headers=basic(made.secret + "x")) as resp:
            assert resp.status == 401
        async with gw.session.post(gw.http + "/login", json={"secret": made.secret}) as resp:
            session_key = (await resp.json())["session_key"]
        c: Client = await gw.connect(f"?token={token}")
        await c.recv_type("authenticated")
        assert (await c.subscribe("user:alice:trades"))["type"] == "subscribed"
        await c.close()
    assert "auth: issued token" in caplog.text
    assert "GET /ws?token=<redacted>" in caplog.text  # the access log line, redacted
    for secret in (made.secret, token, session_key, SECRET):
        assert secret not in caplog.text


def test_credential_query_parameters_are_redacted() -> None:
    line = 'GET /?id=42&n=1700000000000&h=ab12cd HTTP/1.1" 101 "-" GET /ws?token=eyJx.y.z&v=2'
    assert redact_credentials(line) == (
        'GET /?id=42&n=1700000000000&h=<redacted> HTTP/1.1" 101 "-" GET /ws?token=<redacted>&v=2'
    )
    assert redact_credentials("GET /ws?height=3") == "GET /ws?height=3"


async def test_identity_provider_token_reads_its_users_private_channel() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = base64.b64encode(public_pem(rsa_key).encode()).decode()  # as Peatio's JWT_PUBLIC_KEY
    async with gateway(bearer_public_key=pem, bearer_issuer="barong", bearer_audience="peatio") as (
        gw,
        _,
    ):
        now = int(time.time())
        claims: dict[str, Any] = {"uid": "ID873B710D88", "role": "member", "sub": "session"}
        claims["iss"] = "barong"
        claims |= {"aud": ["peatio", "barong"], "iat": now, "exp": now + 3600, "jti": "j1"}
        token = jwt.encode(claims, rsa_key, algorithm="RS256")
        c = await gw.connect(f"?token={token}")
        assert (await c.recv_type("authenticated"))["user"] == "ID873B710D88"
        assert (await c.subscribe("user:ID873B710D88:trades"))["type"] == "subscribed"
        denied = await c.subscribe("user:ID000000001:trades")
        assert denied["code"] == "forbidden"
        await gw.publish("user:ID873B710D88:trades", {"id": 7})
        assert (await c.recv_type("pub"))["data"] == {"id": 7}
        # the same claims signed HS256 with the public key as secret: refused, close 3500
        forged = forge_hmac({"alg": "HS256", "typ": "JWT"}, claims, public_pem(rsa_key).encode())
        c2 = await gw.connect(f"?token={forged}")
        # (to the native endpoint an HS256 token is a gateway token with a wrong signature)
        assert (await c2.recv_type("error"))["code"] == "bad_signature"
        msg = await c2.ws.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, CLOSE_UNAUTHORIZED)
        await c.close()


async def read_own_private_channel(gw: Gateway, c: Client, user: str, other: str) -> None:
    """``c`` reads ``user``'s private orders and is refused ``other``'s."""
    assert (await c.subscribe(f"user:{user}:orders"))["type"] == "subscribed"
    denied = await c.subscribe(f"user:{other}:orders")
    assert (denied["type"], denied["code"]) == ("error", "forbidden")
    await gw.publish(f"user:{other}:orders", {"order": other})
    await gw.publish(f"user:{user}:orders", {"order": user})
    pub = await c.recv_type("pub")
    assert (pub["channel"], pub["data"]) == (f"user:{user}:orders", {"order": user})


async def test_client_signed_jwt_reads_its_users_private_channel() -> None:
    from .authkit import coinbase_jwt, load_private

    async with gateway() as (gw, auth):
        made = await create_key(auth.store, kind=KeyKind.EC, user_id="carol")
        assert made.secret
        token = coinbase_jwt(made.record.name, load_private(made.secret), now=time.time())
        c = await gw.connect(f"?token={token}")
        hello = await c.recv_type("authenticated")
        assert hello["user"] == "carol"
        await read_own_private_channel(gw, c, "carol", "dave")
        # the same JWT again: its nonce was used
        c2 = await gw.connect(f"?token={token}")
        refused = await c2.recv_type("error")
        assert refused["code"] == "nonce_reused"
        msg = await c2.ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == CLOSE_UNAUTHORIZED


async def test_session_digest_reads_its_users_private_channel() -> None:
    async with gateway() as (gw, auth):
        await create_key(auth.store, kind=KeyKind.PASSWORD, user_id="erin", password="pw-erin-123")
        async with gw.session.post(
            gw.http + "/login", json={"id": "erin", "password": "pw-erin-123"}
        ) as resp:
            assert resp.status == 200
            session_key = (await resp.json())["session_key"]
        nonce = str(int(time.time() * 1000))
        h = digest("erin", nonce, session_key)
        c = await gw.connect(f"?id=erin&n={nonce}&h={h}")
        assert (await c.recv_type("authenticated"))["user"] == "erin"
        await read_own_private_channel(gw, c, "erin", "frank")
        # a wrong digest is refused with its code and the connection closed
        bad = await gw.connect(f"?id=erin&n={int(nonce) + 1}&h={'0' * 64}")
        assert (await bad.recv_type("error"))["code"] == "bad_signature"
        msg = await bad.ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == CLOSE_UNAUTHORIZED


async def test_switching_user_reports_the_channels_it_loses() -> None:
    async with gateway() as (gw, auth):
        alice = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice")
        bob = await create_key(auth.store, kind=KeyKind.SECRET, user_id="bob")
        assert alice.secret and bob.secret
        c = await gw.connect(f"?token={await get_token(gw, alice.secret)}")
        assert (await c.recv_type("authenticated"))["unsubscribed"] == []
        await c.subscribe("user:alice:orders", "trades:BTC-USD")
        switched = await c.request("auth", token=await get_token(gw, bob.secret))
        assert (switched["type"], switched["user"]) == ("authenticated", "bob")
        assert switched["unsubscribed"] == ["user:alice:orders"]
        await gw.publish("user:alice:orders", {"order": "alice's"})
        await gw.publish("trades:BTC-USD", {"id": 1})
        pub = await c.recv_type("pub")
        assert pub["channel"] == "trades:BTC-USD"  # alice's order never reached bob
        assert gw.node.hub.subscription_count() == 1
        await c.close()

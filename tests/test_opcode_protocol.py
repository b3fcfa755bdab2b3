"""The InstaMrkt opcode dialect on a real gateway: digest connect, ping, get_opcodes, logon,
automatic logon on return, market data in opcodes, and every bad input with its code."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tickwire.auth import Authenticator, KeyKind, create_key
from tickwire.client.bench.config import BenchConfig, Target
from tickwire.client.bench.dialects import OpcodeDialect
from tickwire.client.bench.runner import run_bench
from tickwire.dialects.opcode import ERROR_RESPONSE_CODES, OPCODES, RESPONSE_CODES
from tickwire.hub import CLOSE_UNAUTHORIZED
from tickwire.server.auth_routes import AUTH_KEY

from .authkit import SECRET
from .harness import Gateway, run_gateway
from .opcodekit import OpClient, digest_query, hexdigest, login, nonce, request

DOCS = Path(__file__).resolve().parent.parent / "docs" / "dialects.md"
PATH = "/ws/opcode"


@asynccontextmanager
async def gateway(**overrides: Any) -> AsyncIterator[tuple[Gateway, Authenticator]]:
    async with run_gateway(auth_secret=SECRET, **overrides) as gw:
        auth = gw.runner.app[AUTH_KEY]
        for user in ("alice", "bob"):
            await create_key(
                auth.store, kind=KeyKind.PASSWORD, user_id=user, password=f"pw-{user}-123"
            )
        yield gw, auth


async def session_key(gw: Gateway, user: str = "alice") -> str:
    return await login(gw.session, gw.http, user, f"pw-{user}-123")


async def connect(gw: Gateway, key: str, user: str = "alice") -> OpClient:
    url = f"ws://127.0.0.1:{gw.port}{PATH}{digest_query(user, key)}"
    return await OpClient.connect(gw.session, url)


async def logged_on(gw: Gateway, user: str = "alice") -> OpClient:
    c = await connect(gw, await session_key(gw, user), user)
    reply = await c.call(100, 100)
    assert isinstance(reply["session_key"], str)
    return c


async def assert_error(c: OpClient, code: str, fragment: str) -> None:
    """The next message is error ``code`` naming ``fragment``; the connection goes on."""
    msg = await c.recv()
    assert (msg["res"], msg["error"]) == (ERROR_RESPONSE_CODES[code], code), msg
    assert fragment in msg["message"], msg
    assert (await c.call(1, 1))["res"] == 1


# -- the documented flow ----------------------------------------------------------------------


async def test_ping_get_opcodes_logon_and_market_data() -> None:
    async with gateway() as (gw, _):
        c = await connect(gw, await session_key(gw))
        before = int(time.time() * 1000)
        pong = await c.call(1, 1)
        assert set(pong) == {"response_header", "res"}
        assert pong["response_header"]["t"] >= before
        listing = await c.call(2, 2)
        assert listing["opcodes"] == OPCODES
        assert listing["response_codes"] == RESPONSE_CODES
        # the seed's table names and its example's names both resolve
        assert listing["opcodes"]["get_opcodes"] == listing["opcodes"]["opcodes"] == 2
        assert listing["response_codes"]["opcodes"] == 2
        assert listing["response_codes"]["response_codes"] == 2
        logon = await c.call(100, 100)
        assert re.fullmatch(r"[0-9a-f]{16}", logon["session_key"])
        again = await c.call(100, 112)
        assert again["session_key"] == logon["session_key"]
        await gw.publish("book:BTC-USD", {"u": 1}, snapshot={"bids": [], "asks": []})
        sub = await c.call(200, 200, id=7, channels=["book:BTC-USD", "trades:BTC-USD"])
        assert sub["id"] == 7
        assert [ch["channel"] for ch in sub["channels"]] == ["book:BTC-USD", "trades:BTC-USD"]
        snap = await c.recv()
        assert (snap["res"], snap["channel"], snap["seq"]) == (301, "book:BTC-USD", 1)
        assert snap["data"] == {"bids": [], "asks": []}
        seq = await gw.publish("trades:BTC-USD", {"id": 1})
        pub = await c.recv()
        assert (pub["res"], pub["channel"], pub["seq"], pub["data"]) == (
            300,
            "trades:BTC-USD",
            seq,
            {"id": 1},
        )
        unsub = await c.call(201, 201, channels=["trades:BTC-USD", "trades:ETH-USD"])
        assert unsub["channels"] == ["trades:BTC-USD"]
        await c.close()


async def test_a_user_who_returns_within_the_window_is_logged_on_automatically() -> None:
    async with gateway() as (gw, _):
        key = await session_key(gw)
        first = await connect(gw, key)
        session = (await first.call(100, 100))["session_key"]
        # a second connection while the first is open: logged on, into the same session
        second = await connect(gw, key)
        auto = await second.recv()
        assert (auto["res"], auto["session_key"], auto["automatic"]) == (100, session, True)
        await first.close()
        await second.close()
        # both closed: the user returns (digest with a new nonce) and is logged on again
        third = await connect(gw, key)
        auto = await third.recv()
        assert (auto["res"], auto["session_key"]) == (100, session)
        assert (await third.call(100, 112))["session_key"] == session
        assert (await third.call(200, 200, channels=["trades:BTC-USD"]))["res"] == 200
        # another user is not logged on by alice's session
        bob = await connect(gw, await session_key(gw, "bob"), "bob")
        await bob.send(request(200, channels=["trades:BTC-USD"]))
        await assert_error(bob, "not_logged_on", "log on first")
        assert (await bob.call(100, 100))["session_key"] != session
        await third.close()
        await bob.close()


async def test_a_connection_that_never_logged_on_does_not_log_the_user_on() -> None:
    async with gateway() as (gw, _):
        key = await session_key(gw)
        c = await connect(gw, key)
        assert (await c.call(1, 1))["res"] == 1
        await c.close()
        again = await connect(gw, key)
        await again.send(request(200, channels=["trades:BTC-USD"]))
        await assert_error(again, "not_logged_on", "op 200")
        await again.close()


async def test_resubscribe_since_gets_exactly_what_was_missed() -> None:
    async with gateway() as (gw, _):
        c = await logged_on(gw)
        await c.call(200, 200, channels=["trades:BTC-USD"])
        for i in range(3):
            await gw.publish("trades:BTC-USD", {"id": i})
        seen = [await c.recv() for _ in range(3)]
        last = seen[-1]
        await c.close()
        missed = [await gw.publish("trades:BTC-USD", {"id": i}) for i in range(3, 6)]
        back = await connect(gw, await session_key(gw))
        assert (await back.recv())["res"] == 100
        since = {"epoch": last["epoch"], "seq": last["seq"]}
        sub = await back.call(200, 200, channels=[{"channel": "trades:BTC-USD", "since": since}])
        assert sub["channels"][0]["recovered"] is True
        replay = [await back.recv() for _ in missed]
        assert [(m["res"], m["seq"], m["data"]["id"]) for m in replay] == [
            (300, seq, i) for seq, i in zip(missed, range(3, 6), strict=True)
        ]
        live = await gw.publish("trades:BTC-USD", {"id": 6})
        assert (await back.recv())["seq"] == live
        await back.close()


async def test_the_dedicated_paths_are_configurable() -> None:
    async with gateway(opcode_paths=["/instamrkt", "/ws/op"]) as (gw, _):
        key = await session_key(gw)
        for path in ("/instamrkt", "/ws/op"):
            url = f"ws://127.0.0.1:{gw.port}{path}{digest_query('alice', key)}"
            c = await OpClient.connect(gw.session, url)
            assert (await c.call(1, 1))["res"] == 1
            await c.close()


# -- refused at connect: an error with its code, then close 3500 ------------------------------


async def refused(gw: Gateway, query: str) -> dict[str, Any]:
    c = await OpClient.connect(gw.session, f"ws://127.0.0.1:{gw.port}{PATH}{query}")
    msg = await c.recv()
    assert await c.closed() == (CLOSE_UNAUTHORIZED, "unauthorized")
    return msg


@pytest.mark.parametrize(
    ("query", "code", "fragment"),
    [
        ("", "unauthorized", "id: missing"),
        ("?id=alice", "unauthorized", "n: missing"),
        ("?id=alice&n=123", "unauthorized", "h: missing"),
        (f"?id=alice&n=123&h={'z' * 64}", "unauthorized", "h: missing or not 64 hex"),
        (f"?id=alice&n=1&h={'0' * 64}", "bad_signature", "digest does not match"),
        (f"?id=nobody&n=1&h={'0' * 64}", "unauthorized", "no session for this user"),
    ],
)
async def test_bad_digests_are_refused_with_their_code(
    query: str, code: str, fragment: str
) -> None:
    async with gateway() as (gw, _):
        await session_key(gw)
        msg = await refused(gw, query)
        assert (msg["res"], msg["error"]) == (ERROR_RESPONSE_CODES[code], code), msg
        assert fragment in msg["message"]


async def test_a_replayed_or_stale_digest_is_refused() -> None:
    async with gateway() as (gw, _):
        key = await session_key(gw)
        query = digest_query("alice", key)
        ok = await OpClient.connect(gw.session, f"ws://127.0.0.1:{gw.port}{PATH}{query}")
        assert (await ok.call(1, 1))["res"] == 1
        replayed = await refused(gw, query)
        assert (replayed["res"], replayed["error"]) == (415, "nonce_reused")
        old = str(int((time.time() - 3600) * 1000))
        stale = await refused(gw, f"?id=alice&n={old}&h={hexdigest('alice', old, key)}")
        assert (stale["res"], stale["error"]) == (416, "nonce_stale")
        # a digest made with the previous session key after a new login
        previous = key
        await session_key(gw)
        n = nonce()
        gone = await refused(gw, f"?id=alice&n={n}&h={hexdigest('alice', n, previous)}")
        assert gone["error"] == "bad_signature"
        await ok.close()


# -- bad requests: a code and a message naming the problem; the connection goes on ------------


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        ("{not json", "bad_json", "not valid JSON"),
        ('{"header": {}, "op": 1e400}', "bad_json", "out of range"),
        ('{"header": {}, "op": 1, "x": ' + "[" * 40 + "]" * 40 + "}", "bad_json", "deeper than"),
        ("[1, 2]", "bad_request", "JSON object"),
        ('{"op": 1}', "bad_request", "header: missing"),
        ('{"header": [], "op": 1}', "bad_request", "header: must be an object"),
        ('{"header": {}}', "bad_request", "op: missing"),
        ('{"header": {}, "op": "1"}', "bad_request", "op: must be an integer, not str"),
        ('{"header": {}, "op": 1.0}', "bad_request", "op: must be an integer, not float"),
        ('{"header": {}, "op": true}', "bad_request", "op: must be an integer, not bool"),
        ('{"header": {}, "op": null}', "bad_request", "op: must be an integer, not NoneType"),
        ('{"header": {}, "op": 99999999999999999999999999}', "bad_request", "op: out of range"),
        ('{"header": {}, "op": -1}', "bad_request", "op: out of range"),
        ('{"header": {"t": 99999999999999999999999}, "op": 1}', "bad_request", "header.t"),
        ('{"header": {"t": "now"}, "op": 1}', "bad_request", "header.t"),
        ('{"header": {"api_version": "1"}, "op": 1}', "bad_request", "header.api_version"),
        ('{"header": {"session_key": 4}, "op": 1}', "bad_request", "header.session_key"),
        ('{"header": {}, "op": 1, "id": [1]}', "bad_request", "id: must be"),
        ('{"header": {}, "op": 7}', "unknown_opcode", "op 7: unknown"),
        ('{"header": {}, "op": 2147483647}', "unknown_opcode", "op 2147483647"),
        ('{"header": {}, "op": 200, "channels": ["trades:BTC-USD"]}', "not_logged_on", "op 200"),
        ('{"header": {}, "op": 201, "channels": ["trades:BTC-USD"]}', "not_logged_on", "op 201"),
    ],
)
async def test_malformed_requests_before_logon(raw: str, code: str, fragment: str) -> None:
    async with gateway() as (gw, _):
        c = await connect(gw, await session_key(gw))
        await c.ws.send_str(raw)
        await assert_error(c, code, fragment)
        await c.close()


@pytest.mark.parametrize(
    ("params", "code", "fragment"),
    [
        ({}, "bad_request", "channels: must be a non-empty list"),
        ({"channels": []}, "bad_request", "non-empty list"),
        ({"channels": "trades:BTC-USD"}, "bad_request", "non-empty list"),
        ({"channels": ["nope:BTC-USD"]}, "unknown_channel", "unknown kind"),
        ({"channels": ["trades:DOGE-USD"]}, "unknown_channel", "DOGE-USD"),
        ({"channels": ["trades:BTC USD"]}, "bad_channel", "malformed symbol"),
        ({"channels": [5]}, "bad_channel", "must be a string"),
        ({"channels": [{"chan": "x"}]}, "bad_request", "unknown field 'chan'"),
        (
            {"channels": [{"channel": "trades:BTC-USD", "since": {"seq": 1}}]},
            "bad_since",
            "since must be",
        ),
        (
            {"channels": [{"channel": "trades:BTC-USD", "since": {"epoch": "e", "seq": 10**30}}]},
            "bad_since",
            "trades:BTC-USD",
        ),
        ({"channels": ["user:bob:orders"]}, "forbidden", "user:bob:orders"),
        ({"channels": ["trades:BTC-USD", "user:bob:trades"]}, "forbidden", "user:bob:trades"),
    ],
)
async def test_bad_subscriptions(params: dict[str, Any], code: str, fragment: str) -> None:
    async with gateway() as (gw, _):
        c = await logged_on(gw)
        await c.send(request(200, **params))
        await assert_error(c, code, fragment)
        # all or nothing: nothing was subscribed
        assert gw.node.hub.subscription_count() == 0
        await c.close()


async def test_own_private_channel_only() -> None:
    async with gateway() as (gw, _):
        c = await logged_on(gw)
        await c.call(200, 200, channels=["user:alice:orders"])
        await gw.publish("user:bob:orders", {"order": "bob's"})
        await gw.publish("user:alice:orders", {"order": "alice's"})
        pub = await c.recv()
        assert (pub["res"], pub["channel"], pub["data"]) == (
            300,
            "user:alice:orders",
            {"order": "alice's"},
        )
        await c.close()


async def test_rate_limited() -> None:
    async with gateway(max_requests_per_second=1) as (gw, _):
        c = await connect(gw, await session_key(gw))
        for _ in range(5):
            await c.send(request(1))
        replies = [await c.recv() for _ in range(5)]
        assert [r["res"] for r in replies[:2]] == [1, 1]
        assert {(r["res"], r["error"]) for r in replies[2:]} == {(405, "rate_limited")}
        await c.close()


async def test_frames_too_large_and_binary() -> None:
    async with gateway(max_frame_bytes=1024) as (gw, _):
        c = await connect(gw, await session_key(gw))
        await c.send(request(1, pad="x" * 2000))
        await assert_error(c, "frame_too_large", "1024 bytes")
        await c.ws.send_bytes(json.dumps(request(1)).encode())
        await assert_error(c, "binary_not_supported", "binary")
        await c.close()


# -- the reference in docs/dialects.md is the table in the code -------------------------------


def _docs_table(marker: str) -> dict[str, int]:
    text = DOCS.read_text()
    body = text.split(f"<!-- {marker}:begin -->")[1].split(f"<!-- {marker}:end -->")[0]
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \|", body, re.M)
    return {name: int(code) for name, code in rows}


def test_docs_list_every_opcode_and_response_code() -> None:
    assert _docs_table("opcodes") == OPCODES
    assert _docs_table("response-codes") == RESPONSE_CODES


def test_every_error_code_has_a_response_code() -> None:
    from tickwire.auth import codes
    from tickwire.dialects.errors import ERROR_CODES

    # unknown_op is the native dialect's; this one answers unknown_opcode
    assert (set(ERROR_CODES) - {"unknown_op"}) | codes.ALL_CODES <= set(ERROR_RESPONSE_CODES)
    # one code per name, but for the seed's alias of "opcodes"
    names_of: dict[int, list[str]] = {}
    for name, code in RESPONSE_CODES.items():
        names_of.setdefault(code, []).append(name)
    assert {c: n for c, n in names_of.items() if len(n) > 1} == {2: ["opcodes", "response_codes"]}


async def test_no_opcode_port_unless_configured() -> None:
    async with gateway() as (gw, _), aiohttp.ClientSession() as s:
        async with s.get(f"{gw.http}/") as resp:  # the main port's / is the demo page
            assert resp.content_type == "text/html"


# -- the load generator speaks the dialect ------------------------------------------------------


def test_bench_dialect_digest_logon_subscribe() -> None:
    d = OpcodeDialect(["trades:BENCH"], ("alice", "KEY"))
    path = d.path("/ws/opcode")
    n = re.search(r"&n=(\w+)&", path)
    assert n is not None and path.startswith("/ws/opcode?id=alice&n=")
    assert path.endswith("&h=" + hexdigest("alice", n.group(1), "KEY"))
    assert d.path("/ws/opcode") != path  # a fresh nonce per connection
    assert [json.loads(p)["op"] for p in d.opening()] == [100, 200]
    assert not d.on_message(b'{"response_header":{"t":1},"res":112}', False).ready
    assert d.on_message(b'{"response_header":{"t":1},"res":200,"id":1}', False).ready
    failed = d.on_message(b'{"response_header":{"t":1},"res":403,"error":"not_logged_on"}', False)
    assert failed.error is not None and "not_logged_on" in failed.error


async def test_bench_generator_logs_in_and_counts_opcode_deliveries() -> None:
    spec = "channel=trades:BENCH,rate=200,batch=2,size=150"
    async with gateway(synthetic=spec) as (gw, _):
        config = BenchConfig(
            target=Target("127.0.0.1", gw.port, "/ws/opcode"),
            dialect="opcode",
            connections=6,
            workers=1,
            warmup=0.2,
            duration=0.5,
            login="alice:pw-alice-123",
        )
        result: dict[str, Any] = await asyncio.to_thread(run_bench, config, display=False)
    assert (result["ready"], result["failed"], result["lost"]) == (6, 0, 0), result["errors"]
    assert result["total_messages"] > 0
    assert "pw-alice" not in repr(config)

"""Property tests for every parser a client can reach (issue 10's fuzz harness).

Each asserts: no exception but the parser's documented one escapes, every refusal carries
a documented code, and a valid message is still accepted after any invalid ones. Bounded
in ``make test``; ``TICKWIRE_DEEP=1`` runs many more examples (profile in conftest.py).
New dialects add their parser here as they land (Coinbase: below the native one).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickwire.auth import AuthError, codes
from tickwire.auth.digest import check_digest_params
from tickwire.dialects import coinbase, native
from tickwire.dialects.base import Command, Handshake, Ping, Subscribe
from tickwire.dialects.errors import ERROR_CODES, ProtocolError
from tickwire.engine import MemoryEngine
from tickwire.ingest.gateway import Gateway, IngestError
from tickwire.ingest.schemas import decode_batch, to_ops
from tickwire.model import boundedjson
from tickwire.model.markets import default_registry
from tickwire.server.auth_routes import basic_user, parse_login_body
from tickwire.server.data_routes import STATUS
from tickwire.server.logredact import CREDENTIAL_PARAMS, redact_credentials

from .harness import run_gateway

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: Error codes of the publish API, as docs/market-data.md lists them.
PUBLISH_CODES = set(
    re.findall(r"^\| `([a-z_]+)` \| \d{3} \|", (DOCS / "market-data.md").read_text(), re.M)
)

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)

# -- the native parser ---------------------------------------------------------------------

OPS = st.sampled_from([*native.OPS, "nope", ""])
CHANNEL = st.one_of(
    st.sampled_from(["trades:BTC-USD", "book:ETH-USD", "user:alice:orders", "candles:BTC-USD:1m"]),
    st.text(max_size=30),
    json_value,
)
native_message = st.fixed_dictionaries(
    {"op": st.one_of(OPS, json_value)},
    optional={
        "id": st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=70), json_value),
        "channels": st.one_of(
            st.lists(
                st.one_of(
                    CHANNEL,
                    st.fixed_dictionaries({"channel": CHANNEL}, optional={"since": json_value}),
                ),
                max_size=4,
            ),
            json_value,
        ),
        "token": st.one_of(st.text(max_size=40), json_value),
    },
)
native_frame = st.one_of(
    native_message.map(json.dumps),
    json_value.map(json.dumps),
    st.text(max_size=200),
    st.integers(1, 200).map(lambda d: "[" * d + "]" * d),
)


def parse_or_refuse(frame: str) -> Command | None:
    try:
        return native.parse(frame)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES, exc.code
        assert exc.message
        return None


@given(st.lists(native_frame, max_size=8))
def test_native_parser_refuses_with_documented_codes_and_still_parses_a_valid_frame(
    frames: list[str],
) -> None:
    for frame in frames:
        parse_or_refuse(frame)
    assert isinstance(native.parse('{"id": 1, "op": "ping"}'), Ping)


@given(st.binary(max_size=300))
def test_native_parser_takes_any_bytes(frame: bytes) -> None:
    try:
        native.parse(frame)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES


@settings(max_examples=10, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(native_frame, min_size=1, max_size=12))
def test_native_connection_survives_any_invalid_frames(frames: list[str]) -> None:
    """The same over a real connection: every frame is answered (or served), then a ping."""

    async def run() -> None:
        async with run_gateway(max_requests_per_second=10_000) as gw:
            c = await gw.connect()
            for frame in frames:
                await c.ws.send_str(frame)
            await c.send({"id": "last", "op": "ping"})
            async with asyncio.timeout(10):
                while True:
                    msg = await c.ws.receive()
                    assert msg.type == aiohttp.WSMsgType.TEXT, msg
                    reply = json.loads(msg.data)
                    if reply.get("type") == "error":
                        assert reply["code"] in ERROR_CODES, reply
                        assert reply["code"] != "internal", reply
                    if reply.get("id") == "last" and reply.get("type") == "pong":
                        break
            await c.close()

    asyncio.run(run())


# -- the Coinbase parser -------------------------------------------------------------------

CB_CHANNEL = st.one_of(st.sampled_from([*coinbase.CHANNELS, "level3", ""]), json_value)
coinbase_message = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "x"]), json_value)},
    optional={
        "channel": CB_CHANNEL,
        "product_ids": st.one_of(
            st.lists(st.sampled_from(["BTC-USD", "ETH-USD", "DOGE-USD", ""]), max_size=4),
            json_value,
        ),
        "jwt": st.one_of(st.text(max_size=40), json_value),
    },
)
coinbase_frame = st.one_of(
    coinbase_message.map(json.dumps),
    json_value.map(json.dumps),
    st.text(max_size=200),
    st.integers(1, 200).map(lambda d: "[" * d + "]" * d),
)
COINBASE = coinbase.Coinbase.configure(default_registry())


@given(st.lists(coinbase_frame, max_size=8))
def test_coinbase_parser_refuses_with_documented_codes_and_still_parses_a_valid_frame(
    frames: list[str],
) -> None:
    dialect = COINBASE(Handshake("/ws/coinbase"))
    for frame in frames:
        try:
            dialect.parse(frame)
        except ProtocolError as exc:
            assert exc.code in ERROR_CODES, exc.code
            assert exc.message
    [cmd] = dialect.parse('{"type": "subscribe", "channel": "level2", "product_ids": ["BTC-USD"]}')
    assert isinstance(cmd, Subscribe) and [c.name for c, _ in cmd.items] == ["book:BTC-USD"]


# -- the publish API's schemas -------------------------------------------------------------

event = st.fixed_dictionaries(
    {"type": st.sampled_from(["book", "trade", "order", "user_trade", "sentiment", "x"])},
    optional={
        "market": st.one_of(st.sampled_from(["BTC-USD", "ETH-USD", "DOGE"]), json_value),
        "price": st.one_of(st.sampled_from(["100", "0.01", "-1", "1e3", "1.001"]), json_value),
        "size": st.one_of(st.sampled_from(["1", "0", "0.5"]), json_value),
        "side": st.one_of(st.sampled_from(["buy", "sell"]), json_value),
        "id": st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=70)),
        "ts": st.one_of(st.integers(-(2**70), 2**70), json_value),
        "bids": st.lists(st.lists(st.sampled_from(["1", "2", "x", "0"]), max_size=3), max_size=3),
        "user_id": st.one_of(st.sampled_from(["alice", "a b"]), json_value),
        "ticker": st.sampled_from(["AAPL", "ZZZ"]),
        "sentiment": st.floats(),
        "user_score": st.floats(),
    },
)
batch_body = st.one_of(
    st.fixed_dictionaries({"events": st.lists(event, max_size=4)}).map(
        lambda b: json.dumps(b).encode()
    ),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)

VALID_BATCH = json.dumps(
    {"events": [{"type": "trade", "market": "BTC-USD", "price": "1", "size": "1", "side": "buy"}]}
).encode()


@given(st.lists(batch_body, max_size=6))
def test_publish_schemas_refuse_with_documented_codes(bodies: list[bytes]) -> None:
    gateway = Gateway(MemoryEngine())  # to_ops checks against the registry only
    for body in bodies:
        try:
            batch = decode_batch(body)
            to_ops(gateway, batch.events)
        except IngestError as exc:
            assert exc.code in PUBLISH_CODES, exc.code
            assert exc.code in STATUS or exc.code in PUBLISH_CODES
    ops = to_ops(gateway, decode_batch(VALID_BATCH).events)
    assert len(ops) == 1


# -- POST /jwt and POST /login ---------------------------------------------------------------


@given(
    st.one_of(
        st.text(max_size=80), st.binary(max_size=60).map(lambda b: "Basic " + b.decode("latin-1"))
    )
)
def test_basic_header_parser(header: str) -> None:
    try:
        basic_user(header)
    except AuthError as exc:
        assert exc.code == codes.UNAUTHORIZED


@given(
    st.one_of(st.binary(max_size=300), json_value.map(lambda v: json.dumps(v).encode())),
    st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""]),
)
def test_login_body_parser(raw: bytes, content_type: str) -> None:
    try:
        fields = parse_login_body(raw, content_type)
    except AuthError as exc:
        assert exc.code == codes.BAD_REQUEST and exc.message.startswith("body")
    else:
        assert isinstance(fields, dict)
    assert parse_login_body(b'{"secret": "s"}', "application/json") == {"secret": "s"}


# -- query strings -------------------------------------------------------------------------

SAFE = st.text(st.sampled_from("abcXYZ019-_.~"), min_size=1, max_size=12)


def encodings(name: str) -> st.SearchStrategy[str]:
    """``name`` with any of its characters percent-encoded (once or twice), any case."""

    def one(c: str) -> st.SearchStrategy[str]:
        hexed = f"%{ord(c):02x}"
        return st.sampled_from([c, c.upper(), hexed, hexed.upper(), "%25" + hexed[1:]])

    return st.tuples(*(one(c) for c in name)).map("".join)


@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.sampled_from(sorted(CREDENTIAL_PARAMS)).flatmap(encodings), SAFE, st.just(True)
            ),
            st.tuples(SAFE, SAFE, st.just(False)),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_query_redaction_after_any_encoding(params: list[tuple[str, str, bool]]) -> None:
    secrets = [f"S3CRET{v}" for _, v, is_secret in params if is_secret]
    query = "&".join(f"{k}={'S3CRET' + v if s else v}" for k, v, s in params)
    line = f'127.0.0.1 "GET /ws?{query} HTTP/1.1" 101'
    out = redact_credentials(line)
    for secret in secrets:
        assert secret not in out
    for k, v, s in params:
        if not s and not any(k.lower() == c for c in CREDENTIAL_PARAMS):
            assert f"{k}={v}" in out


@given(st.text(max_size=80), st.text(max_size=80), st.text(max_size=80))
def test_digest_parameters(uid: str, n: str, h: str) -> None:
    try:
        check_digest_params(uid, n, h)
    except AuthError as exc:
        assert exc.code == codes.UNAUTHORIZED and exc.message[:2] in ("id", "n:", "h:")


# -- the bounded decoder itself ------------------------------------------------------------


def reference_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    return 0


@given(json_value)
def test_depth_matches_the_structure(value: Any) -> None:
    text = json.dumps(value)
    assert boundedjson.depth(text) == reference_depth(value)
    assert boundedjson.depth(text.encode()) == reference_depth(value)
    decoded = boundedjson.decode(text, max_bytes=1 << 20, max_depth=64)
    assert decoded == msgspec.json.decode(text)

"""The opcode dialect with bytes (no sockets): requests in, commands out; events and
publications in, bytes out; logon sessions on a clock the test moves."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickwire.auth import Principal
from tickwire.dialects.base import (
    Authenticated,
    Digest,
    Expiring,
    Handshake,
    Ping,
    Pong,
    Reply,
    Subscribe,
    Unsubscribe,
)
from tickwire.dialects.errors import ProtocolError
from tickwire.dialects.opcode import (
    ERROR_RESPONSE_CODES,
    OPCODE,
    LogonSessions,
    Opcode,
    opcode_dialect,
)
from tickwire.model.publication import Position, Publication, Snapshot

from .authkit import Clock


def dialect(logons: LogonSessions | None = None, query: str = "") -> Opcode:
    if logons is None:
        logons = LogonSessions(900.0, 100, Clock())
    cls = opcode_dialect(logons, clock_ms=lambda: 1422007246302)
    params = dict(p.split("=", 1) for p in query.split("&") if p)
    return cls(Handshake("/ws/opcode", {k: [v] for k, v in params.items()}))


def connected(d: Opcode, user: str = "alice") -> bytes | None:
    return d.render(Authenticated(None, Principal(user), ()))


def req(op: int, **params: object) -> str:
    return json.dumps({"header": {}, "op": op, **params})


def body(payload: bytes) -> dict[str, object]:
    out: dict[str, object] = json.loads(payload)
    return out


def test_the_handshake_always_presents_a_digest() -> None:
    assert dialect(query="id=alice&n=1&h=ab").credential() == Digest("alice", "1", "ab")
    # none given: an empty one, which the verifier refuses naming the missing id
    assert dialect().credential() == Digest("", "", "")
    assert "ab" not in repr(Digest("alice", "1", "ab"))


def test_requests_become_commands() -> None:
    d = dialect()
    assert connected(d) is None  # no logon session to return to: nothing to say
    assert d.parse(req(1)) == [Ping(None)]
    [reply] = d.parse(req(2, id="x"))
    assert isinstance(reply, Reply)
    listing = body(reply.payload)
    assert (listing["res"], listing["id"]) == (2, "x")
    assert listing["response_header"] == {"t": 1422007246302}
    with pytest.raises(ProtocolError) as info:
        d.parse(req(200, channels=["trades:BTC-USD"]))
    assert info.value.code == "not_logged_on"
    [logon] = d.parse(req(100))
    assert isinstance(logon, Reply) and body(logon.payload)["res"] == 100
    [sub] = d.parse(
        req(
            200,
            channels=[
                "book:BTC-USD",
                {"channel": "trades:BTC-USD", "since": {"epoch": "e", "seq": 4}},
            ],
        )
    )
    assert isinstance(sub, Subscribe)
    assert [(c.name, s) for c, s in sub.items] == [
        ("book:BTC-USD", None),
        ("trades:BTC-USD", Position("e", 4)),
    ]
    [unsub] = d.parse(req(201, id=3, channels=["book:BTC-USD"]))
    assert isinstance(unsub, Unsubscribe) and unsub.id == 3
    assert [c.name for c in unsub.channels or []] == ["book:BTC-USD"]


def test_pong_echoes_the_id_and_errors_carry_code_and_name() -> None:
    d = dialect()
    assert body(d.render(Pong(5, 17)) or b"") == {"response_header": {"t": 17}, "res": 1, "id": 5}
    err = body(d.render_error(ProtocolError("forbidden", "channel 'user:bob:orders'", 9)))
    assert err == {
        "response_header": {"t": 1422007246302},
        "res": 404,
        "id": 9,
        "error": "forbidden",
        "message": "channel 'user:bob:orders'",
    }
    unknown = body(d.render_error(ProtocolError("brand_new_code", "x", [1])))
    assert (unknown["res"], unknown["error"], "id" in unknown) == (499, "brand_new_code", False)


def test_an_expired_session_cannot_log_on() -> None:
    d = dialect()
    connected(d)
    expiring = body(d.render(Expiring(10.0)) or b"")
    assert (expiring["res"], expiring["error"]) == (413, "token_expired")
    assert "closes in 10 s" in str(expiring["message"])
    [reply] = d.parse(req(100))
    assert isinstance(reply, Reply)
    fail = body(reply.payload)
    assert fail["res"] == 110 and "POST /login" in str(fail["message"])


def test_pushed_data_is_encoded_once_in_opcode_shape() -> None:
    pub = Publication("trades:BTC-USD", 7, "ep", 1700, msgspec.Raw(b'{"p":"1.5"}'))
    assert OPCODE.pub(pub) == (
        b'{"response_header":{"t":1700},"res":300,"channel":"trades:BTC-USD",'
        b'"seq":7,"epoch":"ep","data":{"p":"1.5"}}'
    )
    snap = Snapshot("book:BTC-USD", 3, "ep", 1701, msgspec.Raw(b'{"bids":[]}'))
    assert body(OPCODE.snapshot(snap))["res"] == 301
    reset = body(OPCODE.reset("book:BTC-USD", Position("ep2", 0)))
    assert {k: reset[k] for k in ("res", "channel", "epoch", "seq")} == {
        "res": 302,
        "channel": "book:BTC-USD",
        "epoch": "ep2",
        "seq": 0,
    }


def test_logon_sessions_return_within_the_window_only() -> None:
    clock = Clock()
    logons = LogonSessions(900.0, 100, clock)
    first = dialect(logons)
    connected(first)
    [reply] = first.parse(req(100))
    assert isinstance(reply, Reply)
    session = body(reply.payload)["session_key"]
    # a second connection while the first is open returns to the same session
    second = dialect(logons)
    auto = body(connected(second) or b"")
    assert (auto["res"], auto["session_key"], auto["automatic"]) == (100, session, True)
    [again] = second.parse(req(100))
    assert isinstance(again, Reply) and body(again.payload)["res"] == 112
    first.finished()
    second.finished()
    second.finished()  # the core calls it once; twice changes nothing
    clock.t += 900.0
    third = dialect(logons)
    assert body(connected(third) or b"")["session_key"] == session
    third.finished()
    clock.t += 900.5
    assert connected(dialect(logons)) is None  # too late: log on explicitly
    assert len(logons) == 0


def test_logon_sessions_are_bounded() -> None:
    clock = Clock()
    logons = LogonSessions(900.0, 2, clock)
    for user in ("a", "b", "c"):
        logons.logon(user)
        logons.end(user)
    assert len(logons) == 2
    assert logons.resume("a") is None  # the oldest was forgotten
    assert logons.resume("c") is not None
    logons.end("nobody")  # not logged on: nothing to end
    assert len(logons) == 2


# -- any frame: refused with a documented code, never an exception of ours ---------------------

json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
request_frame = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "header": st.one_of(json_value, st.fixed_dictionaries({}, optional={"t": json_value})),
            "op": st.one_of(st.sampled_from([1, 2, 100, 200, 201, 7, -1, 2**40]), json_value),
            "id": json_value,
            "channels": st.one_of(
                st.lists(st.sampled_from(["trades:BTC-USD", "user:bob:orders", "x"]), max_size=3),
                json_value,
            ),
        },
    ).map(json.dumps),
    st.text(max_size=100),
    st.integers(1, 100).map(lambda d: "[" * d + "]" * d),
    st.just('{"header": {}, "op": 1e400}'),
)


@settings(max_examples=200)
@given(st.lists(request_frame, max_size=6), st.booleans())
def test_any_frame_is_served_or_refused_with_a_documented_code(
    frames: list[str], logged_on: bool
) -> None:
    d = dialect()
    connected(d)
    if logged_on:
        d.parse(req(100))
    for frame in frames:
        try:
            d.parse(frame)
        except ProtocolError as exc:
            assert exc.code in ERROR_RESPONSE_CODES, exc.code
            assert exc.message
    assert d.parse(req(1)) == [Ping(None)]


@settings(max_examples=50)
@given(st.binary(max_size=200))
def test_any_bytes(frame: bytes) -> None:
    try:
        dialect().parse(frame)  # type: ignore[arg-type]
    except ProtocolError as exc:
        assert exc.code in ERROR_RESPONSE_CODES

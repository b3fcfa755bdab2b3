"""The Market Prophit Socket.IO dialect with bytes: Socket.IO packets in (the payload of
an Engine.IO message: ``0`` connect, ``2`` event), core commands out; core events and
errors in, Engine.IO message texts out (``40``, ``42[…]``, ``43<ack>[…]``), with no
server and no sockets."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from tickwire.auth import ANONYMOUS, Entitlements, Principal
from tickwire.dialects.base import (
    Authenticate,
    Authenticated,
    Close,
    Handshake,
    Reply,
    Resume,
    Resumed,
    Subscribe,
    Subscribed,
    SubscribedChannel,
    Token,
    Unsubscribe,
)
from tickwire.dialects.errors import ProtocolError
from tickwire.dialects.prophit import ENDPOINTS, EndpointError, prophit_format
from tickwire.dialects.prophit_socketio import (
    CONNECT,
    EndpointView,
    ProphitSocketIO,
    SavedSession,
    endpoint_view,
)
from tickwire.hub import Framed, text_frame
from tickwire.model.channels import parse_channel
from tickwire.model.payloads import CrowdSentiment, MarketSentiment
from tickwire.model.publication import Position, Publication
from tickwire.server.socketio import split_frames

SUB = {"path": "/real-time/crowd-sentiment", "method": "get", "params": {"ticker": "AAPL"}}
AAPL = parse_channel("sentiment:AAPL")
CROWD = endpoint_view(ENDPOINTS["crowd-sentiment"], "both", True)


def dialect(
    eio: int = 4, query: str | None = None, saved: dict[str, SavedSession] | None = None
) -> ProphitSocketIO:
    store = dict(saved or {})
    return ProphitSocketIO(
        Handshake("/socket.io/", {"token": [query]} if query else {}),
        eio=eio,
        style="both",
        recovery=eio == 4,
        max_payload=4096,
        exists=lambda ch: ch.symbol in ("AAPL", "TSLA"),
        saved=lambda pid: store.pop(pid, None),
    )


def connected(d: ProphitSocketIO) -> ProphitSocketIO:
    d.parse("0")
    d.render(Resumed(CONNECT, (), False))
    return d


def packet(raw: bytes) -> tuple[str, Any]:
    """(head, data) of a Socket.IO packet as the Engine.IO message's text."""
    text = raw.decode()
    at = next((i for i, ch in enumerate(text) if ch in "[{"), len(text))
    return text[:at], json.loads(text[at:]) if at < len(text) else None


def test_connect_takes_the_auth_payloads_token_then_the_querys() -> None:
    d = dialect(query="from-query")
    assert d.parse('0{"token":"from-auth"}') == [Authenticate(CONNECT, Token("from-auth"))]
    assert dialect(query="from-query").parse("0") == [Authenticate(CONNECT, Token("from-query"))]
    assert dialect().parse("0") == [Resume(CONNECT, ())]  # anonymous: nothing to verify
    with pytest.raises(ProtocolError) as info:
        d.parse("0")  # a second CONNECT while the first is served
    assert info.value.code == "bad_packet"


def test_a_malformed_token_is_refused_as_the_connects_error() -> None:
    with pytest.raises(EndpointError) as info:
        dialect().parse('0{"token":17}')
    assert (info.value.code, info.value.status, info.value.request_id) == (
        "unauthorized",
        401,
        CONNECT,
    )


def test_engineio_3_connects_at_open_with_the_querys_token() -> None:
    d = dialect(eio=3, query="tok")
    assert d.opening() == [Authenticate(CONNECT, Token("tok"))]
    assert packet(d.render(Resumed(CONNECT, (), True)))[0] == "40"  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        d.parse("0")  # Socket.IO 4 protocol: the client never connects itself
    [told] = dialect(eio=3, query="x" * 9000).opening()  # told, not raised
    assert isinstance(told, Reply) and packet(told.payload)[1]["code"] == "unauthorized"


def test_nothing_but_connect_before_the_namespace_is_connected() -> None:
    with pytest.raises(ProtocolError) as info:
        dialect().parse('2["subscribe",{}]')
    assert info.value.code == "bad_packet" and "connect" in info.value.message
    # and errors are told to no one yet
    assert dialect().render_error(ProtocolError("bad_packet", "x")) == b""


def test_events_become_core_commands_on_the_endpoints_view() -> None:
    d = connected(dialect())
    assert d.parse("27" + json.dumps(["subscribe", SUB])) == [
        Subscribe(7, [(AAPL, None)], view=CROWD)
    ]
    assert d.parse("2" + json.dumps(["unsubscribe", SUB])) == [
        Unsubscribe(None, [AAPL], view=CROWD, strict=True)
    ]
    raw = d.parse("23" + json.dumps(["subscribe", {"channels": ["trades:BTC-USD"]}]))
    assert raw == [Subscribe(3, [(parse_channel("trades:BTC-USD"), None)], view=None)]
    assert d.parse("1") == [Close(1000, "client disconnect")] and d.pid is None


@pytest.mark.parametrize(
    ("arg", "code", "status"),
    [
        ({**SUB, "path": "/real-time/nope"}, "unknown_path", 404),
        ({**SUB, "params": {"ticker": "ZZZ"}}, "unknown_ticker", 404),
        ({**SUB, "method": "POST"}, "method_not_allowed", 400),
        ("crowd-sentiment", "bad_request", 400),
    ],
)
def test_a_refused_event_names_its_ack(arg: Any, code: str, status: int) -> None:
    d = connected(dialect())
    with pytest.raises(EndpointError) as info:
        d.parse("29" + json.dumps(["subscribe", arg]))
    assert (info.value.code, info.value.status, info.value.request_id) == (code, status, 9)
    head, body = packet(d.render_error(info.value))
    assert head == "439" and body[0]["code"] == code and body[0]["status"] == status


def test_errors_render_as_ack_err_event_or_connect_error() -> None:
    d = connected(dialect())
    head, body = packet(d.render_error(ProtocolError("too_many_channels", "over", 4)))
    assert head == "434" and body == [
        {
            "type": "invalid_request_error",
            "code": "too_many_subscriptions",
            "message": "over",
            "status": 400,
        }
    ]
    head, body = packet(d.render_error(ProtocolError("unavailable", "retry")))
    assert head == "42" and body[0] == "err"
    assert (body[1]["type"], body[1]["status"]) == ("api_error", 500)
    refused = ProtocolError("key_revoked", "key revoked", CONNECT)
    head, body = packet(dialect().render_error(refused))
    assert head == "44" and body["data"]["status"] == 401 and body["message"] == "key revoked"
    head, body = packet(dialect(eio=3).render_error(refused))  # socket.io-client 2: 'error'
    assert head == "44" and body["code"] == "key_revoked" and body["status"] == 401


def test_acks_and_positions_of_subscriptions() -> None:
    d = connected(dialect())
    done = Subscribed(5, (SubscribedChannel("sentiment:AAPL", "e1", 12),), ("sentiment:AAPL",))
    assert d.render(done) == b"435[null]"
    assert d.positions["sentiment:AAPL"] == Position("e1", 12)
    assert d.render(Subscribed(None, (), ())) is None  # no ack asked for: nothing


def _resumed(d: ProphitSocketIO, recovered: bool) -> dict[str, Any]:
    head, body = packet(d.render(Resumed(CONNECT, (), recovered)))  # type: ignore[arg-type]
    assert head == "40"
    reply: dict[str, Any] = body
    return reply


def test_the_connect_reply_keeps_the_pid_only_when_nothing_was_missed() -> None:
    alice = Principal("alice")
    items = [(CROWD, AAPL, Position("e1", 3))]
    store = {"old": SavedSession("alice", items)}
    d = dialect(saved=store)
    d.parse('0{"token":"t","pid":"old","offset":"sentiment:AAPL|e1|5"}')
    [resume] = d.after(Authenticated(CONNECT, alice, ()))
    assert resume == Resume(CONNECT, [(CROWD, AAPL, Position("e1", 5))])  # from the offset
    assert _resumed(d, recovered=True)["pid"] == "old"
    d = dialect(saved={"old": SavedSession("alice", items)})
    d.parse('0{"token":"t","pid":"old"}')
    d.after(Authenticated(CONNECT, alice, ()))
    assert _resumed(d, recovered=False)["pid"] != "old"
    d = dialect(saved={"old": SavedSession("alice", items)})
    d.parse('0{"token":"t","pid":"old"}')  # another user's session: nothing resumed
    assert d.after(Authenticated(CONNECT, Principal("bob"), ())) == [Resume(CONNECT, ())]


def test_revocation_and_expiry_say_why_then_disconnect_once_connected() -> None:
    d = connected(dialect())
    assert d.pid is not None
    err, bye = d.farewell(3504)
    head, body = packet(err)
    assert head == "42" and body[0] == "err"
    assert (body[1]["code"], body[1]["close"], body[1]["status"]) == ("key_revoked", 3504, 401)
    assert bye == b"41" and d.pid is None  # nothing kept for recovery
    _, body = packet(connected(dialect()).farewell(3005)[0])
    assert (body[1]["code"], body[1]["close"]) == ("token_expired", 3005)
    assert connected(dialect()).farewell(3503) == []
    assert dialect().farewell(3504) == []  # not connected: nothing to tell


def test_an_endpoint_view_is_the_keys_streaming_entitlements() -> None:
    view = EndpointView(
        ENDPOINTS["tweet-buzz"], prophit_format(ENDPOINTS["tweet-buzz"], "res", False)
    )
    tsla = parse_channel("sentiment:TSLA")
    denied = view.denied(ANONYMOUS, AAPL)
    assert denied is not None and denied.code == "unauthorized"
    only = Principal("a", Entitlements(symbols=frozenset({"AAPL"})))
    assert view.denied(only, AAPL) is None
    denied = view.denied(only, tsla)
    assert denied is not None and "ticker 'TSLA'" in denied.message
    paths = Principal("a", Entitlements(streaming_paths=frozenset({"trades"})))
    denied = view.denied(paths, AAPL)
    assert denied is not None and "streaming paths" in denied.message


def test_a_view_frames_its_events_itself_both_as_two_messages_and_a_hidden_one_as_none() -> None:
    def pub(data: object) -> Publication:
        raw = msgspec.Raw(msgspec.json.encode(data))
        return Publication("sentiment:AAPL", 7, "e1", 1_700_000_040_000, raw)

    crowd = pub(CrowdSentiment(1_700_000_040_000, "AAPL", 0.5, 0.25, 0.5, None, 7, 1.25))
    fmt = prophit_format(ENDPOINTS["crowd-sentiment"], "both", True)
    framed = fmt.pub(crowd)
    assert type(framed) is Framed and text_frame(framed) is framed  # queued as it is
    payloads, changed, closed = split_frames(framed)
    assert not changed and closed is None  # two whole frames: nothing to split or drop
    first, second = payloads
    assert first[:2] == second[:2] == b"42"
    data, res = json.loads(first[2:]), json.loads(second[2:])
    assert (data[0], res[0]) == ("data", "res") and data[2] == res[2] == "sentiment:AAPL|e1|7"
    assert data[1]["results"] == res[1]["results"]
    # a market-prophit point on the same channel is not this view's: no frame at all
    mp = fmt.pub(pub(MarketSentiment(1_700_000_040_000, "AAPL", 0.1, 0.1, None, None)))
    assert mp == b"" and type(mp) is Framed
    with pytest.raises(ValueError):
        text_frame(framed, compressed=True)

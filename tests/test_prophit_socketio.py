"""Socket.IO (Market Prophit) with python-socketio's AsyncClient, and raw Engine.IO input."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest
import socketio
from hypothesis import given
from hypothesis import strategies as st

from tests.prophitkit import Prophit, run_prophit
from tickwire.auth import Entitlements
from tickwire.dialects.prophit import parse_offset
from tickwire.dialects.socketio import (
    PacketError,
    SioType,
    decode_payload,
    encode_payload,
    parse_eio,
    parse_sio,
)
from tickwire.hub.frames import close_frame, text_frame
from tickwire.model.publication import Position
from tickwire.server import socketio as socketio_server
from tickwire.server.socketio import SOCKETIO_KEY as SOCKETIO
from tickwire.server.socketio import Session, last_offset, passes_as_is, split_frames

TS = 1_700_000_040_000
SUB = {"path": "/real-time/crowd-sentiment", "method": "get", "params": {"ticker": "AAPL"}}


class Events:
    """Every ``data``/``res``/``err`` event a client got, awaitable."""

    def __init__(self, sio: socketio.AsyncClient) -> None:
        self.got: dict[str, list[tuple[Any, ...]]] = {"data": [], "res": [], "err": []}
        self.cond = asyncio.Condition()
        for name in self.got:
            sio.on(name, self._handler(name))

    def _handler(self, name: str) -> Any:
        async def on(*args: Any) -> None:
            async with self.cond:
                self.got[name].append(args)
                self.cond.notify_all()

        return on

    async def wait(self, name: str, n: int) -> list[tuple[Any, ...]]:
        async with self.cond:
            await asyncio.wait_for(self.cond.wait_for(lambda: len(self.got[name]) >= n), 5)
        return self.got[name]


async def connect(
    p: Prophit, transports: list[str], token: str | None = None
) -> tuple[socketio.AsyncClient, Events]:
    sio = socketio.AsyncClient(reconnection=False)
    events = Events(sio)
    await sio.connect(
        p.http + "?token=" + (token or p.token), transports=transports, wait_timeout=5
    )
    return sio, events


@pytest.mark.parametrize("transports", [["polling", "websocket"], ["polling"], ["websocket"]])
async def test_subscribe_stream_unsubscribe(transports: list[str]) -> None:
    async with run_prophit() as p:
        sio, events = await connect(p, transports)
        try:
            assert sio.transport() == transports[-1]
            assert await sio.call("subscribe", SUB, timeout=5) is None
            await p.crowd(TS, -0.25)
            (data,) = await events.wait("data", 1)
            (res,) = await events.wait("res", 1)
            _, rest = await p.get("/real-time/crowd-sentiment?ticker=AAPL")
            assert data[0]["results"] == res[0]["results"] == rest["results"]
            assert data[0]["path"] == "crowd-sentiment" and res[0]["path"] == SUB["path"]
            # mp points are on the same channel and not part of this view
            await p.mp(TS + 1000, 0.5)
            assert await sio.call("unsubscribe", SUB, timeout=5) is None
            await p.crowd(TS + 60_000, 0.5)
            # a round trip after the publication: anything sent would have arrived first
            err = await sio.call("unsubscribe", SUB, timeout=5)
            assert err["code"] == "not_subscribed"
            assert len(events.got["data"]) == 1 and len(events.got["res"]) == 1
        finally:
            await sio.disconnect()


async def test_two_views_of_one_channel_on_one_socket() -> None:
    async with run_prophit(prophit_events="res") as p:
        sio, events = await connect(p, ["websocket"])
        try:
            mp = {"path": "/real-time/market-prophit-sentiment", "params": {"ticker": "AAPL"}}
            assert await sio.call("subscribe", SUB, timeout=5) is None
            assert await sio.call("subscribe", mp, timeout=5) is None
            await p.crowd(TS, 0.1)
            await p.mp(TS + 1000, 0.2)
            await p.user(TS + 1100, 0.3)
            got = await events.wait("res", 2)
            assert [g[0]["path"] for g in got] == [SUB["path"], mp["path"]]
            assert got[1][0]["results"][0]["mp_sentiment"] == "0.2"
            assert not events.got["data"]  # prophit_events = res: v2 only
        finally:
            await sio.disconnect()


@pytest.mark.parametrize(
    ("arg", "code"),
    [
        ({"path": "/real-time/nope", "params": {"ticker": "AAPL"}}, "unknown_path"),
        ({"path": "/real-time/crowd-sentiment", "params": {}}, "missing_param"),
        (
            {"path": "/real-time/crowd-sentiment", "params": {"ticker": "AAPL", "x": 1}},
            "unknown_param",
        ),
        ({**SUB, "method": "POST"}, "method_not_allowed"),
        ({"path": "/real-time/crowd-sentiment", "params": {"ticker": "ZZZ"}}, "unknown_ticker"),
        ("crowd-sentiment", "bad_request"),
        ({**SUB, "extra": True}, "bad_request"),
    ],
)
async def test_bad_subscriptions_are_acked_with_an_error(arg: Any, code: str) -> None:
    async with run_prophit() as p:
        sio, _ = await connect(p, ["websocket"])
        try:
            err = await sio.call("subscribe", arg, timeout=5)
            assert err["code"] == code and err["message"], err
            assert await sio.call("subscribe", SUB, timeout=5) is None  # still usable
        finally:
            await sio.disconnect()


async def test_entitlements_streaming_paths_and_tickers() -> None:
    async with run_prophit() as p:
        token = await p.new_token(
            Entitlements(symbols=frozenset({"AAPL"}), streaming_paths=frozenset({"tweet-buzz"}))
        )
        sio, _ = await connect(p, ["websocket"], token)
        try:
            err = await sio.call("subscribe", SUB, timeout=5)
            assert err["status"] == 403 and "streaming paths" in err["message"]
            buzz = {"path": "/real-time/tweet-buzz", "params": {"ticker": "TSLA"}}
            err = await sio.call("subscribe", buzz, timeout=5)
            assert err["status"] == 403 and "ticker 'TSLA'" in err["message"]
            buzz["params"] = {"ticker": "AAPL"}
            assert await sio.call("subscribe", buzz, timeout=5) is None
        finally:
            await sio.disconnect()
        nostream = await p.new_token(Entitlements(streaming=False))
        sio, _ = await connect(p, ["websocket"], nostream)
        try:
            err = await sio.call("subscribe", SUB, timeout=5)
            assert err["code"] == "forbidden" and "streaming access" in err["message"]
        finally:
            await sio.disconnect()


@pytest.mark.parametrize("where", ["query", "auth"])
async def test_bad_token_is_a_connect_error(where: str) -> None:
    async with run_prophit() as p:
        sio = socketio.AsyncClient(reconnection=False)
        refused: list[Any] = []
        sio.on("connect_error", refused.append)
        kwargs: dict[str, Any] = {"transports": ["websocket"], "wait_timeout": 5}
        url = p.http + ("?token=not.a.token" if where == "query" else "")
        if where == "auth":
            kwargs["auth"] = {"token": "not.a.token"}
        with pytest.raises(socketio.exceptions.ConnectionError):
            await sio.connect(url, **kwargs)
        (error,) = refused
        assert error["data"]["code"] == "malformed_token" and error["data"]["status"] == 401
        assert error["message"]


async def test_token_in_auth_payload_connects() -> None:
    async with run_prophit() as p:
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(p.http, auth={"token": p.token}, transports=["websocket"], wait_timeout=5)
        try:
            assert await sio.call("subscribe", SUB, timeout=5) is None
        finally:
            await sio.disconnect()


async def test_expired_token_mid_connection_is_told_then_disconnected() -> None:
    async with run_prophit(token_ttl=1.0, auth_leeway=0.0) as p:
        token = await p.new_token()
        sio, events = await connect(p, ["websocket"], token)
        gone = asyncio.Event()
        sio.on("disconnect", lambda *a: gone.set())
        assert await sio.call("subscribe", SUB, timeout=5) is None
        (err,) = await events.wait("err", 1)
        assert err[0]["code"] == "token_expired"
        await asyncio.wait_for(gone.wait(), 5)


async def test_the_cores_limits_count_every_view_and_subscribing_again_is_one_stream() -> None:
    async with run_prophit(prophit_events="res", max_channels=2) as p:
        sio, events = await connect(p, ["websocket"])
        try:
            mp = {"path": "/real-time/market-prophit-sentiment", "params": {"ticker": "AAPL"}}
            for arg in (SUB, SUB, mp):  # the same view twice: held once
                assert await sio.call("subscribe", arg, timeout=5) is None
            raw = {"channels": ["sentiment:AAPL"]}  # a third (view, channel): over the limit
            err = await sio.call("subscribe", raw, timeout=5)
            assert (err["code"], err["status"]) == ("too_many_subscriptions", 400), err
            assert "limit of 2" in err["message"]
            await p.crowd(TS, 0.1)
            await p.mp(TS + 1000, 0.2)
            got = await events.wait("res", 2)
            # a round trip after the publications: a duplicate would have arrived first
            assert await sio.call("unsubscribe", mp, timeout=5) is None
            assert [g[0]["path"] for g in got] == [SUB["path"], mp["path"]]
        finally:
            await sio.disconnect()


async def test_errors_in_a_row_close_the_session_with_the_cores_policy_code() -> None:
    async with run_prophit() as p:
        url = f"ws://127.0.0.1:{p.gw.port}/socket.io/?EIO=4&transport=websocket&token={p.token}"
        async with p.gw.session.ws_connect(url) as ws:
            assert (await ws.receive_str(timeout=5)).startswith("0{")
            await ws.send_str("40")
            assert (await ws.receive_str(timeout=5)).startswith("40{")
            for i in range(50):  # Engine.IO and Socket.IO errors count in one counter
                await ws.send_str("9" if i % 2 else '42["nope"]')
            told: list[str] = []
            while (msg := await ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
                told += re.findall(r'"code":"([a-z_]+)"', msg.data)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 3503, msg
            assert set(told) == {"bad_packet", "unknown_event"} and len(told) == 50


# -- raw Engine.IO: what no well-behaved client sends --------------------------------------


async def _open(p: Prophit, eio: str = "4") -> str:
    async with p.gw.session.get(
        p.http + f"/socket.io/?EIO={eio}&transport=polling&token={p.token}"
    ) as r:
        body = await r.text()
    assert r.status == 200, body
    start = body.index("{")
    sid: str = json.loads(body[start : body.index("}") + 1])["sid"]
    return sid


async def test_bad_engineio_requests() -> None:
    async with run_prophit(prophit_max_payload=2048) as p:
        s = p.gw.session
        base = p.http + "/socket.io/"
        for query, code in [
            ("?EIO=5&transport=polling", 5),
            ("?EIO=4&transport=carrier-pigeon", 0),
            ("?EIO=4&transport=polling&sid=nosuchsession", 1),
        ]:
            async with s.get(base + query) as r:
                assert r.status == 400 and (await r.json())["code"] == code
        sid = await _open(p)
        url = base + f"?EIO=4&transport=polling&sid={sid}"
        async with s.post(url, data=b"") as r:
            assert r.status == 400 and "empty" in (await r.json())["message"]
        async with s.post(url, data=b"\xff\xfe") as r:
            assert r.status == 400 and "UTF-8" in (await r.json())["message"]
        # malformed packets: the session lives on and says what was wrong
        async with s.post(url, data=b"40") as r:
            assert r.status == 200
        async with s.get(url) as r:
            assert (await r.text()).startswith("40{")
        async with s.post(url, data=b"9\x1e4x\x1e42[1,2\x1e42{}\x1e") as r:
            assert r.status == 200
        async with s.get(url) as r:
            body = await r.text()
        for name in ("bad_packet", "bad_json"):
            assert name in body
        async with s.post(url, data=b"4" + b"2" * 4000) as r:
            assert r.status == 413
        async with s.get(url) as r:  # the oversized body ended the session
            assert r.status == 400 and (await r.json())["code"] == 1


async def test_a_session_is_reachable_only_from_its_own_address() -> None:
    async with run_prophit() as p:
        sid = await _open(p)
        conn = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=conn) as other:
            url = p.http + f"/socket.io/?EIO=4&transport=polling&sid={sid}"
            async with other.get(url) as r:
                assert r.status == 400 and (await r.json())["code"] == 1
            async with other.post(url, data=b"41") as r:
                assert r.status == 400
        assert sid in p.gw.runner.app[SOCKETIO].sessions


async def test_two_polls_at_once_end_the_session() -> None:
    async with run_prophit() as p:
        sid = await _open(p)
        url = p.http + f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        first = asyncio.ensure_future(p.gw.session.get(url))
        sessions = p.gw.runner.app[SOCKETIO].sessions
        for _ in range(100):  # until the first GET is parked
            if sessions[sid].waiter is not None:
                break
            await asyncio.sleep(0.01)
        async with p.gw.session.get(url) as r:
            assert r.status == 400
        async with await first as r:
            assert r.status == 200 and "1" in await r.text()
        assert sid not in sessions


# -- the codec -----------------------------------------------------------------------------


def test_payload_codecs() -> None:
    packets = [b"40", '42["res",{"x":"\u00e9\U0001f600"}]'.encode()]
    v4 = encode_payload(packets, 4)
    assert v4 == b"\x1e".join(packets)
    assert decode_payload(v4, 4) == [p.decode() for p in packets]
    v3 = encode_payload(packets, 3)
    assert v3.startswith(b"2:40") and b"21:42" in v3  # 20 characters, the emoji is 2 UTF-16 units
    assert decode_payload(v3, 3) == [p.decode() for p in packets]
    for bad in (b"", b"5:40", b"x:40", b"0:"):
        with pytest.raises(PacketError):
            decode_payload(bad, 3)


def test_socketio_packets() -> None:
    pkt = parse_sio('212["subscribe",{"path":"a"}]', max_bytes=1000)
    assert pkt.type is SioType.EVENT and pkt.ack == 12 and pkt.data[0] == "subscribe"
    pkt = parse_sio('0/admin,{"token":"t"}', max_bytes=1000)
    assert pkt.namespace == "/admin" and pkt.data == {"token": "t"}
    for bad, code in [
        ("", "bad_packet"),
        ("9", "bad_packet"),
        ("51-[]", "binary_not_supported"),
        ("2" + "9" * 20 + "[]", "bad_packet"),
        ("2[" * 100, "bad_json"),
        ('2["' + "x" * 2000 + '"]', "frame_too_large"),
    ]:
        with pytest.raises(PacketError) as info:
            parse_sio(bad, max_bytes=1000)
        assert info.value.code == code, bad
    with pytest.raises(PacketError):
        parse_eio("b4AAAA")


def test_split_frames_drops_empty_views_and_splits_pairs() -> None:
    data = text_frame(b"a") + text_frame(b"") + text_frame(b"b\x1ec") + close_frame(3008)
    payloads, changed, closed = split_frames(data)
    assert payloads == [b"a", b"b", b"c"] and changed and closed == 3008
    big = text_frame(b"x" * 70_000) + text_frame(b"y" * 300)
    payloads, changed, closed = split_frames(big)
    assert [len(p) for p in payloads] == [70_000, 300] and not changed and closed is None


#: JSON text as the formats render it: any characters but raw control ones (JSON escapes
#: them): ASCII, or with multibyte UTF-8, whose bytes include 0x81 and 0x88
_TEXT = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.text(st.characters(min_codepoint=0x20, exclude_categories=["Cs"]), max_size=40),
)


@st.composite
def session_frames(draw: st.DrawFn) -> bytes:
    """What a session's own hub connection writes: text frames of packets (raw channels'
    events, acks, errors; never empty: the core drops b""), some of two packets joined
    by \x1e as a view would, of lengths around 30 (0x1e), 126 and 136 (0x88 in the
    length), perhaps a close frame at the end."""
    frames = []
    for _ in range(draw(st.integers(1, 6))):
        body = draw(_TEXT).encode()
        pad = b"p" * draw(st.sampled_from([0, 0, 0, 1, 20, 110, 118, 130, 250, 0x1E00]))
        packet = b'42["pub",{"d":"' + body + pad + b'"}]'
        if draw(st.integers(0, 3)) == 0:
            packet = packet + b"\x1e" + packet
        frames.append(text_frame(packet))
    if draw(st.integers(0, 3)) == 0:
        frames.append(close_frame(draw(st.sampled_from([1000, 3008]))))
    return b"".join(frames)


@given(session_frames())
def test_what_passes_as_is_is_what_split_frames_leaves_unchanged(data: bytes) -> None:
    """The WebSocket fast path skips reading the frames only where reading them would
    change nothing: no split, no close."""
    if passes_as_is(data):
        payloads, changed, closed = split_frames(data)
        assert not changed and closed is None
        assert b"".join(text_frame(p) for p in payloads) == data


CHANNELS = ("sentiment:AAPL", "sentiment:TSLA")


@st.composite
def view_frames(draw: st.DrawFn) -> bytes:
    """A lane's write: events of two channels ending with their offsets (some as the
    both style's pair of frames), rows whose data holds offset look-alikes (a string
    ``"sentiment:AAPL|e|9"`` in a list, as a publisher's data may) and multibyte text."""
    frames = []
    for _ in range(draw(st.integers(0, 8))):
        channel = draw(st.sampled_from(CHANNELS))
        offset = f"{channel}|e{draw(st.integers(0, 2))}|{draw(st.integers(0, 999))}"
        row: list[object] = [draw(_TEXT)]
        if draw(st.booleans()):
            row.append(f"{draw(st.sampled_from(CHANNELS))}|e|{draw(st.integers(0, 99))}")
        packet = json.dumps(["res", {"d": row}, offset], ensure_ascii=False, separators=(",", ":"))
        frame = text_frame(b"42" + packet.encode())
        frames.append(frame * draw(st.integers(1, 2)))
    return b"".join(frames)


def offsets_read_one_by_one(data: bytes) -> dict[str, Position]:
    """The reference: every payload's offset, in order (what note_offsets keeps)."""
    out: dict[str, Position] = {}
    for payload in split_frames(data)[0]:
        parsed = parse_offset(json.loads(payload[2:])[-1])
        if parsed is not None:
            out[parsed[0]] = parsed[1]
    return out


@given(view_frames())
def test_each_channels_last_offset_is_found_as_reading_every_frame_finds_it(data: bytes) -> None:
    expected = offsets_read_one_by_one(data)
    for channel in CHANNELS:
        assert last_offset(data, channel) == expected.get(channel)


def test_an_offset_look_alike_inside_a_packet_is_passed_over() -> None:
    real = text_frame(b'42["res",{"d":1},"sentiment:AAPL|e|5"]')
    fake = text_frame(b'42["res",{"d":["sentiment:AAPL|e|9"]},"sentiment:TSLA|e|1"]')
    assert last_offset(real + fake, "sentiment:AAPL") == Position("e", 5)
    assert last_offset(fake, "sentiment:AAPL") is None
    assert last_offset(real + fake, "sentiment:TSLA") == Position("e", 1)


def test_plain_frames_pass_as_is_and_pairs_and_closes_go_the_long_way() -> None:
    plain = text_frame(b'42["pub",{"d":1}]') * 3
    assert passes_as_is(plain)
    assert not passes_as_is(plain + text_frame(b"a\x1eb"))
    assert not passes_as_is(plain + close_frame(3008))
    assert not passes_as_is(text_frame(b"x" * 0x1E))  # a length byte: the long way


async def test_the_offsets_noted_for_recovery_are_the_last_handed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The session notes each channel's last offset sent (what recovery resumes from):
    by searching a write for each channel its views stream, or, beyond MAX_SEARCHED
    channels, frame by frame. Either way the same offsets, and the client gets every
    event once, ``data`` and ``res`` as two messages."""
    async with run_prophit() as p:
        sio, events = await connect(p, ["websocket"])
        try:
            (session,) = p.gw.runner.app[SOCKETIO].sessions.values()
            read: list[int] = []  # writes read frame by frame (the long way)
            note = Session.note_offsets

            def counted(self: Session, payloads: list[bytes]) -> None:
                read.append(len(payloads))
                note(self, payloads)

            monkeypatch.setattr(Session, "note_offsets", counted)
            assert await sio.call("subscribe", SUB, timeout=5) is None
            seqs = [await p.crowd(TS + i * 60_000, i / 10) for i in range(4)]
            res = await events.wait("res", 4)
            epoch = res[0][1].split("|")[1]
            assert [r[1] for r in res] == [f"sentiment:AAPL|{epoch}|{s}" for s in seqs]
            assert session.sent["sentiment:AAPL"] == Position(epoch, seqs[-1])
            long_way = len(read)
            assert long_way <= 1  # the subscribe's reply at most: then searched

            tsla = {**SUB, "params": {"ticker": "TSLA"}}  # the same lane: two channels
            assert await sio.call("subscribe", tsla, timeout=5) is None
            t = await p.crowd(TS, 0.7, ticker="TSLA")
            a = await p.crowd(TS + 9 * 60_000, 0.9)
            got = await events.wait("res", 6)
            tsla_epoch = got[4][1].split("|")[1]
            assert got[4][1] == f"sentiment:TSLA|{tsla_epoch}|{t}"
            assert session.sent["sentiment:TSLA"] == Position(tsla_epoch, t)
            assert session.sent["sentiment:AAPL"] == Position(epoch, a)
            assert len(read) == long_way  # both searched for, not read frame by frame

            monkeypatch.setattr(socketio_server, "MAX_SEARCHED", 1)  # two: read them all
            t = await p.crowd(TS + 60_000, 0.8, ticker="TSLA")
            await events.wait("res", 7)
            assert session.sent["sentiment:TSLA"] == Position(tsla_epoch, t)
            assert len(read) > long_way

            assert await sio.call("unsubscribe", tsla, timeout=5) is None
            last = [await p.crowd(TS + (10 + i) * 60_000, 0.1) for i in range(3)]
            await events.wait("res", 10)
            assert session.sent["sentiment:AAPL"] == Position(epoch, last[-1])
            assert len(events.got["data"]) == len(events.got["res"]) == 10
        finally:
            await sio.disconnect()


async def test_the_bench_wire_raw_channels_over_websocket() -> None:
    """What ``tickwire bench --dialect eio4`` sends: 40, then subscribe {channels}."""
    from tickwire.client.bench.dialects import EngineIO4Dialect

    async with run_prophit() as p:
        bench = EngineIO4Dialect(["trades:BTC-USD"])
        url = f"ws://127.0.0.1:{p.gw.port}{bench.default_path}"
        async with p.gw.session.ws_connect(url) as ws:
            ready = False
            while not ready:
                msg = await ws.receive(timeout=5)
                step = bench.on_message(msg.data.encode(), ready)
                assert step.error is None, step.error
                for out in step.send:
                    await ws.send_str(out.decode())
                ready = step.ready
            seq = await p.gw.publish("trades:BTC-USD", {"id": 1})
            msg = await ws.receive(timeout=5)
            name, env = json.loads(msg.data[2:])
            assert name == "pub" and env["channel"] == "trades:BTC-USD" and env["seq"] == seq
            assert env["data"] == {"id": 1}

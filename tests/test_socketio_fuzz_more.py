"""More property tests of the Engine.IO 3/4 and Socket.IO codec and of the server's packet
handling (issue 14): random and mutated packets, polling payloads of both versions,
binary-attachment headers and oversized bodies.

Each asserts: nothing but :class:`PacketError` escapes the codec and its code is one of
the documented ones; the server answers every request with engine.io's error shape or
serves it, tells a connected client every refusal with a documented code, stays usable
(an Engine.IO probe is still answered) unless the input ended the session, and never lets
another client or a guessed id reach a session. Beside tests/test_socketio_fuzz.py: these
add mutations, binary-attachment headers, EIO3 UTF-16 lengths, the WebSocket transport
and wrong-version ids (and found the Unicode-digit ValueError). Bounded in ``make test``;
``TICKWIRE_DEEP=1`` runs many more examples (profile in conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.prophitkit import Prophit, run_prophit
from tickwire.dialects.socketio import (
    PacketError,
    SioType,
    decode_payload,
    encode_payload,
    parse_eio,
    parse_sio,
)
from tickwire.server.socketio import SOCKETIO_KEY

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: What the codec may raise (docs/dialects.md's Socket.IO codes, plus the polling body's).
CODEC_CODES = {"bad_packet", "bad_json", "frame_too_large", "binary_not_supported", "bad_payload"}
#: Every code a connected client may be told in an ``err`` event or an ack.
_DOC = (DOCS / "dialects.md").read_text()
DOCUMENTED = set(re.findall(r"`([a-z_]+)`", _DOC[_DOC.index("Errors, REST and Socket.IO") :]))
#: engine.io's error codes in its HTTP 400 answers.
EIO_HTTP_CODES = {0, 1, 2, 3, 5}
DEEP = os.environ.get("TICKWIRE_DEEP") == "1"
SERVER_EXAMPLES = 300 if DEEP else 8
MAX_PAYLOAD = 4096

SUB = {"path": "/real-time/crowd-sentiment", "method": "get", "params": {"ticker": "AAPL"}}

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
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
event_args = st.one_of(
    st.just(SUB),
    st.fixed_dictionaries(
        {},
        optional={
            "path": st.one_of(st.sampled_from(["/real-time/crowd-sentiment", "nope"]), json_value),
            "method": st.one_of(st.sampled_from(["get", "GET", "post"]), json_value),
            "params": st.one_of(st.just({"ticker": "AAPL"}), json_value),
        },
    ),
    json_value,
)
event_data = st.one_of(
    st.tuples(st.sampled_from(["subscribe", "unsubscribe", "err", ""]), event_args).map(
        lambda t: json.dumps(list(t))
    ),
    json_value.map(json.dumps),
    st.text(max_size=40),
)
#: A Socket.IO packet as a client might send it (well-formed or not).
sio_text = st.builds(
    lambda kind, ns, ack, data: kind + ns + ack + data,
    st.sampled_from([*"0123456", "7", "x", ""]),
    st.sampled_from(["", "/", "/admin,", "/" + "n" * 130 + ","]),
    st.one_of(st.just(""), st.integers(0, 2**60).map(str), st.sampled_from(["9" * 20, "-1", "01"])),
    event_data,
)
#: Binary-attachment headers: ``5<n>-[…{"_placeholder":true,"num":k}]`` and friends.
binary_text = st.builds(
    lambda kind, n, data: f"{kind}{n}-{data}",
    st.sampled_from(["5", "6", "2", "3"]),
    st.sampled_from(["1", "0", "999999999999", "", "x"]),
    st.sampled_from(
        ['["subscribe",{"_placeholder":true,"num":0}]', "[]", '{"_placeholder":true}', ""]
    ),
)
#: An Engine.IO packet: a type digit (or garbage) and its data.
eio_text = st.one_of(
    sio_text.map(lambda s: "4" + s),
    binary_text.map(lambda s: "4" + s),
    st.sampled_from(["1", "2", "2probe", "3", "3probe", "5", "6", "b4AAAA", "7", "", "40"]),
    st.text(max_size=30),
)


def mutate(text: str, data: st.DataObject) -> str:
    """``text`` with a few random characters replaced, deleted or inserted."""
    chars = list(text)
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(chars)))
        how = data.draw(st.sampled_from(["put", "drop", "set"]))
        ch = data.draw(st.characters(codec="utf-8"))
        if how == "put" or not chars or at == len(chars):
            chars.insert(at, ch)
        elif how == "drop":
            del chars[at]
        else:
            chars[at] = ch
    return "".join(chars)


# -- the codec ----------------------------------------------------------------------------


def _sio_or_code(text: str, max_bytes: int = MAX_PAYLOAD) -> str | None:
    try:
        pkt = parse_sio(text, max_bytes=max_bytes)
    except PacketError as exc:
        assert exc.code in CODEC_CODES, exc
        assert exc.message, exc
        return exc.code
    assert isinstance(pkt.type, SioType)
    assert pkt.ack is None or 0 <= pkt.ack < 2**53
    assert pkt.type not in (SioType.BINARY_EVENT, SioType.BINARY_ACK)
    return None


@example("0\u00b2", None)  # "²" is a str.isdigit() digit but no int()
@given(st.one_of(sio_text, binary_text, st.text(max_size=60)), st.data())
def test_socketio_parser_refuses_with_documented_codes(
    text: str, data: st.DataObject | None
) -> None:
    _sio_or_code(text)
    if data is not None:
        _sio_or_code(mutate(text, data))
    assert _sio_or_code('2["subscribe",{}]') is None  # still parses a valid packet


@given(binary_text)
def test_binary_attachment_headers_are_refused_not_half_parsed(text: str) -> None:
    code = _sio_or_code(text)
    if text[0] in "56":
        assert code == "binary_not_supported"
    else:  # "2<n>-…": an event whose ack id is followed by garbage, never an attachment
        assert code in (None, "bad_json", "bad_packet")


@given(st.text(max_size=100_000 // 10))
def test_oversized_socketio_data_is_refused_by_size(pad: str) -> None:
    text = '2["x","' + "a" * MAX_PAYLOAD + pad + '"]'
    assert _sio_or_code(text) == "frame_too_large"


@given(st.one_of(eio_text, st.text(max_size=40)))
def test_engineio_parser(text: str) -> None:
    try:
        pkt = parse_eio(text)
    except PacketError as exc:
        assert exc.code in CODEC_CODES
        assert not text or text[0] not in "0123456"
        return
    assert text[0] in "0123456" and pkt.data == text[1:]


@example("\u00b2:x".encode(), 3)  # a non-ASCII digit as a v3 length
@given(st.binary(max_size=200), st.sampled_from([3, 4]))
def test_polling_payload_takes_any_bytes(body: bytes, eio: int) -> None:
    try:
        packets = decode_payload(body, eio)
    except PacketError as exc:
        assert exc.code == "bad_payload", exc
        return
    assert packets  # never an empty list: an empty body is refused
    if eio == 4:
        assert "\x1e".join(packets).encode() == body


packet_text = st.text(
    st.characters(codec="utf-8", exclude_characters="\x1e"), min_size=1, max_size=30
)


@given(st.lists(packet_text, min_size=1, max_size=6), st.sampled_from([3, 4]), st.data())
def test_polling_payloads_round_trip_and_mutations_are_refused_or_parsed(
    packets: list[str], eio: int, data: st.DataObject
) -> None:
    """Both encodings (v3 ``<utf-16 length>:<packet>``, v4 ``\\x1e``) decode what they
    encode, astral characters included; a mutated body decodes or is refused."""
    body = encode_payload([p.encode() for p in packets], eio)
    assert decode_payload(body, eio) == packets
    mutated = mutate(body.decode(), data).encode()
    try:
        decode_payload(mutated, eio)
    except PacketError as exc:
        assert exc.code == "bad_payload"


@given(st.integers(1, 10**6), st.text(st.characters(codec="utf-8"), min_size=1, max_size=20))
def test_v3_lengths_past_the_end_are_refused(length: int, text: str) -> None:
    """A v3 length counts UTF-16 units (astral characters are two): one past the end
    is refused, one inside takes exactly that many units."""
    units = len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)
    try:
        packets = decode_payload(f"{length}:{text}".encode(), 3)
    except PacketError as exc:
        assert exc.code == "bad_payload"
        return
    assert length <= units
    first = packets[0]
    assert text.startswith(first)
    assert len(first) + sum(1 for ch in first if ord(ch) > 0xFFFF) == length


# -- the server ---------------------------------------------------------------------------


async def _poll(s: aiohttp.ClientSession, url: str) -> tuple[int, Any, list[str]]:
    """One polling GET: (status, the JSON error or None, the packets)."""
    async with s.get(url) as r:
        raw = await r.read()
    if r.status != 200:
        return r.status, json.loads(raw), []
    eio = 3 if "EIO=3" in url else 4
    return 200, None, decode_payload(raw, eio)


def _check_told(packets: list[str]) -> None:
    """Every refusal the client is told carries a documented code."""
    for text in packets:
        if not text.startswith("4"):
            continue
        pkt = parse_sio(text[1:], max_bytes=1 << 20)
        if pkt.type is SioType.EVENT and pkt.data and pkt.data[0] == "err":
            assert pkt.data[1]["code"] in DOCUMENTED, pkt
        if pkt.type is SioType.ACK and pkt.data and pkt.data[0] is not None:
            assert pkt.data[0]["code"] in DOCUMENTED, pkt


def _check_refusal(status: int, body: Any) -> None:
    assert status in (400, 413), (status, body)
    assert body["code"] in EIO_HTTP_CODES and isinstance(body["message"], str), body
    assert body["message"], body


async def _open(p: Prophit, eio: int) -> str:
    """A polling session with the default namespace connected; its polling URL."""
    s = p.gw.session
    base = p.http + f"/socket.io/?EIO={eio}&transport=polling"
    status, _, packets = await _poll(s, base + f"&token={p.token}")
    assert status == 200 and packets[0].startswith("0{"), packets
    sid: str = json.loads(packets[0][1:])["sid"]
    url = base + "&sid=" + sid
    if eio == 4:
        async with s.post(url, data=b"40") as r:
            assert r.status == 200
        packets = []
    while not any(t.startswith("40") for t in packets):
        status, _, more = await _poll(s, url)
        assert status == 200
        packets.extend(more)
    return url


def _ends_session(packets: list[str]) -> bool:
    """Whether a packet may end a session: an Engine.IO close or a Socket.IO disconnect."""
    return any(t.startswith("1") or t.startswith("41") for t in packets)


body_parts = st.lists(eio_text, max_size=8)


@settings(max_examples=SERVER_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([3, 4]),
    st.lists(
        st.one_of(
            body_parts.map(lambda ps: ("packets", ps)),
            st.binary(max_size=64).map(lambda b: ("raw", b)),
            st.integers(MAX_PAYLOAD + 1, 3 * MAX_PAYLOAD).map(lambda n: ("big", n)),
        ),
        min_size=1,
        max_size=4,
    ),
    st.data(),
)
def test_polling_session_survives_any_bodies(
    eio: int, bodies: list[tuple[str, Any]], data: st.DataObject
) -> None:
    """Random, mutated and oversized POST bodies to one's own session, then a probe."""

    async def run() -> None:
        async with run_prophit(prophit_max_payload=MAX_PAYLOAD) as p:
            s = p.gw.session
            url = await _open(p, eio)
            sent: list[str] = []
            ended = False
            for kind, value in bodies:
                if kind == "packets":
                    texts = [mutate(t, data) for t in value] if data.draw(st.booleans()) else value
                    texts = [t.replace("\x1e", "") for t in texts]
                    if eio == 4:
                        texts = [t for t in texts if t] or ["6"]
                    sent.extend(texts)
                    body = encode_payload([t.encode() for t in texts], eio) if texts else b""
                elif kind == "raw":
                    body = value
                    try:
                        sent.extend(decode_payload(value, eio))
                    except PacketError:
                        pass
                else:
                    body = b"4" + b"2" * value
                async with s.post(url, data=body) as r:
                    status, text = r.status, await r.text()
                if status != 200:
                    _check_refusal(status, json.loads(text))
                    ended = ended or status == 413
                if ended:
                    break
            async with s.post(url, data=encode_payload([b"2probe"], eio)) as r:
                probe_status = r.status
            ended = ended or probe_status != 200
            got: list[str] = []
            async with asyncio.timeout(10):
                while not ended:
                    status, err, packets = await _poll(s, url)
                    if status != 200:
                        _check_refusal(status, err)
                        assert err["code"] == 1, err  # gone, not broken
                        ended = True
                        break
                    got.extend(packets)
                    _check_told(packets)
                    if "3probe" in packets:
                        break
                    if "1" in packets:
                        ended = True
            if ended:  # only input that ends a session may have ended it
                oversized = any(kind == "big" for kind, _ in bodies)
                assert oversized or _ends_session(sent), (bodies, got)
                sid = url.rsplit("=", 1)[1]
                assert sid not in p.gw.runner.app[SOCKETIO_KEY].sessions or not oversized

    asyncio.run(run())


@settings(max_examples=SERVER_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(sio_text.map(lambda s: "4" + s), binary_text.map(lambda s: "4" + s)),
        min_size=1,
        max_size=10,
    ),
    st.data(),
)
def test_websocket_session_survives_any_frames(texts: list[str], data: st.DataObject) -> None:
    """Random and mutated Socket.IO packets over the WebSocket transport, then a
    subscribe whose ack must come (nothing in between may close the socket but a
    disconnect the client sent)."""

    async def run() -> None:
        async with run_prophit(prophit_max_payload=MAX_PAYLOAD) as p:
            url = p.http.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
            async with p.gw.session.ws_connect(url) as ws:
                assert (await ws.receive_str()).startswith("0{")
                await ws.send_str("40" + json.dumps({"token": p.token}))
                assert (await ws.receive_str()).startswith("40{")
                frames = [mutate(t, data) for t in texts]
                for frame in frames:
                    if frame:
                        await ws.send_str(frame)
                await ws.send_str("4299999" + json.dumps(["unsubscribe", {"path": "x"}]))
                async with asyncio.timeout(10):
                    while True:
                        msg = await ws.receive()
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            assert _ends_session([f for f in frames if f]), (frames, msg)
                            return
                        if msg.data == "2":
                            await ws.send_str("3")
                            continue
                        _check_told([msg.data])
                        if msg.data.startswith("4399999["):
                            reply = json.loads(msg.data[len("4399999") :])
                            assert reply[0]["code"] in DOCUMENTED, reply
                            return

    asyncio.run(run())


@settings(max_examples=SERVER_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["mutated", "foreign", "version"]),
            st.sampled_from(["GET", "POST"]),
            body_parts.map(lambda ps: "\x1e".join(ps).encode() or b"6"),
        ),
        min_size=1,
        max_size=5,
    ),
    st.data(),
)
def test_a_session_is_never_reachable_by_another_client(
    attempts: list[tuple[str, str, bytes]], data: st.DataObject
) -> None:
    """Guessed (mutated) session ids, a real id from another address, a real id with the
    other Engine.IO version: always 'Session ID unknown', and the session is untouched."""

    async def run() -> None:
        async with run_prophit(prophit_max_payload=MAX_PAYLOAD) as p:
            url = await _open(p, 4)
            sid = url.rsplit("=", 1)[1]
            sessions = p.gw.runner.app[SOCKETIO_KEY].sessions
            conn = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
            async with aiohttp.ClientSession(connector=conn) as other:
                for how, method, body in attempts:
                    client = p.gw.session
                    query = {"EIO": "4", "transport": "polling", "sid": sid}
                    if how == "foreign":
                        client = other
                    elif how == "version":
                        query["EIO"] = "3"
                    else:
                        guess = mutate(sid, data)
                        query["sid"] = guess if guess != sid else sid[:-1]
                    base = p.http + "/socket.io/"
                    async with client.request(method, base, params=query, data=body) as r:
                        status, text = r.status, await r.text()
                    assert status == 400, (how, status, text)
                    assert json.loads(text)["code"] == 1, (how, text)
            assert sid in sessions and sessions[sid].errors == 0
            async with p.gw.session.post(url, data=b"2probe") as r:
                assert r.status == 200
            status, _, packets = await _poll(p.gw.session, url)
            assert status == 200 and packets == ["3probe"], packets

    asyncio.run(run())

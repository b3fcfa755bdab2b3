"""Property tests of the Engine.IO 3/4 and Socket.IO codec (``dialects/socketio.py``) and of
the Socket.IO server's packet handling (the fuzz harness of tests/test_fuzz.py, for the
Market Prophit dialect).

Each asserts: no exception but :class:`PacketError` escapes a parser, every refusal has
a documented code, what the encoders write the parsers read back unchanged, and a server
session fed any garbage still answers a valid packet (or has closed with the documented
error) while another client's session is untouched. Bounded in ``make test``;
``TICKWIRE_DEEP=1`` runs many more examples (profile in conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickwire.dialects.socketio import (
    EioType,
    PacketError,
    SioType,
    decode_payload,
    encode_payload,
    parse_eio,
    parse_sio,
    sio_packet,
)

from .prophitkit import Prophit, run_prophit

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: The Socket.IO error codes docs/dialects.md lists ("… and over Socket.IO `…` 400").
_listed = (DOCS / "dialects.md").read_text().split("and over Socket.IO", 1)[1].split("###")[0]
SIO_CODES = set(re.findall(r"`([a-z_]+)`", _listed))
#: What the payload and packet parsers may refuse with.
PAYLOAD_CODES = {"bad_payload"}
PACKET_CODES = {"bad_packet", "binary_not_supported", "bad_json", "frame_too_large"}

json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
#: Packet text as a client could write it: any Unicode, astral planes included.
packet_text = st.text(min_size=1, max_size=60)


def test_the_documented_codes_cover_the_parsers() -> None:
    assert PACKET_CODES <= SIO_CODES


@given(st.text(max_size=80))
def test_engineio_packets_parse_or_are_refused_with_a_code(text: str) -> None:
    try:
        packet = parse_eio(text)
    except PacketError as exc:
        assert exc.code in {"bad_packet", "binary_not_supported"}, exc.code
        assert exc.message
    else:
        assert packet.type == EioType(int(text[0])) and packet.data == text[1:]


@given(st.binary(max_size=200), st.sampled_from([3, 4]))
def test_polling_bodies_decode_or_are_refused_with_a_code(body: bytes, eio: int) -> None:
    try:
        packets = decode_payload(body, eio)
    except PacketError as exc:
        assert exc.code in PAYLOAD_CODES, exc.code
    else:
        assert all(isinstance(p, str) for p in packets)
        if eio == 3:
            assert all(packets), "EIO3 packets are never empty"


@given(st.lists(packet_text, min_size=1, max_size=8), st.sampled_from([3, 4]))
def test_polling_payloads_round_trip(packets: list[str], eio: int) -> None:
    if eio == 4:  # the record separator cannot occur inside an EIO4 packet
        packets = [p.replace("\x1e", "") or "6" for p in packets]
    body = encode_payload([p.encode() for p in packets], eio)
    assert decode_payload(body, eio) == packets


@given(st.binary(max_size=120), st.sampled_from([3, 4]))
def test_mutated_payloads_never_escape(noise: bytes, eio: int) -> None:
    body = encode_payload([b'42["subscribe",{"path":"/real-time/crowd-sentiment"}]'], eio)
    for cut in (noise[:1], noise):  # prefixed, and spliced in the middle
        for mutated in (cut + body, body[:5] + cut + body[5:], body + cut):
            try:
                decode_payload(mutated, eio)
            except PacketError as exc:
                assert exc.code in PAYLOAD_CODES


@given(st.text(max_size=120), st.integers(16, 4096))
def test_socketio_packets_parse_or_are_refused_with_a_code(text: str, limit: int) -> None:
    try:
        packet = parse_sio(text, max_bytes=limit)
    except PacketError as exc:
        assert exc.code in PACKET_CODES, exc.code
    else:
        assert packet.type == SioType(int(text[0]))
        assert packet.ack is None or 0 <= packet.ack < 2**53


@given(
    st.sampled_from([SioType.CONNECT, SioType.DISCONNECT, SioType.EVENT, SioType.ACK]),
    json_value,
    st.none() | st.integers(0, 2**53 - 1),
    st.sampled_from(["/", "/admin", "/a-b_c"]),
)
def test_socketio_packets_round_trip(
    kind: SioType, data: Any, ack: int | None, namespace: str
) -> None:
    # the protocol's data shapes: an event or ack carries an array, a connect an object
    # (a bare number after the type would read as an ack id: no client sends one)
    if kind in (SioType.EVENT, SioType.ACK) and not isinstance(data, list):
        data = [data]
    elif kind == SioType.CONNECT and not isinstance(data, dict):
        data = None if data is None else {"auth": data}
    elif kind == SioType.DISCONNECT:
        data = None
    text = sio_packet(kind, data, ack=ack, namespace=namespace).decode()
    assert text[0] == "4"
    packet = parse_sio(text[1:], max_bytes=1 << 20)
    assert (packet.type, packet.namespace, packet.ack) == (kind, namespace, ack)
    assert packet.data == data


@given(st.binary(min_size=1, max_size=40), st.integers(0, 60))
def test_mutated_socketio_packets_never_escape(noise: bytes, at: int) -> None:
    valid = '2["subscribe",{"path":"/real-time/crowd-sentiment","params":{"ticker":"AAPL"}}]'
    text = noise.decode("utf-8", "replace")
    for mutated in (valid[:at] + text + valid[at:], valid[:at] + text, text + valid):
        try:
            parse_sio(mutated, max_bytes=1024)
        except PacketError as exc:
            assert exc.code in PACKET_CODES, exc.code


# -- the server: a session fed garbage -------------------------------------------------------

garbage_packet = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["4", "40", "42", "43", "45", "4/x,", "2probe", "5", "7", "b4AAA"]).map(
        lambda head: head + "[1,"
    ),
    st.builds(lambda d: "42" + json.dumps(d), json_value),
)


async def _open(p: Prophit, eio: int) -> tuple[str, str]:
    url = p.http + f"/socket.io/?EIO={eio}&transport=polling&token={p.token}"
    async with p.gw.session.get(url) as r:
        body = await r.text()
    assert r.status == 200, body
    sid: str = json.loads(body[body.index("{") : body.index("}") + 1])["sid"]
    return sid, p.http + f"/socket.io/?EIO={eio}&transport=polling&sid={sid}"


async def _connect(p: Prophit, eio: int) -> str:
    """A connected session's polling URL (Engine.IO 3 connects "/" by itself)."""
    _, url = await _open(p, eio)
    if eio == 4:
        async with p.gw.session.post(url, data=b"40") as r:
            assert r.status == 200
    async with p.gw.session.get(url) as r:
        assert "40" in await r.text()
    return url


@settings(max_examples=8, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(garbage_packet, min_size=1, max_size=10), st.sampled_from([3, 4]))
def test_a_session_fed_garbage_still_works_and_others_are_untouched(
    packets: list[str], eio: int
) -> None:
    async def run() -> None:
        async with run_prophit(prophit_max_payload=4096) as p:
            s = p.gw.session
            # Engine.IO 3 (the client pings)
            bystander = await _connect(p, 3)
            url = await _connect(p, eio)
            body = encode_payload([t.encode() for t in packets if t] or [b"6"], eio)
            async with s.post(url, data=body) as r:
                assert r.status in (200, 400), r.status
                if r.status == 400:  # refused whole: the engine.io error shape
                    answer = await r.json()
                    assert set(answer) == {"code", "message"} and answer["message"]
            # the session still answers a valid event, or it ended with an error it sent
            async with s.post(url, data=encode_payload([b'42["unsubscribe",{}]'], eio)) as r:
                alive = r.status == 200
            if alive:
                async with s.get(url) as r:
                    text = await r.text()
                assert r.status == 200
                errors = re.findall(r'"code":"([a-z_]+)"', text)
                assert set(errors) <= SIO_CODES | {"unauthorized", "bad_params"}, errors
            # the bystander's session saw none of it: a ping gets its pong, and only that
            async with s.post(bystander, data=b"1:2") as r:
                assert r.status == 200
            async with s.get(bystander) as r:
                assert await r.text() == "1:3"

    asyncio.run(run())

"""Fuzzing the native parser: random and mutated frames. Nothing but ProtocolError
escapes ``parse``, every refusal carries a documented code, and a valid request still
parses after any number of invalid ones (``make test-deep`` runs many more examples)."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickwire.dialects import native
from tickwire.dialects.base import Command, Subscribe
from tickwire.dialects.errors import ERROR_CODES, ProtocolError

DEEP = os.environ.get("TICKWIRE_DEEP", "") not in ("", "0")
FUZZ = settings(
    max_examples=20_000 if DEEP else 150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

VALID: list[dict[str, Any]] = [
    {"id": 1, "op": "subscribe", "channels": ["trades:BTC-USD", "book:ETH-USD"]},
    {
        "id": "a",
        "op": "subscribe",
        "channels": [{"channel": "book:BTC-USD", "since": {"epoch": "abcd1234", "seq": 7}}],
    },
    {"id": 2, "op": "unsubscribe", "channels": ["candles:BTC-USD:1m"]},
    {"op": "ping"},
    {"id": 3, "op": "auth", "token": "x" * 40},
    {"id": 4, "op": "refresh", "token": "y"},
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def parse_or_refuse(frame: str | bytes) -> Command | None:
    try:
        return native.parse(frame)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES, exc.code
        assert exc.message
        return None


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_random_frames_are_parsed_or_refused_with_a_code(frame: str | bytes) -> None:
    parse_or_refuse(frame)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["id", "op", "channels", "token", "since", "x"]), json_values, max_size=5
    )
)
def test_random_objects_are_parsed_or_refused_with_a_code(msg: dict[str, Any]) -> None:
    if "op" not in msg or not isinstance(msg.get("op"), str):
        msg["op"] = "subscribe"
    parse_or_refuse(json.dumps(msg))


@FUZZ
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_mutated_frames_are_parsed_or_refused_and_valid_ones_still_parse(
    msg: dict[str, Any], mutations: list[tuple[int, int]]
) -> None:
    frame = bytearray(json.dumps(msg).encode())
    for where, byte in mutations:
        frame[where % len(frame)] = byte
    parse_or_refuse(bytes(frame))
    # after any invalid frame, a valid one is still understood
    assert isinstance(native.parse(json.dumps(VALID[0])), Subscribe)

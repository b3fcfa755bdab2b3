"""The synthetic benchmark publisher: its spec and what it publishes."""

from __future__ import annotations

import msgspec
import pytest

from tests.conftest import Recorder
from tickwire.engine import MemoryEngine
from tickwire.ingest.synthetic import (
    SyntheticPublisher,
    SyntheticSpecError,
    message,
    parse_synthetic,
)


def test_spec_with_defaults() -> None:
    [s] = parse_synthetic("channel=trades:BENCH,rate=1000")
    assert s.channels == ("trades:BENCH",)
    assert (s.rate, s.batch, s.size) == (1000.0, 1, 150)
    assert s.interval == pytest.approx(0.001)


def test_spec_many_streams_and_channels() -> None:
    a, b = parse_synthetic("channel=trades:P{i},count=3,rate=30,batch=3 ; channel=book:M,rate=5")
    assert a.channels == ("trades:P0", "trades:P1", "trades:P2")
    assert a.stateful == (False, False, False)
    assert a.interval == pytest.approx(0.1)
    assert b.stateful == (True,)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("rate=10", "channel"),
        ("channel=trades:X", "rate"),
        ("channel=trades:X,rate=fast", "rate"),
        ("channel=trades:X,rate=0", "rate"),
        ("channel=trades:X,rate=10,size=1", "size"),
        ("channel=trades:X,rate=10,colour=red", "colour"),
        ("channel=trades:X,count=2,rate=10", "{i}"),
        ("channel=nope:X,rate=10", "channel"),
        ("", "no stream"),
    ],
)
def test_bad_specs_name_the_field(spec: str, field: str) -> None:
    with pytest.raises(SyntheticSpecError, match=field.replace("{", r"\{").replace("}", r"\}")):
        parse_synthetic(spec)


def test_message_has_the_asked_size_and_the_send_time() -> None:
    data = message(1712345678901234, 7, 150)
    assert len(data) == 150
    assert msgspec.json.decode(data)["bt"] == 1712345678901234
    assert msgspec.json.decode(message(1, 2, 32)) == {"bt": 1, "n": 2, "pad": "x" * 9}
    # heads of different lengths in turn (their padding is built once per length)
    for n in (7, 70_000, 7, 123_456_789, 70_000):
        data = message(1712345678901234, n, 150)
        assert len(data) == 150 and msgspec.json.decode(data)["n"] == n
    assert msgspec.json.decode(message(1712345678901234, 7, 32))["pad"] == ""  # no room


async def test_publishes_batches_round_robin_through_the_engine() -> None:
    engine = MemoryEngine()
    rec = Recorder()
    await engine.start(rec)
    await engine.subscribe(["trades:P0", "trades:P1", "book:B"])
    spec = "channel=trades:P{i},count=2,rate=4000,batch=4,size=64;channel=book:B,rate=1000"
    pub = SyntheticPublisher(engine, parse_synthetic(spec))
    pub.start()
    try:
        await rec.wait(lambda: sum(p.channel == "book:B" for p in rec.pubs) >= 3)
        await rec.wait(lambda: sum(p.channel != "book:B" for p in rec.pubs) >= 8)
    finally:
        await pub.close()
    trades = [p for p in rec.pubs if p.channel != "book:B"]
    # round-robin: each batch of 4 alternates P0, P1
    assert [p.channel for p in trades[:4]] == ["trades:P0", "trades:P1"] * 2
    first = msgspec.json.decode(trades[0].data)
    assert len(bytes(trades[0].data)) == 64
    assert abs(first["bt"] // 1000 - trades[0].ts) <= 1
    snap = await engine.snapshot("book:B")
    assert snap is not None and snap.seq >= 3
    assert pub.published >= 11
    await engine.close()


async def test_serve_with_synthetic_publishes_to_native_clients() -> None:
    from tests.harness import run_gateway

    spec = "channel=trades:BENCH,rate=200,batch=2,size=100"
    async with run_gateway(synthetic=spec) as gw:
        assert "BENCH" in gw.node.markets
        client = await gw.connect()
        reply = await client.subscribe("trades:BENCH")
        assert reply["type"] == "subscribed"
        msg = await client.recv_type("pub")
        assert msg["channel"] == "trades:BENCH"
        assert msg["data"]["bt"] // 1000 <= msg["ts"] + 1
        await client.close()


def test_bad_synthetic_config_names_the_field() -> None:
    from tickwire.server.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"synthetic.*rate"):
        load_config({"synthetic": "channel=trades:X"}, env={})

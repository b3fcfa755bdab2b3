"""A subscribe request is all or nothing: when one channel's engine call fails, no
channel of the request leaves a trace (no pending entry, no engine membership, nothing
buffered), and a channel the connection already had goes on without a gap."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from tickwire.engine import EngineUnavailable, MemoryEngine

from .harness import run_gateway


@pytest.fixture
def eth_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine refuses to subscribe ETH-USD channels; others take a round trip."""
    subscribe = MemoryEngine.subscribe

    async def split(self: MemoryEngine, channels: Iterable[str]) -> None:
        names = list(channels)
        if any("ETH-USD" in name for name in names):
            raise EngineUnavailable("redis at 10.0.0.1 is unreachable")
        for _ in range(3):
            await asyncio.sleep(0)
        await subscribe(self, names)

    monkeypatch.setattr(MemoryEngine, "subscribe", split)


@pytest.mark.usefixtures("eth_unreachable")
async def test_a_failed_subscribe_leaves_no_trace() -> None:
    async with run_gateway() as gw:
        c = await gw.connect()
        reply = await c.subscribe("trades:BTC-USD", "book:BTC-USD", "trades:ETH-USD")
        assert reply["type"] == "error" and reply["code"] == "unavailable"
        assert "10.0.0.1" not in reply["message"]
        hub = gw.node.hub
        (conn,) = hub.connections
        assert conn.channels == set()
        pong = await c.request("ping")  # let the spawned membership changes run
        assert pong["type"] == "pong"
        assert hub.channel_count == 0 and hub.subscription_count() == 0
        engine = gw.node.engine
        assert isinstance(engine, MemoryEngine) and engine.subscribed == frozenset()
        for i in range(5):  # buffered for nobody
            await gw.publish("trades:BTC-USD", {"i": i})
        assert hub.channel_position("trades:BTC-USD") is None


@pytest.mark.usefixtures("eth_unreachable")
async def test_a_failed_resubscribe_keeps_the_live_channel_without_a_gap() -> None:
    async with run_gateway() as gw:
        c = await gw.connect()
        await c.subscribe("trades:BTC-USD")
        await gw.publish("trades:BTC-USD", {"i": 1})
        assert (await c.recv_type("pub"))["seq"] == 1
        await c.send({"id": 9, "op": "subscribe", "channels": ["trades:BTC-USD", "trades:ETH-USD"]})
        await gw.publish("trades:BTC-USD", {"i": 2})  # while the request is in flight
        error = await c.recv_type("error", "pub")
        seqs = []
        if error["type"] == "pub":
            seqs.append(error["seq"])
            error = await c.recv_type("error")
        assert error["code"] == "unavailable"
        await gw.publish("trades:BTC-USD", {"i": 3})
        while len(seqs) < 2:
            seqs.append((await c.recv_type("pub"))["seq"])
        assert seqs == [2, 3]
        (conn,) = gw.node.hub.connections
        assert conn.channels == {"trades:BTC-USD"}

"""Catch-up within the client's byte cap.

A recovery whose replay would not fit the connection's cap used to be sent anyway, and
the client was cut as slow (3008) — on every retry, since its ``since`` only got older.
Beyond the replay budget (half the cap) the hub answers the dialect's explicit resync:
``recovered: false``, with a snapshot for state channels. And live publications
buffered for a subscriber while its catch-up is read count against the same cap.
"""

from __future__ import annotations

import asyncio
import json

from tickwire.dialects.base import Handshake
from tickwire.dialects.core import ConnectionCore
from tickwire.dialects.native import NATIVE, Native
from tickwire.engine import HistorySettings, MemoryEngine
from tickwire.hub import Hub
from tickwire.hub.connection import CLOSE_SLOW
from tickwire.model import Position

from .test_hub import MemoryTransport, next_iteration
from .test_hub_reset_race import HeldEngine
from .test_hub_state_machine import Services

CAP = 64 * 1024
BODY = json.dumps({"pad": "x" * 200}).encode()  # ~300 bytes a frame


async def settle() -> None:
    for _ in range(4):
        await next_iteration()


async def filled(n: int, channel: str, snapshot_every: int = 0) -> tuple[MemoryEngine, Hub]:
    engine = MemoryEngine(HistorySettings(size=10_000, ttl=600))
    hub = Hub(engine)
    await engine.start(hub)
    for i in range(1, n + 1):
        snap = b'{"s":%d}' % i if snapshot_every and i % snapshot_every == 0 else None
        engine.publish_now(channel, BODY, snapshot=snap)
    return engine, hub


async def test_replay_over_the_budget_answers_recovered_false_instead_of_a_cut() -> None:
    engine, hub = await filled(1000, "trades:X")  # ~300 KB of history, cap 64 KiB
    try:
        epoch = (await engine.position("trades:X")).epoch
        t = MemoryTransport()
        conn = hub.connect(t, NATIVE, CAP)
        catchup = await hub.subscribe(conn, "trades:X", False, Position(epoch, 0))
        assert catchup.recovered is False and catchup.replay == []
        assert catchup.position.seq == 1000
        hub.go_live(conn, catchup)
        await settle()
        assert not conn.closed  # before: the replay went out and the client was cut
        assert hub.stats.replays_over_budget == 1
        engine.publish_now("trades:X", BODY)
        await settle()
        assert [m["seq"] for m in t.messages()] == [1001]
        # a recovery that fits is still served from history
        t2 = MemoryTransport()
        conn2 = hub.connect(t2, NATIVE, CAP)
        catchup = await hub.subscribe(conn2, "trades:X", False, Position(epoch, 990))
        assert catchup.recovered is True and len(catchup.replay) == 11
        hub.go_live(conn2, catchup)
        await settle()
        assert [m["seq"] for m in t2.messages()] == list(range(991, 1002))
    finally:
        await hub.close()
        await engine.close()


async def test_state_channel_over_the_budget_starts_from_its_snapshot() -> None:
    engine, hub = await filled(1000, "book:X", snapshot_every=100)
    try:
        epoch = (await engine.position("book:X")).epoch
        t = MemoryTransport()
        conn = hub.connect(t, NATIVE, CAP)
        catchup = await hub.subscribe(conn, "book:X", True, Position(epoch, 0))
        assert catchup.recovered is False
        assert catchup.snapshot is not None and catchup.snapshot.seq == 1000
        hub.go_live(conn, catchup)
        await settle()
        assert not conn.closed
        assert [(m["type"], m["seq"]) for m in t.messages()] == [("snapshot", 1000)]
    finally:
        await hub.close()
        await engine.close()


async def test_native_reply_says_recovered_false_beyond_the_budget() -> None:
    engine, hub = await filled(1000, "trades:X")
    try:
        epoch = (await engine.position("trades:X")).epoch
        t = MemoryTransport()
        conn = hub.connect(t, NATIVE, CAP)
        services = Services(hub, asyncio.get_running_loop())
        core = ConnectionCore(services, Native(Handshake("/ws", {}, {})), conn)
        await core.open(None)
        since = {"epoch": epoch, "seq": 0}
        request = {
            "id": 1,
            "op": "subscribe",
            "channels": [{"channel": "trades:X", "since": since}],
        }
        await core.receive(json.dumps(request))
        await settle()
        replies = [m for m in t.messages() if m.get("type") == "subscribed"]
        assert replies[0]["channels"] == [
            {"channel": "trades:X", "epoch": epoch, "seq": 1000, "recovered": False}
        ]
        assert not conn.closed
        core.finish()
    finally:
        await hub.close()
        await engine.close()


async def test_publications_buffered_during_a_catchup_count_against_the_cap() -> None:
    engine = HeldEngine(HistorySettings(size=10_000, ttl=600))
    hub = Hub(engine)
    await engine.start(hub)
    try:
        ta, tb = MemoryTransport(), MemoryTransport()
        a, b = hub.connect(ta, NATIVE, 1 << 20), hub.connect(tb, NATIVE, CAP)
        hub.go_live(a, await hub.subscribe(a, "trades:X", False, None))
        gate = engine.hold("position")
        sub = asyncio.ensure_future(hub.subscribe(b, "trades:X", False, None))
        await engine.read.wait()  # b's catch-up is under way: publications are buffered
        peak = 0
        for _ in range(400):  # ~120 KB, twice b's cap
            engine.publish_now("trades:X", BODY)
            if not b.closed:
                peak = max(peak, hub.held_bytes(b))
        assert b.closed  # cut as slow, as if they had been queued
        assert tb.closing and peak <= CAP
        assert hub.stats.slow_disconnects == 1
        gate.set()
        await sub
        await settle()
        assert not a.closed and len(ta.messages()) == 400  # the other subscriber goes on
        closes = [w for w in tb.writes if w[0] == 0x88]
        assert closes and int.from_bytes(closes[-1][2:4]) == CLOSE_SLOW
    finally:
        await hub.close()
        await engine.close()

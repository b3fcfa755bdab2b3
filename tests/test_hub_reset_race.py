"""A subscribe under way while a reset moves the channel's live stream on.

The Redis state machine found it (``make test-deep``): a subscriber whose catch-up was
read before a reset of the channel (history no longer filled a gap, so the live stream
jumped from seq S to R without delivering S+1..R) went live at S, or sent its buffered
R+1 right after S: a silent gap (``1`` then ``3`` on the wire). With Redis the timing
comes by itself (pub/sub trails the store); here an engine that holds one catch-up read
makes it happen every time.
"""

from __future__ import annotations

import asyncio
import json

from tickwire.dialects.native import NATIVE
from tickwire.engine import HistorySettings, MemoryEngine
from tickwire.engine.base import HistoryResult
from tickwire.hub import Hub
from tickwire.model import Position

from .test_hub import MemoryTransport, live, next_iteration


class HeldEngine(MemoryEngine):
    """The memory engine; ``hold(name)`` makes the next ``position`` or ``history`` read
    wait, once it has read (its answer is as of the read), until the event is set."""

    def __init__(self, settings: HistorySettings) -> None:
        super().__init__(settings)
        self._gate: tuple[str, asyncio.Event] | None = None
        self.read = asyncio.Event()

    def hold(self, name: str) -> asyncio.Event:
        gate = asyncio.Event()
        self._gate = (name, gate)
        self.read.clear()
        return gate

    async def _held(self, name: str) -> None:
        if self._gate is not None and self._gate[0] == name:
            gate = self._gate[1]
            self._gate = None
            self.read.set()
            await gate.wait()

    async def position(self, channel: str) -> Position:
        pos = await super().position(channel)
        await self._held("position")
        return pos

    async def history(
        self, channel: str, since: Position, *, limit: int | None = None
    ) -> HistoryResult:
        res = await super().history(channel, since, limit=limit)
        await self._held("history")
        return res


def seqs(t: MemoryTransport) -> list[tuple[str, int]]:
    return [(m["type"], m["seq"]) for m in t.messages() if "seq" in m]


async def settle() -> None:
    for _ in range(8):
        await next_iteration()


async def jump(engine: HeldEngine, channel: str, n: int, snapshot: bool) -> None:
    """``n`` publications the node does not hear (history keeps 3), then one it hears:
    the hub cannot fill the gap and resets the channel."""
    await engine.unsubscribe([channel])
    for _ in range(n):
        engine.publish_now(channel, b"{}")
    await engine.subscribe([channel])
    engine.publish_now(channel, b"{}", snapshot=b'{"s":1}' if snapshot else None)
    await settle()


async def test_catchup_read_before_a_reset_does_not_go_live_with_a_gap() -> None:
    engine = HeldEngine(HistorySettings(size=3, ttl=60))
    hub = Hub(engine)
    await engine.start(hub)
    try:
        ta, tb = MemoryTransport(), MemoryTransport()
        a, b = hub.connect(ta, NATIVE, 1 << 20), hub.connect(tb, NATIVE, 1 << 20)
        await live(hub, a, "trades:X")
        engine.publish_now("trades:X", b"{}")  # seq 1
        gate = engine.hold("position")
        sub = asyncio.ensure_future(hub.subscribe(b, "trades:X", False, None))
        await engine.read.wait()  # b's catch-up says: seq 1
        await jump(engine, "trades:X", 9, snapshot=False)  # 2..10 unheard, 11 resets
        assert seqs(ta)[-1] == ("reset", 11)
        gate.set()
        catchup = await sub
        assert catchup.position.seq == 1
        hub.go_live(b, catchup)
        await settle()
        engine.publish_now("trades:X", b"{}")  # seq 12
        await settle()
        # b started at 1: it is told of the jump (not 1 then 12)
        assert seqs(tb) == [("reset", 11), ("pub", 12)]
        assert seqs(ta)[-2:] == [("reset", 11), ("pub", 12)]
    finally:
        await hub.close()
        await engine.close()


async def test_buffered_publication_after_a_reset_is_not_sent_across_the_hole() -> None:
    engine = HeldEngine(HistorySettings(size=3, ttl=60))
    hub = Hub(engine)
    await engine.start(hub)
    try:
        ta, tb = MemoryTransport(), MemoryTransport()
        a, b = hub.connect(ta, NATIVE, 1 << 20), hub.connect(tb, NATIVE, 1 << 20)
        engine.publish_now("book:X", b"{}", snapshot=b'{"s":1}')  # seq 1
        await live(hub, a, "book:X", stateful=True)
        gate = engine.hold("history")
        sub = asyncio.ensure_future(hub.subscribe(b, "book:X", True, None))
        await engine.read.wait()  # b's catch-up: snapshot 1, history reaches it
        await jump(engine, "book:X", 9, snapshot=True)  # 2..10 unheard, 11 resets
        engine.publish_now("book:X", b'{"v":12}', snapshot=b'{"s":12}')  # buffered for b
        await settle()
        gate.set()
        catchup = await sub
        assert catchup.snapshot is not None and catchup.snapshot.seq == 1
        hub.go_live(b, catchup)
        await settle()
        engine.publish_now("book:X", b'{"v":13}')
        await settle()
        # snapshot 1, then a reset and snapshot 12: never snapshot 1 then pub 12
        assert seqs(tb) == [("snapshot", 1), ("reset", 12), ("snapshot", 12), ("pub", 13)]
        snap = [m for m in tb.messages() if m["type"] == "snapshot"][-1]
        assert snap["data"] == json.loads(b'{"s":12}')
    finally:
        await hub.close()
        await engine.close()

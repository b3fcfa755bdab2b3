"""A state channel's subscriber gets snapshot S then S+1, S+2… — never a snapshot and
then a jump — also when snapshots are stored only now and then and history no longer
reaches back to the last one (every engine)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tickwire.dialects.native import NATIVE
from tickwire.engine import Engine, HistorySettings
from tickwire.hub import Hub

from .conftest import EngineFactory
from .test_hub import MemoryTransport


class WatchedTransport(MemoryTransport):
    """A memory transport one can wait on."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def write(self, data: bytes) -> None:
        super().write(data)
        self.changed.set()

    async def wait(self, cond: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        async with asyncio.timeout(5):
            while not cond(self.messages()):
                self.changed.clear()
                await self.changed.wait()
        return self.messages()


def stream(messages: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(m["type"], m["seq"]) for m in messages if m["type"] in ("snapshot", "pub")]


async def started(engine_factory: EngineFactory, size: int) -> tuple[Engine, Hub]:
    engine = engine_factory(HistorySettings(size=size, ttl=60))
    hub = Hub(engine)
    await engine.start(hub)
    return engine, hub


async def test_history_not_reaching_the_snapshot_waits_for_a_fresh_one(
    engine_factory: EngineFactory,
) -> None:
    engine, hub = await started(engine_factory, size=5)
    try:
        await engine.publish("book:X", b'{"v":1}', snapshot=b'{"s":1}')
        for i in range(2, 12):  # history keeps 7..11: it no longer reaches seq 2
            await engine.publish("book:X", b'{"v":%d}' % i)
        t = WatchedTransport()
        conn = hub.connect(t, NATIVE, 1 << 20)
        catchup = await hub.subscribe(conn, "book:X", True, None)
        hub.go_live(conn, catchup)
        assert catchup.snapshot is None  # not snapshot 1 followed by 12
        assert engine.snapshot_wanted("book:X")  # the publisher is asked for one
        await engine.publish("book:X", b'{"v":12}')  # a publisher that has not heard yet
        await engine.publish("book:X", b'{"v":13}', snapshot=b'{"s":13}')
        assert not engine.snapshot_wanted("book:X")
        await engine.publish("book:X", b'{"v":14}')
        got = await t.wait(lambda m: ("pub", 14) in stream(m))
        assert stream(got) == [("snapshot", 13), ("pub", 14)]
    finally:
        await hub.close()
        await engine.close()


async def test_snapshot_every_n_catches_up_from_snapshot_plus_history(
    engine_factory: EngineFactory,
) -> None:
    engine, hub = await started(engine_factory, size=50)
    try:
        for i in range(1, 26):  # a snapshot every 10 publications: 1, 11, 21
            snap = b'{"s":%d}' % i if i % 10 == 1 else None
            await engine.publish("book:X", b'{"v":%d}' % i, snapshot=snap)
        t = WatchedTransport()
        conn = hub.connect(t, NATIVE, 1 << 20)
        hub.go_live(conn, await hub.subscribe(conn, "book:X", True, None))
        await engine.publish("book:X", b'{"v":26}')
        got = await t.wait(lambda m: ("pub", 26) in stream(m))
        assert stream(got) == [("snapshot", 21)] + [("pub", s) for s in range(22, 27)]
        assert not engine.snapshot_wanted("book:X")
    finally:
        await hub.close()
        await engine.close()

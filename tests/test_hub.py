"""The hub with an in-memory transport: encode once, one write per iteration, gaps."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tickwire.dialects.native import NATIVE
from tickwire.engine import HistorySettings, MemoryEngine
from tickwire.hub import Connection, Hub
from tickwire.model import Position, Publication, Snapshot


class MemoryTransport:
    """Collects what the hub writes, like a socket that always accepts everything."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.aborted = True

    def messages(self) -> list[dict[str, Any]]:
        out = []
        data = b"".join(self.writes)
        while data:
            n = data[1] & 0x7F
            start = 2
            if n == 126:
                n, start = int.from_bytes(data[2:4]), 4
            elif n == 127:
                n, start = int.from_bytes(data[2:10]), 10
            if data[0] == 0x81:
                out.append(json.loads(data[start : start + n]))
            data = data[start + n :]
        return out


class CountingFormat:
    name = "counting"
    compressed = False

    @property
    def base(self) -> CountingFormat:
        return self

    def __init__(self) -> None:
        self.encoded = 0

    def pub(self, pub: Publication) -> bytes:
        self.encoded += 1
        return NATIVE.pub(pub)

    def snapshot(self, snap: Snapshot) -> bytes:
        return NATIVE.snapshot(snap)

    def reset(self, channel: str, position: Position) -> bytes:
        return NATIVE.reset(channel, position)


async def setup(size: int = 100) -> tuple[MemoryEngine, Hub]:
    engine = MemoryEngine(HistorySettings(size=size, ttl=60))
    hub = Hub(engine)
    await engine.start(hub)
    return engine, hub


async def live(hub: Hub, conn: Connection, channel: str, stateful: bool = False) -> None:
    hub.go_live(conn, await hub.subscribe(conn, channel, stateful, None))


async def next_iteration() -> None:
    """Let the loop run the flush scheduled for this iteration."""
    fut = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(fut.set_result, None)
    await fut
    await asyncio.sleep(0)


async def test_encode_once_per_format_and_one_write_per_iteration() -> None:
    engine, hub = await setup()
    fmt = CountingFormat()
    transports = [MemoryTransport() for _ in range(3)]
    conns = [hub.connect(t, fmt, 1 << 20) for t in transports]
    for conn in conns:
        await live(hub, conn, "trades:X")
    await next_iteration()
    for t in transports:
        t.writes.clear()
    for i in range(10):
        engine.publish_now("trades:X", json.dumps({"i": i}).encode())
    assert fmt.encoded == 10  # not 30
    assert all(t.writes == [] for t in transports)  # nothing written mid-iteration
    await next_iteration()
    for t in transports:
        assert len(t.writes) == 1  # ten frames, one write
        assert [m["seq"] for m in t.messages()] == list(range(1, 11))
    assert hub.stats.writes == 3


async def test_gap_is_recovered_from_history() -> None:
    engine, hub = await setup()
    t = MemoryTransport()
    conn = hub.connect(t, NATIVE, 1 << 20)
    await live(hub, conn, "trades:X")
    engine.publish_now("trades:X", b"1")
    await engine.unsubscribe(["trades:X"])  # the node stops hearing the channel...
    for i in range(2, 5):
        engine.publish_now("trades:X", str(i).encode())
    await engine.subscribe(["trades:X"])  # ...and hears it again: seq 5 arrives after 1
    engine.publish_now("trades:X", b"5")
    for _ in range(5):
        await next_iteration()
    assert [m["seq"] for m in t.messages()] == [1, 2, 3, 4, 5]
    assert hub.stats.gaps_recovered == 1


async def test_resync_recovers_without_a_new_publication() -> None:
    engine, hub = await setup()
    t = MemoryTransport()
    conn = hub.connect(t, NATIVE, 1 << 20)
    await live(hub, conn, "trades:X")
    await engine.unsubscribe(["trades:X"])
    engine.publish_now("trades:X", b"1")
    engine.publish_now("trades:X", b"2")
    await engine.subscribe(["trades:X"])
    hub.on_resync()
    for _ in range(5):
        await next_iteration()
    assert [m["seq"] for m in t.messages()] == [1, 2]


async def test_unrecoverable_gap_resets_with_snapshot() -> None:
    engine, hub = await setup(size=3)
    t = MemoryTransport()
    conn = hub.connect(t, NATIVE, 1 << 20)
    engine.publish_now("book:X", b"{}", snapshot=b'{"v":0}')
    await live(hub, conn, "book:X", stateful=True)
    await engine.unsubscribe(["book:X"])
    for i in range(1, 10):
        engine.publish_now("book:X", b"{}", snapshot=json.dumps({"v": i}).encode())
    await engine.subscribe(["book:X"])
    engine.publish_now("book:X", b"{}", snapshot=b'{"v":10}')
    for _ in range(5):
        await next_iteration()
    msgs = t.messages()
    assert [m["type"] for m in msgs] == ["snapshot", "reset", "snapshot"]
    assert msgs[1]["seq"] == 11 and msgs[2]["seq"] == 11 and msgs[2]["data"] == {"v": 10}
    assert hub.stats.resets == 1
    engine.publish_now("book:X", b"{}", snapshot=b'{"v":11}')
    await next_iteration()
    assert t.messages()[-1]["seq"] == 12


async def test_publications_during_catchup_are_buffered_not_lost() -> None:
    engine, hub = await setup()
    t = MemoryTransport()
    conn = hub.connect(t, NATIVE, 1 << 20)
    for i in range(3):
        engine.publish_now("trades:X", str(i).encode())
    catchup = await hub.subscribe(
        conn, "trades:X", False, Position((await engine.position("trades:X")).epoch, 1)
    )
    # published after the catch-up was read, before the client went live
    engine.publish_now("trades:X", b"3")
    engine.publish_now("trades:X", b"4")
    hub.go_live(conn, catchup)
    engine.publish_now("trades:X", b"5")
    await next_iteration()
    assert [m["seq"] for m in t.messages()] == [2, 3, 4, 5, 6]


async def test_last_subscriber_leaving_releases_the_engine_channel() -> None:
    engine, hub = await setup()
    t = MemoryTransport()
    conn = hub.connect(t, NATIVE, 1 << 20)
    await live(hub, conn, "trades:X")
    assert "trades:X" in engine._subscribed
    hub.disconnect(conn)
    await next_iteration()
    assert hub.channel_count == 0
    assert "trades:X" not in engine._subscribed
    assert hub.connections == set()


async def test_state_channel_without_snapshot_holds_subscriber_until_one_exists() -> None:
    engine, hub = await setup()
    t = MemoryTransport()
    conn = hub.connect(t, NATIVE, 1 << 20)
    catchup = await hub.subscribe(conn, "book:X", True, None)
    assert catchup.snapshot is None and catchup.position.seq == 0
    hub.go_live(conn, catchup)
    await next_iteration()
    assert t.messages() == []  # nothing to start from yet
    engine.publish_now("book:X", b'{"delta":1}', snapshot=b'{"state":1}')
    engine.publish_now("book:X", b'{"delta":2}', snapshot=b'{"state":2}')
    for _ in range(3):
        await next_iteration()
    engine.publish_now("book:X", b'{"delta":3}', snapshot=b'{"state":3}')
    await next_iteration()
    msgs = t.messages()
    assert msgs[0]["type"] == "snapshot" and msgs[0]["seq"] == 2 and msgs[0]["data"] == {"state": 2}
    assert [(m["type"], m["seq"]) for m in msgs[1:]] == [("pub", 3)]


async def test_reset_before_any_new_state_sends_snapshot_with_first_publication() -> None:
    engine, hub = await setup()
    t = MemoryTransport()
    conn = hub.connect(t, NATIVE, 1 << 20)
    engine.publish_now("book:X", b"{}", snapshot=b'{"v":0}')
    await live(hub, conn, "book:X", stateful=True)
    # the engine loses the channel (as Redis losing its data): a new epoch, no state yet
    del engine._streams["book:X"]
    hub.on_resync()
    for _ in range(3):
        await next_iteration()
    assert [m["type"] for m in t.messages()] == ["snapshot", "reset"]
    engine.publish_now("book:X", b'{"d":1}', snapshot=b'{"v":1}')
    for _ in range(3):
        await next_iteration()
    msgs = t.messages()
    assert [m["type"] for m in msgs] == ["snapshot", "reset", "snapshot"]
    assert msgs[1]["epoch"] == msgs[2]["epoch"] != msgs[0]["epoch"]
    assert msgs[2]["seq"] == 1 and msgs[2]["data"] == {"v": 1}

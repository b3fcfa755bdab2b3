"""Per-channel batches: a channel's frames of one iteration are joined once and shared;
order per connection, caps and numbering hold as with frame-by-frame queues."""

from __future__ import annotations

import json

from tickwire.dialects.native import NATIVE
from tickwire.hub import CLOSE_SLOW, Numbered
from tickwire.hub.batch import Batch

from .test_coinbase_hub import FMT as COINBASE
from .test_coinbase_hub import TRADE, frames
from .test_hub import MemoryTransport, live, next_iteration, setup


class BufferedTransport(MemoryTransport):
    """A socket whose kernel buffer holds ``unsent`` bytes the client has not read."""

    def __init__(self, unsent: int) -> None:
        super().__init__()
        self.unsent = unsent

    def get_write_buffer_size(self) -> int:
        return self.unsent


def payload(i: int) -> bytes:
    return json.dumps({"i": i, "pad": "x" * 100}).encode()


async def test_one_channel_is_joined_once_and_the_same_bytes_go_to_every_subscriber() -> None:
    engine, hub = await setup()
    ts = [MemoryTransport() for _ in range(50)]
    conns = [hub.connect(t, NATIVE, 1 << 20) for t in ts]
    for conn in conns:
        await live(hub, conn, "trades:X")
    await next_iteration()
    for t in ts:
        t.writes.clear()
    for i in range(20):
        engine.publish_now("trades:X", payload(i))
    assert all(not conn.queue or len(conn.queue) == 1 for conn in conns)  # one slice each
    assert all(isinstance(conn.queue[0], Batch) for conn in conns)
    await next_iteration()
    first = ts[0].writes[0]
    for t in ts:
        assert len(t.writes) == 1
        assert t.writes[0] is first  # one join, shared
        assert [m["seq"] for m in t.messages()] == list(range(1, 21))
        assert [m["data"]["i"] for m in t.messages()] == list(range(20))
    assert hub.stats.frames_out >= 20 * 50


async def test_frames_of_its_own_between_a_channels_frames_keep_their_place() -> None:
    engine, hub = await setup()
    ta, tb = MemoryTransport(), MemoryTransport()
    a, b = hub.connect(ta, NATIVE, 1 << 20), hub.connect(tb, NATIVE, 1 << 20)
    for conn in (a, b):
        await live(hub, conn, "trades:X")
    await next_iteration()
    ta.writes.clear()
    tb.writes.clear()
    engine.publish_now("trades:X", payload(0))
    engine.publish_now("trades:X", payload(1))
    hub.send(a, b'{"type":"pong","id":9}')
    engine.publish_now("trades:X", payload(2))
    engine.publish_now("trades:X", payload(3))
    await next_iteration()
    assert [m.get("seq", m["type"]) for m in ta.messages()] == [1, 2, "pong", 3, 4]
    assert [m["seq"] for m in tb.messages()] == [1, 2, 3, 4]
    assert len(ta.writes) == 1 and len(tb.writes) == 1


async def test_interleaved_channels_arrive_in_the_order_they_were_published() -> None:
    engine, hub = await setup()
    both_t, only_t = MemoryTransport(), MemoryTransport()
    both = hub.connect(both_t, NATIVE, 1 << 20)
    only = hub.connect(only_t, NATIVE, 1 << 20)
    await live(hub, both, "trades:A")
    await live(hub, both, "trades:B")
    await live(hub, only, "trades:A")
    await next_iteration()
    both_t.writes.clear()
    only_t.writes.clear()
    for i in range(3):
        engine.publish_now("trades:A", payload(i))
        engine.publish_now("trades:B", payload(i))
    await next_iteration()
    got = [(m["channel"], m["seq"]) for m in both_t.messages()]
    assert got == [(c, s) for s in (1, 2, 3) for c in ("trades:A", "trades:B")]
    assert [m["seq"] for m in only_t.messages()] == [1, 2, 3]
    assert len(both_t.writes) == 1


async def test_a_subscriber_leaving_mid_iteration_gets_what_came_before_and_nothing_after() -> None:
    engine, hub = await setup()
    ta, tb = MemoryTransport(), MemoryTransport()
    a, b = hub.connect(ta, NATIVE, 1 << 20), hub.connect(tb, NATIVE, 1 << 20)
    for conn in (a, b):
        await live(hub, conn, "trades:X")
    await next_iteration()
    ta.writes.clear()
    tb.writes.clear()
    engine.publish_now("trades:X", payload(0))
    engine.publish_now("trades:X", payload(1))
    assert hub.unsubscribe(a, "trades:X")
    engine.publish_now("trades:X", payload(2))
    await next_iteration()
    assert [m["seq"] for m in ta.messages()] == [1, 2]
    assert [m["seq"] for m in tb.messages()] == [1, 2, 3]


async def test_a_subscriber_over_its_cap_is_cut_before_anything_is_written_for_it() -> None:
    engine, hub = await setup()
    frame_bytes = 212  # one framed publication of payload(i)
    slow_t = BufferedTransport(unsent=4096 - 3 * frame_bytes - 100)
    fast_t = MemoryTransport()
    slow = hub.connect(slow_t, NATIVE, 4096)
    fast = hub.connect(fast_t, NATIVE, 4096)
    for conn in (slow, fast):
        await live(hub, conn, "trades:X")
    hub.send(slow, b'{"type":"hello"}')
    await next_iteration()  # its flush learns the socket's backlog
    assert slow.backlog == slow_t.unsent
    slow_t.writes.clear()
    fast_t.writes.clear()
    held: list[int] = []
    for i in range(10):
        engine.publish_now("trades:X", payload(i))
        if not slow.closed:
            held.append(slow.queued + slow.backlog)
    assert slow.closed and not fast.closed
    assert held and max(held) <= slow.cap  # never held over its cap while open
    assert len(held) == 3  # cut at the fourth frame of the iteration
    assert hub.stats.slow_disconnects == 1
    await next_iteration()
    [closing] = frames(slow_t)  # no publication: only the close frame
    assert closing[0] == 0x88 and int.from_bytes(closing[1][:2]) == CLOSE_SLOW
    assert [m["seq"] for m in fast_t.messages()] == list(range(1, 11))


async def test_the_cap_check_runs_per_iteration_not_per_frame() -> None:
    engine, hub = await setup()
    ts = [MemoryTransport() for _ in range(5)]
    conns = [hub.connect(t, NATIVE, 1 << 20) for t in ts]
    for conn in conns:
        await live(hub, conn, "trades:X")
    await next_iteration()
    checks = 0
    real = type(conns[0]).over_cap

    def counting(self: object, batch: Batch) -> bool:
        nonlocal checks
        checks += 1
        return real(self, batch)  # type: ignore[arg-type]

    type(conns[0]).over_cap = counting  # type: ignore[method-assign]
    try:
        for i in range(100):
            engine.publish_now("trades:X", payload(i))
    finally:
        type(conns[0]).over_cap = real  # type: ignore[method-assign]
    assert checks == 0  # far under every cap: nobody is checked one by one
    assert all(conn.queued > 100 * 150 for conn in conns)  # yet the bytes are counted
    await next_iteration()
    assert all(len(m) == 100 for m in (t.messages()[-100:] for t in ts))


async def test_numbered_subscribers_keep_consecutive_numbers_across_batch_and_replies() -> None:
    engine, hub = await setup()
    ta, tb = MemoryTransport(), MemoryTransport()
    a, b = hub.connect(ta, COINBASE, 1 << 20), hub.connect(tb, COINBASE, 1 << 20)
    for conn in (a, b):
        await live(hub, conn, "trades:BTC-USD")
    await next_iteration()
    ta.writes.clear()
    tb.writes.clear()
    engine.publish_now("trades:BTC-USD", TRADE)
    engine.publish_now("trades:BTC-USD", TRADE)
    hub.send(a, Numbered(b'"channel":"heartbeats","events":[]}', b'{"sequence_num":%d,'))
    engine.publish_now("trades:BTC-USD", TRADE)
    await next_iteration()
    numbers_a = [(m["sequence_num"], m["channel"]) for m in ta.messages()]
    assert [n for n, _ in numbers_a] == [0, 1, 2, 3]
    assert numbers_a[2][1] == "heartbeats"
    assert [m["sequence_num"] for m in tb.messages()] == [0, 1, 2]
    # the next iteration goes on from there, shared again by subscribers at one number
    engine.publish_now("trades:BTC-USD", TRADE)
    await next_iteration()
    assert [m["sequence_num"] for m in ta.messages()][-1] == 4
    assert [m["sequence_num"] for m in tb.messages()][-1] == 3


async def test_a_connection_closed_mid_iteration_still_gets_its_batch_before_the_close() -> None:
    engine, hub = await setup()
    t = MemoryTransport()
    conn = hub.connect(t, NATIVE, 1 << 20)
    await live(hub, conn, "trades:X")
    await next_iteration()
    t.writes.clear()
    engine.publish_now("trades:X", payload(0))
    engine.publish_now("trades:X", payload(1))
    conn.close(3001)
    engine.publish_now("trades:X", payload(2))  # after the close: not for it
    await next_iteration()
    assert [m["seq"] for m in t.messages()] == [1, 2]
    assert frames(t)[-1][0] == 0x88


async def test_a_lone_subscriber_gets_its_frames_queued_as_its_own_without_a_batch() -> None:
    """One subscriber shares nothing: no batch is built for it (the many-channels cost),
    and what it gets is the same: every publication in order, in one write."""
    engine, hub = await setup()
    t = MemoryTransport()
    conn = hub.connect(t, NATIVE, 1 << 20)
    await live(hub, conn, "trades:X")
    await next_iteration()
    t.writes.clear()
    for i in range(5):
        engine.publish_now("trades:X", payload(i))
    assert len(conn.queue) == 5 and not any(isinstance(q, Batch) for q in conn.queue)
    assert conn.queued == sum(len(q) for q in conn.queue if isinstance(q, bytes))
    await next_iteration()
    assert len(t.writes) == 1
    assert [m["seq"] for m in t.messages()] == [1, 2, 3, 4, 5]
    assert [m["data"]["i"] for m in t.messages()] == list(range(5))
    engine.publish_now("trades:X", payload(5))  # a queue of one frame: written as it is
    await next_iteration()
    assert len(t.writes) == 2 and [m["seq"] for m in t.messages()][-1] == 6


async def test_a_second_subscriber_joining_a_lone_ones_channel_mid_iteration_keeps_order() -> None:
    engine, hub = await setup()
    ta, tb = MemoryTransport(), MemoryTransport()
    a, b = hub.connect(ta, NATIVE, 1 << 20), hub.connect(tb, NATIVE, 1 << 20)
    await live(hub, a, "trades:X")
    await next_iteration()
    ta.writes.clear()
    engine.publish_now("trades:X", payload(0))
    engine.publish_now("trades:X", payload(1))
    catchup = await hub.subscribe(b, "trades:X", False, None)
    hub.go_live(b, catchup)
    engine.publish_now("trades:X", payload(2))  # now shared by two: a batch again
    assert isinstance(a.queue[-1], Batch) and a.queue[-1] is b.queue[-1]
    await next_iteration()
    assert [m["seq"] for m in ta.messages()] == [1, 2, 3]
    assert [m["seq"] for m in tb.messages() if m["type"] == "pub"] == [3]


async def test_a_lone_subscriber_over_its_cap_is_cut_before_anything_is_written_for_it() -> None:
    engine, hub = await setup()
    frame_bytes = 212  # one framed publication of payload(i)
    slow_t = BufferedTransport(unsent=4096 - 3 * frame_bytes - 100)
    slow = hub.connect(slow_t, NATIVE, 4096)
    await live(hub, slow, "trades:X")
    hub.send(slow, b'{"type":"hello"}')
    await next_iteration()  # its flush learns the socket's backlog
    slow_t.writes.clear()
    held: list[int] = []
    for i in range(10):
        engine.publish_now("trades:X", payload(i))
        if not slow.closed:
            held.append(slow.queued + slow.backlog)
    assert slow.closed and len(held) == 3 and max(held) <= slow.cap
    await next_iteration()
    [closing] = frames(slow_t)  # no publication: only the close frame
    assert closing[0] == 0x88 and int.from_bytes(closing[1][:2]) == CLOSE_SLOW


async def test_a_lone_numbered_subscriber_keeps_consecutive_numbers() -> None:
    engine, hub = await setup()
    t = MemoryTransport()
    conn = hub.connect(t, COINBASE, 1 << 20)
    await live(hub, conn, "trades:BTC-USD")
    await next_iteration()
    t.writes.clear()
    engine.publish_now("trades:BTC-USD", TRADE)
    hub.send(conn, Numbered(b'"channel":"heartbeats","events":[]}', b'{"sequence_num":%d,'))
    engine.publish_now("trades:BTC-USD", TRADE)
    await next_iteration()
    engine.publish_now("trades:BTC-USD", TRADE)
    await next_iteration()
    got = [(m["sequence_num"], m["channel"]) for m in t.messages()]
    assert [n for n, _ in got] == [0, 1, 2, 3]
    assert got[1][1] == "heartbeats" and got[3][1] == "market_trades"

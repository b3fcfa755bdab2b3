"""Adaptive write coalescing: a saturated hub holds its flush (at most the budget) so
each write carries more; an idle one, or one with the budget 0, never holds. The clock
that times the flushes is the test's: no timing thresholds."""

from __future__ import annotations

import asyncio

import pytest

from tickwire.dialects.native import NATIVE
from tickwire.engine import HistorySettings, MemoryEngine
from tickwire.hub import Hub
from tickwire.hub.coalesce import WriteCoalescer

from .test_hub import MemoryTransport, live, next_iteration


class Clock:
    """A monotonic clock the test moves; writes move it as a real syscall would."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CostlyTransport(MemoryTransport):
    """Every write costs ``cost`` seconds of the test's clock; ``written`` fires on one."""

    def __init__(self, clock: Clock, cost: float) -> None:
        super().__init__()
        self.clock = clock
        self.cost = cost
        self.written: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def write(self, data: bytes) -> None:
        super().write(data)
        self.clock.now += self.cost
        if not self.written.done():
            self.written.set_result(None)


def saturate(c: WriteCoalescer, duration: float, flushes: int = 10, gap: float = 0.0) -> None:
    """``flushes`` flushes of ``duration`` each, ``gap`` apart."""
    t = 0.0 if c.last_start is None else c.last_start + duration + gap
    for _ in range(flushes):
        c.flushed(t, duration)
        t += duration + gap


def test_an_idle_or_lightly_loaded_process_holds_nothing() -> None:
    c = WriteCoalescer(0.005)
    assert c.hold() == 0.0
    saturate(c, duration=0.001, gap=0.05)  # 2% of the time writing
    assert c.hold() == 0.0
    saturate(c, duration=0.004, gap=0.01)  # 29%: busy, not saturated
    assert c.hold() == 0.0


def test_a_saturated_process_holds_about_one_flush_never_more_than_the_budget() -> None:
    c = WriteCoalescer(0.005)
    saturate(c, duration=0.002, gap=0.0005)  # 80% writing
    assert c.holding
    assert 0.0 < c.hold() <= 0.002 + 1e-9  # about one flush's duration
    saturate(c, duration=0.050, gap=0.001)  # flushes of 50 ms
    assert c.hold() == 0.005  # capped at the budget


def test_holding_stops_as_soon_as_the_load_goes() -> None:
    c = WriteCoalescer(0.005)
    saturate(c, duration=0.002, gap=0.0005)
    assert c.hold() > 0
    # held flushes lower the measured share, but not below the release threshold ...
    saturate(c, duration=0.002, gap=0.002)  # 50% with the hold itself in the gap
    assert c.hold() > 0
    # ... a quiet spell does, at the first flush after it
    saturate(c, duration=0.002, gap=1.0, flushes=1)
    assert c.hold() == 0.0


def test_a_budget_of_zero_never_holds() -> None:
    c = WriteCoalescer(0.0)
    saturate(c, duration=0.010, gap=0.0)
    assert c.hold() == 0.0
    with pytest.raises(ValueError, match="max_write_delay"):
        WriteCoalescer(-0.001)


async def saturated_hub(budget: float) -> tuple[MemoryEngine, Hub, Clock, list[CostlyTransport]]:
    """A hub whose flushes take (by its clock) far longer than the time between them."""
    clock = Clock()
    engine = MemoryEngine(HistorySettings(size=100, ttl=60))
    hub = Hub(engine, max_write_delay=budget, clock=clock)
    await engine.start(hub)
    ts = [CostlyTransport(clock, 0.001) for _ in range(10)]  # 10 ms per flush
    for t in ts:
        await live(hub, hub.connect(t, NATIVE, 1 << 20), "trades:X")
    for _ in range(8):  # back-to-back flushes: ticks 1 ms apart, each flush 10 ms
        engine.publish_now("trades:X", b'{"n":1}')
        await next_iteration()
        clock.now += 0.001
    hub.flush()  # what the last ticks left held
    assert hub.coalescer.holding
    for t in ts:
        t.writes.clear()
        t.written = asyncio.get_running_loop().create_future()
    return engine, hub, clock, ts


async def test_a_saturated_hub_holds_its_flush_within_the_budget_and_each_write_carries_more() -> (
    None
):
    engine, hub, _, ts = await saturated_hub(budget=0.004)
    loop = asyncio.get_running_loop()
    engine.publish_now("trades:X", b'{"n":2}')
    due = hub.held_until
    assert due is not None  # held ...
    assert 0 < due - loop.time() <= 0.004  # ... for at most the budget
    await next_iteration()
    assert all(t.writes == [] for t in ts)  # not written at the end of the iteration
    engine.publish_now("trades:X", b'{"n":3}')  # a later iteration rides along
    await asyncio.wait_for(ts[0].written, 5)  # the held flush
    for t in ts:
        assert len(t.writes) == 1
        assert [m["data"]["n"] for m in t.messages()] == [2, 3]
    assert hub.stats.held_flushes >= 1
    assert hub.held_until is None


async def test_with_the_budget_zero_a_saturated_hub_writes_every_iteration() -> None:
    engine, hub, _, ts = await saturated_hub(budget=0.0)
    engine.publish_now("trades:X", b'{"n":2}')
    assert hub.held_until is None
    await next_iteration()
    assert all(len(t.writes) == 1 for t in ts)
    assert hub.stats.held_flushes == 0


async def test_after_a_quiet_spell_the_hub_stops_holding_at_its_first_flush() -> None:
    engine, hub, clock, ts = await saturated_hub(budget=0.004)
    clock.now += 10.0  # ten seconds without a publication
    engine.publish_now("trades:X", b'{"n":2}')
    assert hub.held_until is not None  # the load it knows of is the one before the spell
    await asyncio.wait_for(ts[0].written, 5)
    engine.publish_now("trades:X", b'{"n":3}')  # that flush measured the spell
    assert hub.held_until is None
    await next_iteration()
    assert all([m["data"]["n"] for m in t.messages()] == [2, 3] for t in ts)
    assert all(len(t.writes) == 2 for t in ts)


async def test_a_drain_flushes_held_writes_at_once() -> None:
    engine, hub, _, ts = await saturated_hub(budget=0.004)
    engine.publish_now("trades:X", b'{"n":2}')
    assert hub.held_until is not None
    hub.flush()  # what Node.drain does before closing
    assert hub.held_until is None
    assert all([m["data"]["n"] for m in t.messages()] == [2] for t in ts)


class BrokenTransport(MemoryTransport):
    """A transport that fails on write (uvloop raises on a handle already closed)."""

    def write(self, data: bytes) -> None:
        raise RuntimeError("unable to perform operation: the handler is closed")


async def test_a_client_gone_while_writes_are_held_costs_the_others_nothing() -> None:
    engine, hub, _, ts = await saturated_hub(budget=0.004)
    gone, broken = ts[0], BrokenTransport()
    victim = hub.connect(broken, NATIVE, 1 << 20)
    await live(hub, victim, "trades:X")
    engine.publish_now("trades:X", b'{"n":2}')
    assert hub.held_until is not None
    gone.closing = True  # the client went away while the flush was held
    await asyncio.wait_for(ts[1].written, 5)
    assert gone.writes == []
    assert victim.closed and broken.aborted  # the failing one is cut ...
    for t in ts[1:]:  # ... and every other one got its frames
        assert [m["data"]["n"] for m in t.messages()] == [2]

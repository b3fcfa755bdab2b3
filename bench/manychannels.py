"""The engine + hub cost of one one-subscriber publication, many channels, in one process
(no sockets: a transport that only counts bytes): what ``bench/run.py channels`` spends
on its 20,000 own-channel publications per second besides the writes.

N connections each subscribe (native format) to a channel of their own,
``trades:P<i>``; every loop iteration the synthetic publisher's tick (``--batch``
messages, round-robin over the channels, built as :mod:`tickwire.ingest.synthetic`
builds them) goes through :meth:`MemoryEngine.publish_many`, then the hub's flush
writes each connection once. Reports CPU µs per publication (best of ``--rounds``),
and with ``--profile`` the top functions of one more run.

    .venv/bin/python -m bench.manychannels [--channels 10000] [--messages 200000]
        [--batch 200] [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.profiling import print_profile
from tickwire.dialects.native import NATIVE
from tickwire.engine import HistorySettings, MemoryEngine
from tickwire.hub import Hub
from tickwire.ingest.synthetic import message


class NullTransport:
    def __init__(self) -> None:
        self.bytes = 0
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def run(channels: int, messages: int, batch: int) -> tuple[float, int, int]:
    """CPU seconds to publish ``messages`` and deliver them; bytes and writes done."""
    engine = MemoryEngine(HistorySettings())  # the server's defaults (history on)
    hub = Hub(engine, max_write_delay=0)  # no coalescing: one flush per iteration
    await engine.start(hub)
    names = [f"trades:P{i}" for i in range(channels)]
    transports = [NullTransport() for _ in range(channels)]
    for name, t in zip(names, transports, strict=True):
        conn = hub.connect(t, NATIVE, 1 << 30)
        hub.go_live(conn, await hub.subscribe(conn, name, False, None))
    loop = asyncio.get_running_loop()
    k = 0
    published = 0
    bt = time.time_ns() // 1000
    start = time.process_time()
    while published < messages:
        items: list[tuple[str, bytes, bytes | None]] = []
        for _ in range(batch):
            items.append((names[k], message(bt, published + len(items), 150), None))
            k = k + 1 if k + 1 < channels else 0
        await engine.publish_many(items, ts=bt // 1000)
        published += len(items)
        fut = loop.create_future()
        loop.call_soon(fut.set_result, None)  # after the hub's flush of this iteration
        await fut
    spent = time.process_time() - start
    await hub.close()
    await engine.close()
    return spent, sum(t.bytes for t in transports), sum(t.writes for t in transports)


async def main(channels: int, messages: int, batch: int, rounds: int, profile: bool) -> None:
    best = float("inf")
    nbytes = writes = 0
    for _ in range(rounds):
        spent, nbytes, writes = await run(channels, messages, batch)
        best = min(best, spent)
    if writes != messages:
        raise SystemExit(f"expected {messages} writes (one per publication), got {writes}")
    print(
        f"{channels:,} channels x 1 subscriber, {messages:,} publications, {batch} per "
        f"loop iteration: {1e6 * best / messages:.3f} µs CPU per publication "
        f"({messages / best:,.0f}/s), {nbytes / writes:.0f} bytes per write"
    )
    if profile:
        await print_profile(run(channels, messages, batch), 16)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=10_000)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop (as the server)")
    a = ap.parse_args()
    coro = main(a.channels, a.messages, a.batch, a.rounds, a.profile)
    if a.uvloop:
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)

"""The hub's fan-out cost per delivery, native frames vs Coinbase's numbered frames, in
one process (no sockets: a transport that only counts bytes), interleaved in one run.

Every Coinbase message carries the connection's own ``sequence_num``: the format encodes
each publication once (the message after its number) and each connection queues its
header and number in front. This measures what that costs per delivery against native's
one shared frame, and profiles the Coinbase run (``--profile``).

    .venv/bin/python -m bench.numbered [--connections 1000] [--messages 2000] [--batch 10]
        [--max-write-delay 0]   (0: no write coalescing, so a run under callgrind repeats)
        [--profile [--spread]]

"numbers spread" rows put every subscriber at a number of its own, as subscribers that
came at different times stand (a fan-out over sockets): none shares another's join.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.profiling import print_profile
from tickwire.dialects.coinbase import Coinbase
from tickwire.dialects.native import NATIVE
from tickwire.engine import HistorySettings, MemoryEngine
from tickwire.hub import Hub, WireFormat
from tickwire.hub.wire import deflated
from tickwire.model.markets import default_registry

TRADE = b'{"id":7,"price":"65000.00","size":"0.10000000","side":"buy","ts":1700000000000}'


class NullTransport:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def run(
    fmt: WireFormat,
    connections: int,
    messages: int,
    batch: int,
    delay: float | None = None,
    spread: bool = False,
) -> tuple[float, int]:
    """CPU seconds to deliver ``messages`` to ``connections``, and bytes written
    (``delay``: the hub's ``max_write_delay``, None: its default). ``spread``: each
    connection stands at a number of its own (connection i at 10,000 + 7i), as
    subscribers that came at different times do; else all at the same number."""
    engine = MemoryEngine(HistorySettings(size=100, ttl=60))
    hub = Hub(engine) if delay is None else Hub(engine, max_write_delay=delay)
    await engine.start(hub)
    transports = [NullTransport() for _ in range(connections)]
    for i, t in enumerate(transports):
        conn = hub.connect(t, fmt, 1 << 30)
        hub.go_live(conn, await hub.subscribe(conn, "trades:BTC-USD", False, None))
        if spread:
            conn.number = 10_000 + 7 * i  # numbers of their own, mostly of five digits
    loop = asyncio.get_running_loop()
    start = time.process_time()
    for _ in range(messages // batch):
        for _ in range(batch):
            engine.publish_now("trades:BTC-USD", TRADE)
        fut = loop.create_future()
        loop.call_soon(fut.set_result, None)  # after the hub's flush of this iteration
        await fut
    spent = time.process_time() - start
    await hub.close()
    return spent, sum(t.bytes for t in transports)


async def main(
    connections: int,
    messages: int,
    batch: int,
    rounds: int,
    profile: bool,
    delay: float | None,
    spread: bool,
) -> None:
    coinbase = Coinbase.configure(default_registry()).fmt
    # (format, spread): "numbers spread" puts every subscriber at a number of its own
    formats: dict[str, tuple[WireFormat, bool]] = {
        "native": (NATIVE, False),
        "coinbase": (coinbase, False),
        "coinbase, numbers spread": (coinbase, True),
        "native+deflate": (deflated(NATIVE, 15), False),
        "coinbase+deflate": (deflated(coinbase, 15), False),
        "coinbase+deflate, numbers spread": (deflated(coinbase, 15), True),
    }
    best: dict[str, tuple[float, int]] = {}
    for _ in range(rounds):  # interleaved: a disturbance hits every format alike
        for name, (fmt, apart) in formats.items():
            spent, nbytes = await run(fmt, connections, messages, batch, delay, apart)
            if name not in best or spent < best[name][0]:
                best[name] = (spent, nbytes)
    deliveries = connections * (messages // batch) * batch
    print(f"{connections} connections, {deliveries:,} deliveries, {batch} per loop iteration")
    print("| format | deliveries/s (CPU) | µs per delivery | bytes per delivery | vs native |")
    print("|---|---:|---:|---:|---:|")
    for name, (spent, nbytes) in best.items():
        ref = best[name.split(",")[0].replace("coinbase", "native")][0]
        print(
            f"| {name} | {deliveries / spent:,.0f} | {1e6 * spent / deliveries:.3f} | "
            f"{nbytes / deliveries:.0f} | {ref / spent:.0%} |"
        )
    if profile:
        await print_profile(run(coinbase, connections, messages, batch, delay, spread), 8)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--max-write-delay", type=float, default=None, help="the hub's (0: off)")
    ap.add_argument("--spread", action="store_true", help="--profile: numbers spread")
    a = ap.parse_args()
    asyncio.run(
        main(a.connections, a.messages, a.batch, a.rounds, a.profile, a.max_write_delay, a.spread)
    )

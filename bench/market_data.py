"""Ingest gateway throughput on the memory engine (no subscribers): book updates at
several book depths, trades (9 publications each) and sentiment messages.

    .venv/bin/python -m bench.market_data [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from tickwire.engine import MemoryEngine
from tickwire.ingest.gateway import Gateway


async def book_updates(levels: int, n: int) -> float:
    gw = Gateway(MemoryEngine())
    mid = 6_500_000
    bids = [(mid - 1 - i, 1000) for i in range(levels)]
    asks = [(mid + 1 + i, 1000) for i in range(levels)]
    await gw.apply_book_units("BTC-USD", bids, asks)
    rng = random.Random(1)
    start = time.perf_counter()
    for _ in range(n):
        price = mid - 1 - rng.randrange(levels)
        await gw.apply_book_units("BTC-USD", [(price, rng.randint(1, 10**6))], [])
    return n / (time.perf_counter() - start)


async def trades(n: int) -> float:
    gw = Gateway(MemoryEngine())
    start = time.perf_counter()
    for i in range(n):
        await gw.publish_trade_units("BTC-USD", 6_500_000 + i % 7, 1000, "buy", ts=gw.clock())
    return n / (time.perf_counter() - start)


async def sentiment(n: int) -> float:
    gw = Gateway(MemoryEngine())
    rng = random.Random(2)
    t0 = gw.clock() - 10 * n  # messages from the past 10*n ms, in order
    start = time.perf_counter()
    for i in range(n):
        # 100 messages per simulated second: every 100th closes a second (an mp point).
        await gw.publish_sentiment("AAPL", "u", rng.uniform(-1, 1), 1.0, ts=t0 + i * 10)
    return n / (time.perf_counter() - start)


async def main(n: int) -> None:
    print("| operation | per second | µs each |")
    print("|---|---:|---:|")
    for levels in (50, 200, 1000):
        rate = await book_updates(levels, n)
        print(f"| book update, {levels} levels a side | {rate:,.0f} | {1e6 / rate:.1f} |")
    rate = await trades(n)
    print(f"| trade (+ ticker + 6 candles) | {rate:,.0f} | {1e6 / rate:.1f} |")
    rate = await sentiment(n)
    print(f"| sentiment message | {rate:,.0f} | {1e6 / rate:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="operations per row")
    asyncio.run(main(parser.parse_args().n))

"""Ingest gateway cost per operation (no subscribers): a one-level book update at several
book depths, trades (a trade, its ticker and a candle per interval: 14 publications) and
sentiment messages — on the memory engine and, with ``--redis``, on Redis.

The targets (issue 9): a one-level update on a 1,000-level book within 1.5x the cost on
a 50-level book, on each engine; a trade in one Redis round trip.

    .venv/bin/python -m bench.market_data [--n 20000] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from tickwire.engine import Engine, HistorySettings, MemoryEngine
from tickwire.engine.redis import RedisEngine
from tickwire.ingest.gateway import Gateway
from tickwire.model.channels import CANDLE_INTERVALS
from tickwire.model.publication import Publication


class Nobody:
    def on_publication(self, pub: Publication) -> None:
        pass

    def on_resync(self) -> None:
        pass


EngineMaker = Callable[[], Awaitable[Engine]]


async def book_costs(make: EngineMaker, depths: tuple[int, ...], n: int, block: int) -> list[float]:
    """Median µs per one-level update for each depth. The books are measured in turns,
    ``block`` updates at a time (so that load from other processes on this shared
    machine falls on every depth alike), each on its own engine and gateway."""
    engines = [await make() for _ in depths]
    try:
        gateways = []
        mid = 6_500_000
        for engine, levels in zip(engines, depths, strict=True):
            gw = Gateway(engine)
            bids = [(mid - 1 - i, 1000) for i in range(levels)]
            asks = [(mid + 1 + i, 1000) for i in range(levels)]
            await gw.apply_book_units("BTC-USD", bids, asks)
            gateways.append(gw)
        rng = random.Random(1)
        samples: list[list[float]] = [[] for _ in depths]
        for _ in range(max(1, n // block)):
            for i, (gw, levels) in enumerate(zip(gateways, depths, strict=True)):
                start = time.perf_counter()
                for _ in range(block):
                    price = mid - 1 - rng.randrange(levels)
                    await gw.apply_book_units("BTC-USD", [(price, rng.randint(1, 10**6))], [])
                samples[i].append((time.perf_counter() - start) / block * 1e6)
        return [statistics.median(s) for s in samples]
    finally:
        for engine in engines:
            await engine.close()


async def trades(make: EngineMaker, n: int) -> tuple[float, float]:
    """(trades per second, engine round trips per trade)."""
    engine = await make()
    try:
        gw = Gateway(engine)
        trips = _count_round_trips(engine)
        start = time.perf_counter()
        for i in range(n):
            await gw.publish_trade_units("BTC-USD", 6_500_000 + i % 7, 1000, "buy", ts=gw.clock())
        rate = n / (time.perf_counter() - start)
        return rate, trips[0] / n
    finally:
        await engine.close()


def _count_round_trips(engine: Engine) -> list[int]:
    """Counts engine calls that reach the backing store (Redis: one per pipeline or
    script call; memory: one per publish_many)."""
    count = [0]
    names = ("_pipeline", "_eval") if isinstance(engine, RedisEngine) else ("publish_many",)
    for name in names:
        original = getattr(engine, name)

        async def counted(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            count[0] += 1
            return await _original(*args, **kwargs)

        setattr(engine, name, counted)
    return count


async def sentiment(make: EngineMaker, n: int) -> float:
    engine = await make()
    try:
        gw = Gateway(engine)
        rng = random.Random(2)
        t0 = gw.clock() - 10 * n  # messages from the past 10*n ms, in order
        start = time.perf_counter()
        for i in range(n):
            # 100 messages per simulated second: every 100th closes a second (an mp point)
            await gw.publish_sentiment("AAPL", "u", rng.uniform(-1, 1), 1.0, ts=t0 + i * 10)
        return n / (time.perf_counter() - start)
    finally:
        await engine.close()


def memory_engine() -> EngineMaker:
    async def make() -> Engine:
        engine = MemoryEngine()
        await engine.start(Nobody())
        return engine

    return make


class _ScratchRedis(RedisEngine):
    async def close(self) -> None:
        keys = [k async for k in self._redis.scan_iter(match=f"{self.prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await self._redis.unlink(*keys[i : i + 1000])
        await super().close()


def redis_engine(url: str) -> EngineMaker:
    async def make() -> Engine:
        prefix = f"twbench:{uuid.uuid4().hex[:8]}:"
        engine = _ScratchRedis(url, HistorySettings(size=1000, ttl=300), prefix=prefix)
        await engine.start(Nobody())
        return engine

    return make


async def table(name: str, make: EngineMaker, n: int, block: int) -> None:
    print(f"\n{name}\n")
    print("| operation | per second | µs each (median) | vs 50 levels |")
    print("|---|---:|---:|---:|")
    depths = (50, 200, 1000)
    costs = await book_costs(make, depths, n, block)
    for levels, cost in zip(depths, costs, strict=True):
        print(
            f"| one-level book update, {levels} levels a side | {1e6 / cost:,.0f} | {cost:.1f} "
            f"| {cost / costs[0]:.2f}x |"
        )
    rate, trips = await trades(make, n)
    what = f"trade (+ ticker + {len(CANDLE_INTERVALS)} candles), {trips:g} round trip(s)"
    print(f"| {what} | {rate:,.0f} | {1e6 / rate:.1f} | |")
    rate = await sentiment(make, n)
    print(f"| sentiment message | {rate:,.0f} | {1e6 / rate:.1f} | |")


async def main(n: int, redis: str | None) -> None:
    await table("memory engine", memory_engine(), n, 200)
    if redis:
        await table(f"Redis engine ({redis})", redis_engine(redis), max(1, n // 5), 40)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="operations per row (Redis: n/5)")
    parser.add_argument("--redis", help="also measure on this Redis (keys deleted afterwards)")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.redis))

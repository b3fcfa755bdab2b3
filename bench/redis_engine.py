"""Benchmark of the Redis engine (a script with a command line, not a test).

1. Publications per second through the engine on one node: one at a time, with
   concurrent publishers, and with ``publish_many`` batches; a second node is subscribed
   to every channel, so each publication is also delivered over pub/sub.
2. End-to-end latency publisher -> subscriber on another node: a ``tickwire serve``
   process (node B) runs on the same Redis; WebSocket clients on B subscribe; this
   process publishes at a fixed rate through its own engine (node A) and each client
   measures the time from just before ``publish()`` to the frame's arrival.

3. With ``--shards N`` (instead of 1 and 2): publications per second into one Redis and
   into N shards (the sharded engine, docs/scaling.md) in the same run, interleaved, on
   N+1 private ``redis-server`` processes on free loopback ports that this script starts
   and stops itself (one for the one-Redis rows, N for the shards).

Everything runs on loopback, bounded in count and time, under a private key prefix that
is deleted afterwards. Example::

    python bench/redis_engine.py --redis redis://127.0.0.1:6379/0
    python bench/redis_engine.py --shards 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import aiohttp
import hiredis
from redis.asyncio.connection import Connection

from tickwire.engine import Engine, HistorySettings
from tickwire.engine.redis import RedisEngine, ShardedRedisEngine, scripts
from tickwire.engine.urls import redact
from tickwire.model import Publication
from tickwire.model.publication import now_ms


class Counter:
    """Engine handler of the subscribed node: counts what it receives."""

    def __init__(self) -> None:
        self.received = 0
        self.target = 0
        self.done = asyncio.Event()

    def on_publication(self, pub: Publication) -> None:
        self.received += 1
        if self.received >= self.target:
            self.done.set()

    def on_resync(self) -> None:
        pass


async def delete_prefix(engine: Engine) -> None:
    if isinstance(engine, ShardedRedisEngine):
        for shard in engine.shards.values():
            await delete_prefix(shard)
        return
    assert isinstance(engine, RedisEngine)
    keys = [k async for k in engine._redis.scan_iter(match=f"{engine.prefix}*", count=1000)]
    for i in range(0, len(keys), 1000):
        await engine._redis.unlink(*keys[i : i + 1000])


async def timed(count: int, counter: Counter, run: Callable[[], Awaitable[None]]) -> float:
    counter.received = 0
    counter.target = count
    counter.done.clear()
    t0 = time.perf_counter()
    await run()
    await asyncio.wait_for(counter.done.wait(), 60)  # every publication was delivered
    return count / (time.perf_counter() - t0)


def make_engine(urls: Sequence[str], prefix: str, **options: Any) -> Engine:
    """One Redis engine, or a sharded one over several URLs."""
    settings = HistorySettings(size=1000, ttl=300)
    if len(urls) == 1:
        return RedisEngine(urls[0], settings, prefix=prefix, **options)
    return ShardedRedisEngine(urls, settings, prefix=prefix, **options)


#: The kinds one trade publishes per market, 14 items in all (trades, ticker, book and
#: candles of several intervals; docs/market-data.md), all placed by the market.
MARKET_ITEMS = ["trades", "ticker", "book", *(f"candles:{iv}" for iv in ("1m", "5m", "15m"))]


def market_channel(kind: str, market: int) -> str:
    if kind.startswith("candles:"):
        return f"candles:B{market}:{kind.partition(':')[2]}"
    return f"{kind}:B{market}"


class Node:
    """A publishing node and a subscribed node on the same engine URLs, and the
    publishing modes, each timed until the subscribed node received every publication."""

    def __init__(self, urls: Sequence[str], prefix: str, count: int, channels: int) -> None:
        self.pub = make_engine(urls, prefix, max_connections=64)
        self.sub = make_engine(urls, prefix)
        self.counter = Counter()
        self.count = count
        self.names = [f"trades:B{i}" for i in range(channels)]
        self.markets = [
            [market_channel(MARKET_ITEMS[i % len(MARKET_ITEMS)], m) for i in range(14)]
            for m in range(channels)
        ]
        self.data = json.dumps({"p": "67012.5", "q": "0.015", "side": "buy", "id": 0}).encode()

    async def start(self) -> None:
        await self.pub.start(Counter())
        await self.sub.start(self.counter)
        await self.sub.subscribe({*self.names, *(c for m in self.markets for c in m)})

    async def close(self) -> None:
        await self.sub.close()
        await delete_prefix(self.pub)
        await self.pub.close()

    def modes(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        return [
            ("publish(), one at a time", self.sequential),
            ("publish(), 16 concurrent", self.concurrent(16)),
            ("publish(), 64 concurrent", self.concurrent(64)),
            ("publish_many(), batches of 100", self.batched(100)),
        ]

    def shard_modes(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        return [
            ("publish(), 64 concurrent", self.concurrent(64)),
            ("publish_many(), batches of 100 (over every shard)", self.batched(100)),
            ("publish_many(), one market's 14 items, 8 markets at once", self.per_market(8)),
        ]

    async def run(self, mode: Callable[[], Awaitable[None]], count: int | None = None) -> float:
        return await timed(count or self.count, self.counter, mode)

    async def sequential(self) -> None:
        names, data = self.names, self.data
        for i in range(self.count):
            await self.pub.publish(names[i % len(names)], data)

    def concurrent(self, workers: int) -> Callable[[], Awaitable[None]]:
        names, data = self.names, self.data

        async def run() -> None:
            async def worker(w: int) -> None:
                for i in range(w, self.count, workers):
                    await self.pub.publish(names[i % len(names)], data)

            await asyncio.gather(*(worker(w) for w in range(workers)))

        return run

    def batched(self, size: int) -> Callable[[], Awaitable[None]]:
        names, data, count = self.names, self.data, self.count

        async def run() -> None:
            for start in range(0, count, size):
                items = [
                    (names[i % len(names)], data, None)
                    for i in range(start, min(count, start + size))
                ]
                await self.pub.publish_many(items)

        return run

    def per_market(self, workers: int) -> Callable[[], Awaitable[None]]:
        """``workers`` markets publishing at once, each ``publish_many`` of one market's
        14 items (as one trade does): every batch stays on one shard."""
        data, count = self.data, self.count

        async def run() -> None:
            async def worker(w: int) -> None:
                chans = self.markets[w % len(self.markets)]
                for start in range(w * 14, count, workers * 14):
                    n = min(14, count - start)
                    await self.pub.publish_many([(c, data, None) for c in chans[:n]])

            await asyncio.gather(*(worker(w) for w in range(workers)))

        return run


async def throughput(
    url: str, prefix: str, count: int, channels: int, repeat: int
) -> list[tuple[str, list[float]]]:
    node = Node([url], prefix, count, channels)
    await node.start()
    try:
        await node.run(node.concurrent(16), min(count, 2000))  # warm up
        modes = node.modes()
        results: dict[str, list[float]] = {name: [] for name, _ in modes}
        for _ in range(repeat):  # interleaved, so a noisy moment hits every mode alike
            for name, run in modes:
                results[name].append(await node.run(run))
    finally:
        await node.close()
    return [(name, results[name]) for name, _ in modes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: no persistence; the directory follows
SERVER_ARGS = ("--save", "", "--appendonly", "no", "--dir")


@contextmanager
def redis_servers(count: int) -> Iterator[list[str]]:
    """``count`` private redis-servers (no persistence) on free loopback ports, killed
    and their directory removed at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--shards needs redis-server on PATH")
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="tickwire-bench-redis-") as workdir:
        try:
            ports = []
            for _ in range(count):
                port = free_port()
                ports.append(port)
                procs.append(
                    subprocess.Popen(
                        [
                            binary,
                            *("--port", str(port), "--bind", "127.0.0.1"),
                            *SERVER_ARGS,
                            workdir,
                        ],
                        stdout=subprocess.DEVNULL,
                    )
                )
            deadline = time.monotonic() + 15
            for port in ports:
                while True:
                    try:
                        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                            s.sendall(b"PING\r\n")
                            if s.recv(16).startswith(b"+PONG"):
                                break
                    except OSError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit(f"redis-server on port {port} did not start")
                    time.sleep(0.05)
            yield [f"redis://127.0.0.1:{p}/0" for p in ports]
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


async def shard_throughput(
    one: str, shards: list[str], prefix: str, count: int, channels: int, repeat: int
) -> list[tuple[str, list[float], list[float]]]:
    """The same modes into one Redis and into ``shards``, interleaved run by run."""
    single = Node([one], prefix, count, channels)
    sharded = Node(shards, prefix, count, channels)
    await single.start()
    await sharded.start()
    try:
        for node in (single, sharded):
            await node.run(node.concurrent(16), min(count, 2000))  # warm up
        names = [name for name, _ in single.shard_modes()]
        got: dict[tuple[str, int], list[float]] = {}
        for _ in range(repeat):
            for i, node in enumerate((single, sharded)):
                for name, run in node.shard_modes():
                    got.setdefault((name, i), []).append(await node.run(run))
    finally:
        await single.close()
        await sharded.close()
    return [(name, got[(name, 0)], got[(name, 1)]) for name in names]


async def shards_main(args: argparse.Namespace) -> None:
    prefix = f"twbench:{uuid.uuid4().hex[:8]}:"
    with redis_servers(args.shards + 1) as urls:
        # named s1, s2, …: the same placement in every run (the ports differ)
        one, shards = urls[0], [f"{u}?shard=s{i}" for i, u in enumerate(urls[1:], 1)]
        probe = ShardedRedisEngine(shards)
        spread = [probe.shard_name(f"trades:B{i}") for i in range(args.channels)]
        print(
            f"One Redis vs {args.shards} shards ({args.shards + 1} private redis-servers on "
            f"loopback, the client in this one process); {args.count} publications per run, "
            f"{args.channels} markets (per shard: "
            f"{', '.join(str(spread.count(n)) for n in probe.names)}), every publication "
            f"delivered to a subscribed node; median of {args.repeat} runs:\n"
        )
        rows = await shard_throughput(one, shards, prefix, args.count, args.channels, args.repeat)
        floor = await raw_floor(one, prefix, args.count, args.channels, args.repeat)
    print(f"| mode | one Redis | {args.shards} shards | ratio |\n|---|---:|---:|---:|")
    for name, single, sharded in rows:
        a, b = statistics.median(single), statistics.median(sharded)
        print(f"| {name} | {a:,.0f} | {b:,.0f} | {b / a:.2f} |")
    print(
        "| raw floor: the script pipelined on one socket to one Redis, no client | "
        f"{statistics.median(floor):,.0f} | | |"
    )


async def raw_floor(url: str, prefix: str, count: int, channels: int, repeat: int) -> list[float]:
    """The floor: the same script calls (same keys, arguments, subscribed node) written
    straight to one socket 1,000 at a time and the replies counted with hiredis, with no
    engine or client code in between: what Redis itself takes for this script here."""
    settings = HistorySettings(size=1000, ttl=300)
    pub_node = RedisEngine(url, settings, prefix=prefix)
    sub_node = RedisEngine(url, settings, prefix=prefix)
    counter = Counter()
    await pub_node.start(Counter())
    await sub_node.start(counter)
    names = [f"trades:R{i}" for i in range(channels)]
    await sub_node.subscribe(names)
    data = json.dumps({"p": "67012.5", "q": "0.015", "side": "buy", "id": 0}).encode()
    sha = await pub_node._redis.script_load(scripts.PUBLISH)
    packer = Connection()
    assert pub_node._pool is not None, "the raw floor needs one Redis server, not a cluster"
    kwargs = pub_node._pool.connection_kwargs
    reader, writer = await asyncio.open_connection(
        kwargs.get("host", "127.0.0.1"), kwargs.get("port", 6379)
    )
    rates = []
    try:
        for _ in range(repeat):

            async def run() -> None:
                parser = hiredis.Reader()
                for start in range(0, count, 1000):
                    now = now_ms()
                    cmds = []
                    for i in range(start, min(count, start + 1000)):
                        keys, args = pub_node._publish_args(
                            names[i % channels], data, None, now, now
                        )
                        cmds.append(("EVALSHA", sha, len(keys), *keys, *args))
                    writer.writelines(packer.pack_commands(cmds))
                    got = 0
                    while got < len(cmds):
                        parser.feed(await reader.read(65536))
                        while (reply := parser.gets()) is not False:
                            assert not isinstance(reply, hiredis.ReplyError), reply
                            got += 1

            rates.append(await timed(count, counter, run))
    finally:
        writer.close()
        await sub_node.close()
        await delete_prefix(pub_node)
        await pub_node.close()
    return rates


async def start_gateway(url: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tickwire",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--engine",
        url,
        "--log-level",
        "error",
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("tickwire serve exited")
                found = re.search(r"ws://\S+", line)
                if found:
                    return proc, found.group(0)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        raise


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


async def latency(
    url: str, prefix: str, rate: float, seconds: float, clients: int
) -> dict[str, Any]:
    gateway, ws_url = await start_gateway(f"{url}{'&' if '?' in url else '?'}prefix={prefix}")
    engine = RedisEngine(url, HistorySettings(), prefix=prefix)
    await engine.start(Counter())
    channel = "trades:BTC-USD"
    samples: list[float] = []
    total = int(rate * seconds)
    try:
        async with aiohttp.ClientSession() as session:
            sockets = []
            for _ in range(clients):
                ws = await session.ws_connect(ws_url)
                await ws.send_json({"id": 1, "op": "subscribe", "channels": [channel]})
                reply = await ws.receive_json(timeout=10)
                assert reply["type"] == "subscribed", reply
                sockets.append(ws)

            async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
                got = 0
                while got < total:
                    msg = await ws.receive(timeout=30)
                    now = time.perf_counter_ns()
                    frame = json.loads(msg.data)
                    if frame.get("type") != "pub":
                        continue
                    got += 1
                    samples.append((now - frame["data"]["t0"]) / 1e6)

            readers = [asyncio.create_task(read(ws)) for ws in sockets]
            interval = 1.0 / rate
            start = time.perf_counter()
            for i in range(total):
                delay = start + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)  # fixed-rate load
                body = json.dumps({"t0": time.perf_counter_ns(), "i": i}).encode()
                await engine.publish(channel, body)
            await asyncio.gather(*readers)
            for ws in sockets:
                await ws.close()
    finally:
        gateway.terminate()
        await gateway.wait()
        await delete_prefix(engine)
        await engine.close()
    samples.sort()
    return {
        "samples": len(samples),
        "mean": statistics.fmean(samples),
        **{f"p{q:g}": percentile(samples, q) for q in (50, 90, 99, 99.9)},
        "max": samples[-1],
    }


async def main(args: argparse.Namespace) -> None:
    if args.shards:
        await shards_main(args)
        return
    prefix = f"twbench:{uuid.uuid4().hex[:8]}:"
    print(f"Redis engine benchmark against {redact(args.redis)} (prefix {prefix})\n")
    rows = await throughput(args.redis, prefix, args.count, args.channels, args.repeat)
    floor = await raw_floor(args.redis, prefix, args.count, args.channels, args.repeat)
    rows.append(("raw floor: the script pipelined on one socket, no client", floor))
    print(f"Publications/s through the Redis engine on one node ({args.count} per run,")
    print(f"{args.channels} channels, every publication delivered to a subscribed node;")
    print(f"median of {args.repeat} runs, lowest and highest):\n")
    print("| mode | publications/s | range |\n|---|---:|---:|")
    for name, rates in rows:
        lo, hi = min(rates), max(rates)
        print(f"| {name} | {statistics.median(rates):,.0f} | {lo:,.0f} to {hi:,.0f} |")
    result = await latency(args.redis, prefix, args.rate, args.seconds, args.clients)
    print(f"\nEnd-to-end latency publisher -> node B -> WebSocket client, {args.rate:g} pub/s")
    print(
        f"for {args.seconds:g} s, {args.clients} clients on node B ({result['samples']} samples):\n"
    )
    cols = ["mean", "p50", "p90", "p99", "p99.9", "max"]
    print("| " + " | ".join(f"{c} (ms)" for c in cols) + " |")
    print("|" + "---:|" * len(cols))
    print("| " + " | ".join(f"{result[c]:.2f}" for c in cols) + " |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    p.add_argument("--count", type=int, default=20_000, help="publications per throughput row")
    p.add_argument("--channels", type=int, default=10, help="channels published to")
    p.add_argument("--repeat", type=int, default=5, help="runs per throughput row")
    p.add_argument("--rate", type=float, default=2000.0, help="publications/s (latency run)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    p.add_argument("--clients", type=int, default=10, help="WebSocket clients on node B")
    p.add_argument(
        "--shards",
        type=int,
        default=0,
        help="compare one Redis with this many shards (private redis-servers; skips 1 and 2)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))

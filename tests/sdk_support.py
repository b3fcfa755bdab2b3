"""Helpers for the SDK tests: ``tickwire serve`` processes on ports that survive their
restarts, a publisher of a busy book and trades over ``POST /api/v1/publish``, and a
consumer that records what an SDK subscription yielded."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tickwire.client import (
    BookUpdate,
    Client,
    Connected,
    Item,
    Message,
    Reconnecting,
    Recovered,
    Resynced,
    Subscription,
    TokenRefreshed,
)

from .redis_server import free_port
from .waiting import until

PUBLISH_TOKEN = "sdk-test-publish-token-0123456789"


class Node:
    """``python -m tickwire serve`` as a child process on a fixed loopback port (chosen
    free by the kernel once), so it can be killed and started again at the same URL."""

    def __init__(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.env = env or {}
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr: list[str] = []
        self._drain: list[asyncio.Task[None]] = []

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tickwire",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **self.env},
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._drain = [asyncio.create_task(self._read(self.proc.stderr, self.stderr))]
        async with asyncio.timeout(30):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    await self.proc.wait()
                    await asyncio.gather(*self._drain)
                    raise AssertionError(f"node {self.name} exited: {''.join(self.stderr)}")
                if "metrics" in line:
                    break
        self._drain.append(asyncio.create_task(self._read(self.proc.stdout, [])))

    @staticmethod
    async def _read(stream: asyncio.StreamReader, into: list[str]) -> None:
        while line := await stream.readline():
            into.append(line.decode(errors="replace"))
            del into[:-50]

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process (SIGTERM drains clients with 3001; SIGKILL does not)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(sig)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.gather(*self._drain, return_exceptions=True)


def fmt(units: int, places: int) -> str:
    whole, frac = divmod(units, 10**places)
    return f"{whole}.{frac:0{places}d}"


class BookFeed:
    """Publishes a moving ``BTC-USD`` book (bids below 100.00, asks above: never
    crossed) and trades to one node's ``POST /api/v1/publish``, in batches. Failed
    batches (node or Redis down) are counted, never retried."""

    def __init__(self, session: aiohttp.ClientSession, http: str, seed: int = 7) -> None:
        self.session = session
        self.url = http + "/api/v1/publish"
        self.rng = random.Random(seed)
        self.stopping = False
        self.ok = 0
        self.failed = 0
        self.changed = asyncio.Event()

    def _level(self) -> list[str]:
        price = 10_000 - self.rng.randint(1, 30)  # cents below 100.00
        size = 0 if self.rng.random() < 0.15 else self.rng.randint(1, 10**8)
        return [fmt(price, 2), fmt(size, 8)]

    def batch(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for _ in range(3):
            bid = self._level()
            ask = self._level()
            ask[0] = fmt(20_000 - int(ask[0].replace(".", "")), 2)  # mirrored above 100.00
            events.append({"type": "book", "market": "BTC-USD", "bids": [bid], "asks": [ask]})
        side = self.rng.choice(["buy", "sell"])
        size = fmt(self.rng.randint(1, 10**6), 8)
        events.append(
            {"type": "trade", "market": "BTC-USD", "price": "100.00", "size": size, "side": side}
        )
        return events

    async def run(self, interval: float = 0.02) -> None:
        headers = {"Authorization": f"Bearer {PUBLISH_TOKEN}"}
        while not self.stopping:
            try:
                async with self.session.post(
                    self.url, json={"events": self.batch()}, headers=headers
                ) as resp:
                    if resp.status == 200:
                        self.ok += 1
                    else:
                        self.failed += 1
            except (aiohttp.ClientError, OSError):
                self.failed += 1
            self.changed.set()
            await asyncio.sleep(interval)  # the pace of the load, not a wait for an event

    async def wait(self, cond: Callable[[], bool], timeout: float = 30.0) -> None:
        await until(self.changed, cond, timeout)


@dataclass
class Consumer:
    """Records every item a subscription yields, in order."""

    client: Client
    items: list[Item] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None

    async def run(self, sub: Subscription) -> None:
        try:
            async for item in sub:
                self.items.append(item)
                self.changed.set()
        except Exception as exc:  # recorded for the test to assert on
            self.error = exc
            self.changed.set()

    async def wait(self, cond: Callable[[], bool], timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                if self.error is not None:
                    raise AssertionError(f"the subscription failed: {self.error!r}")
                self.changed.clear()
                await self.changed.wait()

    def messages(self, channel: str) -> list[Message]:
        return [i for i in self.items if isinstance(i, Message) and i.channel == channel]

    def count(self, kind: type[Any], **fields: Any) -> int:
        return sum(
            isinstance(i, kind) and all(getattr(i, k) == v for k, v in fields.items())
            for i in self.items
        )

    def since_last_connect(self, kind: type[Any]) -> int:
        n = 0
        for item in reversed(self.items):
            if isinstance(item, Connected):
                return n
            n += isinstance(item, kind)
        return n


def check_stream(items: list[Item], channel: str, stateful: bool) -> tuple[int, int]:
    """Assert that ``channel``'s messages run on without a gap or a duplicate, except
    right after an explicit ``Resynced`` (a state channel then starts again from a
    snapshot). Returns (Resynced, Recovered) counts."""
    resynced = recovered = 0
    prev: tuple[str, int] | None = None
    fresh = True  # the next message starts a stream: a state channel's must be a snapshot
    for item in items:
        if isinstance(item, Resynced) and item.channel == channel:
            resynced += 1
            prev, fresh = None, True
        elif isinstance(item, Recovered) and item.channel == channel:
            recovered += 1
        elif isinstance(item, Message) and item.channel == channel:
            if fresh and stateful:
                assert item.snapshot, f"{channel}: a stream began without a snapshot: {item}"
            elif prev is not None:
                assert not item.snapshot, f"{channel}: a snapshot without Resynced: {item}"
                assert (item.epoch, item.seq) == (prev[0], prev[1] + 1), (
                    f"{channel}: after {prev} came {item.epoch}:{item.seq} with no Resynced"
                )
            prev, fresh = (item.epoch, item.seq), False
    return resynced, recovered


__all__ = [
    "PUBLISH_TOKEN",
    "BookFeed",
    "BookUpdate",
    "Consumer",
    "Node",
    "Reconnecting",
    "TokenRefreshed",
    "check_stream",
]

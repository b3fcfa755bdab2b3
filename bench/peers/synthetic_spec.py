"""The synthetic publisher every Python peer runs: same spec, same semantics as
``tickwire serve --synthetic`` (src/tickwire/ingest/synthetic.py) and the Node peers
(node/synthetic.js).

SPEC is one or more streams separated by ``;``, each ``key=value`` pairs separated by
``,``: ``channel`` (name; with ``count=N`` it must hold ``{i}``, replaced by 0..N-1),
``rate`` (messages per second over the whole stream), ``batch`` (messages per tick:
a tick every batch/rate seconds publishes ``batch`` messages, round-robin over the
stream's channels), ``size`` (bytes of the JSON ``data`` object, default 150).
Every message's data is ``{"bt":<tick time, µs since the epoch>,"n":<counter>,"pad":"…"}``;
ticks keep an absolute schedule and ``bt`` is the scheduled time (a server that falls
behind catches up and shows it as latency; over 1 s behind, the backlog is dropped).
Stdlib only: the peers run in their own virtualenv.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass
class Stream:
    channels: list[str]
    rate: float
    batch: int
    size: int


def parse_spec(spec: str) -> list[Stream]:
    streams = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        kv = dict(item.split("=", 1) for item in part.split(","))
        name = kv["channel"]
        count = int(kv.get("count", 1))
        channels = [name.replace("{i}", str(i)) for i in range(count)] if count > 1 else [name]
        streams.append(
            Stream(channels, float(kv["rate"]), int(kv.get("batch", 1)), int(kv.get("size", 150)))
        )
    return streams


def make_data(bt: int, n: int, size: int) -> str:
    head = f'{{"bt":{bt},"n":{n},"pad":"'
    pad = max(0, size - len(head) - 2)
    return head + "x" * pad + '"}'


Publish = Callable[[str, str], Awaitable[None] | None]


async def run_stream(stream: Stream, publish: Publish) -> None:
    """Call ``publish(channel, data_json)`` ``batch`` times per tick, for ever (awaiting
    it when it is a coroutine function). Ticks keep an absolute schedule and carry their
    scheduled time; more than 1 s behind, the backlog is dropped."""
    interval = stream.batch / stream.rate
    # both clocks read now: loop.time() may be a stale cached value (uvloop)
    start_loop = time.monotonic()
    start_us = time.time_ns() // 1000
    n_tick = 0
    n = 0
    k = 0
    channels = stream.channels
    while True:
        due = start_loop + n_tick * interval
        bt = start_us + int(n_tick * interval * 1_000_000)
        for _ in range(stream.batch):
            pending = publish(channels[k], make_data(bt, n, stream.size))
            if pending is not None:
                await pending
            n += 1
            k = (k + 1) % len(channels)
        n_tick += 1
        # Let this iteration's callbacks (the fan-out's writes) run before timing the
        # next tick: under uvloop a timer started in the same iteration as slow
        # callbacks fires late by their duration (measured 5 ms after a 5 ms flush).
        await asyncio.sleep(0)
        now = time.monotonic()
        behind = now - (due + interval)
        if behind > 1.0:
            n_tick += int(behind / interval)
        delay = start_loop + n_tick * interval - now
        await asyncio.sleep(delay if delay > 0 else 0)


def start(spec: str, publish: Publish) -> list[asyncio.Task[None]]:
    return [asyncio.ensure_future(run_stream(s, publish)) for s in parse_spec(spec)]


class Sequencer:
    """Per-channel seq and the native ``pub`` envelope the generator expects."""

    def __init__(self) -> None:
        self.seq: dict[str, int] = {}
        self.epoch = "peer0001"

    def envelope(self, channel: str, data: str) -> str:
        seq = self.seq.get(channel, 0) + 1
        self.seq[channel] = seq
        ts = time.time_ns() // 1_000_000
        return (
            f'{{"type":"pub","channel":{json.dumps(channel)},"seq":{seq},'
            f'"epoch":"{self.epoch}","ts":{ts},"data":{data}}}'
        )


def install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


def raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

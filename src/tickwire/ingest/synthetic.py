"""A synthetic publisher for benchmarks: K messages of a set size every tick, each carrying
its send time, through the normal :meth:`Engine.publish_many` path (so the hub's real
fan-out is what gets measured).

The spec (``tickwire serve --synthetic SPEC``) is the same for tickwire and every peer
server under ``bench/peers/``: one or more streams separated by ``;``, each a list of
``key=value`` separated by ``,``:

``channel``  channel name; with ``count=N`` it must contain ``{i}``, replaced by 0..N-1
``count``    how many channels the stream publishes to (default 1)
``rate``     messages per second over the whole stream (required)
``batch``    messages per tick (default 1): a tick every ``batch / rate`` seconds
             publishes ``batch`` messages, round-robin over the stream's channels
``size``     bytes of each message's JSON data (default 150)

Each message's data is ``{"bt":<tick time, µs since the UNIX epoch>,"n":<counter>,
"pad":"x…"}``; the load generator finds ``"bt":`` without decoding the rest. State
channels (books, tickers) store each message as the snapshot too. Ticks keep an
absolute schedule and ``bt`` is the tick's *scheduled* time: a server that falls behind
catches up and the delay shows as latency; more than 1 s behind, the backlog is dropped
(``late_ticks``) and fewer messages go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from tickwire.engine.base import Engine
from tickwire.model.channels import ChannelError, parse_channel

log = logging.getLogger(__name__)

MAX_CHANNELS = 100_000
MAX_RATE = 10_000_000.0
MAX_SIZE = 65_536
#: Seconds a stream may fall behind its schedule before the backlog is dropped.
MAX_BEHIND = 1.0


class SyntheticSpecError(ValueError):
    """A ``--synthetic`` spec that does not parse; the message names the field."""


@dataclass(frozen=True, slots=True)
class SyntheticStream:
    """One stream of the spec, already validated."""

    channels: tuple[str, ...]
    stateful: tuple[bool, ...]
    rate: float
    batch: int
    size: int

    @property
    def interval(self) -> float:
        """Seconds between ticks."""
        return self.batch / self.rate


def _number(kv: dict[str, str], key: str, default: str | None, low: float, high: float) -> float:
    raw = kv.get(key, default)
    if raw is None:
        raise SyntheticSpecError(f"synthetic: {key} is required")
    try:
        value = float(raw)
    except ValueError:
        raise SyntheticSpecError(f"synthetic: {key} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise SyntheticSpecError(f"synthetic: {key} must be between {low:g} and {high:g}")
    return value


def parse_synthetic(spec: str) -> list[SyntheticStream]:
    """Parse a spec (see the module docstring); raises :class:`SyntheticSpecError`."""
    streams = []
    for part in (p.strip() for p in spec.split(";")):
        if not part:
            continue
        kv: dict[str, str] = {}
        for item in part.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in ("channel", "count", "rate", "batch", "size"):
                raise SyntheticSpecError(f"synthetic: unknown or malformed field {item!r}")
            kv[key] = value.strip()
        if "channel" not in kv:
            raise SyntheticSpecError("synthetic: channel is required")
        name = kv["channel"]
        count = int(_number(kv, "count", "1", 1, MAX_CHANNELS))
        if count > 1 and "{i}" not in name:
            raise SyntheticSpecError("synthetic: channel must contain {i} when count > 1")
        names = tuple(name.replace("{i}", str(i)) for i in range(count))
        stateful = []
        for n in names:
            try:
                stateful.append(parse_channel(n).stateful)
            except ChannelError as exc:
                raise SyntheticSpecError(f"synthetic: channel: {exc.message}") from None
        streams.append(
            SyntheticStream(
                channels=names,
                stateful=tuple(stateful),
                rate=_number(kv, "rate", None, 0.001, MAX_RATE),
                batch=int(_number(kv, "batch", "1", 1, 100_000)),
                size=int(_number(kv, "size", "150", 32, MAX_SIZE)),
            )
        )
    if not streams:
        raise SyntheticSpecError("synthetic: no stream given")
    return streams


#: ``x…"}`` by its length: a stream's messages need only a few (the head's length varies
#: with its numbers' digits), built once instead of twice per message
_TAILS: dict[int, bytes] = {}


def message(bt: int, n: int, size: int) -> bytes:
    """The JSON data of one message: ``size`` bytes carrying send time ``bt`` (µs)."""
    head = b'{"bt":%d,"n":%d,"pad":"' % (bt, n)
    pad = size - len(head) - 2
    tail = _TAILS.get(pad)
    if tail is None:
        tail = b"x" * max(0, pad) + b'"}'
        if len(_TAILS) < 256:  # bounded: sizes are at most MAX_SIZE, a spec has a few
            _TAILS[pad] = tail
    return head + tail


class SyntheticPublisher:
    """Runs every stream of a spec against an engine until closed."""

    def __init__(self, engine: Engine, streams: list[SyntheticStream]) -> None:
        self.engine = engine
        self.streams = streams
        self.published = 0
        self.late_ticks = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        """Publish every stream until cancelled."""
        await asyncio.gather(*(self._run(stream) for stream in self.streams))

    def start(self) -> None:
        """Start one task per stream on the running loop."""
        for stream in self.streams:
            self._tasks.append(asyncio.ensure_future(self._run(stream)))

    async def close(self) -> None:
        """Stop publishing."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _run(self, stream: SyntheticStream) -> None:
        channels = stream.channels
        stateful = stream.stateful
        nchan = len(channels)
        interval = stream.interval
        # Ticks keep an absolute schedule and carry their *scheduled* time, so a server
        # that falls behind shows it as latency (no coordinated omission); a backlog of
        # more than MAX_BEHIND seconds is dropped and counted in ``late_ticks``.
        # both clocks read now: loop.time() may be a stale cached value (uvloop)
        start_loop = time.monotonic()
        start_us = time.time_ns() // 1000
        n_tick = 0
        k = 0
        while True:
            due = start_loop + n_tick * interval
            bt = start_us + int(n_tick * interval * 1_000_000)
            items: list[tuple[str, bytes, bytes | None]] = []
            for _ in range(stream.batch):
                data = message(bt, self.published + len(items), stream.size)
                items.append((channels[k], data, data if stateful[k] else None))
                k += 1
                if k == nchan:
                    k = 0
            try:
                await self.engine.publish_many(items, ts=bt // 1000)
                self.published += len(items)
            except Exception:
                log.exception("synthetic publish failed")
            n_tick += 1
            # Let this iteration's callbacks (the fan-out's writes) run before timing the
            # next tick: under uvloop a timer started in the same iteration as slow
            # callbacks fires late by their duration (measured 5 ms after a 5 ms flush).
            await asyncio.sleep(0)
            now = time.monotonic()
            behind = now - (due + interval)
            if behind > MAX_BEHIND:
                skipped = int(behind / interval)
                self.late_ticks += skipped
                n_tick += skipped
            delay = start_loop + n_tick * interval - now
            await asyncio.sleep(delay if delay > 0 else 0)

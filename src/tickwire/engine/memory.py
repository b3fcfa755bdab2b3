"""The embedded engine: everything in this process's memory."""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Iterable, Sequence

import msgspec

from tickwire.engine.base import (
    Engine,
    EngineHandler,
    EngineStats,
    HistoryResult,
    HistorySettings,
)
from tickwire.model.publication import Position, Publication, Snapshot, now_ms


def new_epoch() -> str:
    """A fresh epoch name: 8 random hex characters."""
    return secrets.token_hex(4)


class _Stream:
    __slots__ = ("epoch", "history", "kind", "last_ts", "seq", "snapshot")

    def __init__(self, channel: str, size: int) -> None:
        #: the channel's kind, as :meth:`EngineStats.count` counts it (found once)
        self.kind = channel.partition(":")[0]
        self.epoch = new_epoch()
        self.seq = 0
        self.history: deque[Publication] = deque(maxlen=size)
        self.snapshot: Snapshot | None = None
        self.last_ts = now_ms()


class MemoryEngine(Engine):
    """One process, no persistence: a restart starts new epochs everywhere."""

    name = "memory"

    def __init__(
        self,
        settings: HistorySettings | None = None,
        *,
        sweep_interval: float = 1.0,
        sweep_batch: int = 512,
    ) -> None:
        self.settings = settings or HistorySettings()
        self.stats = EngineStats()
        #: seconds between passes over every channel (trim by age, forget idle ones),
        #: done ``sweep_batch`` channels per loop iteration, never on the publish path
        self.sweep_interval = sweep_interval
        self.sweep_batch = sweep_batch
        self._streams: dict[str, _Stream] = {}
        self._subscribed: set[str] = set()
        self._handler: EngineHandler | None = None
        self._wanted: set[str] = set()
        self._sweep_todo: list[str] = []
        self._sweep_timer: asyncio.TimerHandle | asyncio.Handle | None = None

    async def start(self, handler: EngineHandler) -> None:
        self._handler = handler
        if self._sweep_timer is None:
            loop = asyncio.get_running_loop()
            self._sweep_timer = loop.call_later(self.sweep_interval, self._sweep_tick, loop)

    async def close(self) -> None:
        self._handler = None
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None

    def _stream(self, channel: str) -> _Stream:
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream(channel, self.settings.size)
        return stream

    def _trim(self, stream: _Stream, now: int) -> None:
        oldest = now - int(self.settings.ttl * 1000)
        history = stream.history
        while history and history[0].ts < oldest:
            history.popleft()

    def publish_now(
        self, channel: str, data: bytes, *, snapshot: bytes | None = None, ts: int | None = None
    ) -> Publication:
        """Synchronous :meth:`publish` for in-process publishers on the event loop."""
        stream = self._streams.get(channel) or self._stream(channel)
        ts = now_ms() if ts is None else ts
        seq = stream.seq = stream.seq + 1
        pub = Publication(channel, seq, stream.epoch, ts, msgspec.Raw(data))
        stream.history.append(pub)  # a deque with maxlen: the size trims itself
        stream.last_ts = ts
        published = self.stats.published  # EngineStats.count, the kind found once
        kind = stream.kind
        published[kind] = published.get(kind, 0) + 1
        if snapshot is not None:
            stream.snapshot = Snapshot(channel, seq, stream.epoch, ts, msgspec.Raw(snapshot))
            self._wanted.discard(channel)
        if self._handler is not None and channel in self._subscribed:
            self._handler.on_publication(pub)
        return pub

    async def publish(
        self, channel: str, data: bytes, *, snapshot: bytes | None = None, ts: int | None = None
    ) -> Publication:
        return self.publish_now(channel, data, snapshot=snapshot, ts=ts)

    async def publish_many(
        self, items: Sequence[tuple[str, bytes, bytes | None]], *, ts: int | None = None
    ) -> list[Publication]:
        """Every item in one step: nothing runs in between."""
        ts = now_ms() if ts is None else ts
        publish = self.publish_now
        return [publish(channel, data, snapshot=snap, ts=ts) for channel, data, snap in items]

    async def history(
        self, channel: str, since: Position, *, limit: int | None = None
    ) -> HistoryResult:
        stream = self._stream(channel)
        self._trim(stream, now_ms())
        position = Position(stream.epoch, stream.seq)
        missed = stream.seq - since.seq
        if since.epoch != stream.epoch or missed < 0:
            return HistoryResult(False, position, [])
        if missed == 0:
            return HistoryResult(True, position, [])
        if limit is not None and missed > limit:
            return HistoryResult(False, position, [])
        history = stream.history
        if not history or history[0].seq > since.seq + 1:
            return HistoryResult(False, position, [])
        start = since.seq + 1 - history[0].seq
        pubs = [history[i] for i in range(start, len(history))]
        return HistoryResult(True, position, pubs)

    async def position(self, channel: str) -> Position:
        stream = self._stream(channel)
        return Position(stream.epoch, stream.seq)

    async def snapshot(self, channel: str) -> Snapshot | None:
        stream = self._streams.get(channel)
        return None if stream is None else stream.snapshot

    async def request_snapshot(self, channel: str) -> None:
        self._wanted.add(channel)

    def snapshot_wanted(self, channel: str) -> bool:
        return channel in self._wanted

    async def subscribe(self, channels: Iterable[str]) -> None:
        self._subscribed.update(channels)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        self._subscribed.difference_update(channels)

    @property
    def subscribed(self) -> frozenset[str]:
        """Channels delivered to this node's handler."""
        return frozenset(self._subscribed)

    def sweep(self, now: int | None = None) -> int:
        """One whole pass at once (for tests and tools: the engine itself sweeps in
        steps, see :meth:`sweep_step`). Returns how many channels were forgotten."""
        self._sweep_todo = []
        forgotten = 0
        while True:
            forgotten += self.sweep_step(now, limit=len(self._streams) or 1)
            if not self._sweep_todo:
                return forgotten

    def sweep_step(self, now: int | None = None, *, limit: int | None = None) -> int:
        """Trim history by age and forget idle channels without a snapshot that nobody
        here subscribes to, for at most ``limit`` (``sweep_batch``) channels of the
        current pass. Returns how many channels were forgotten."""
        now = now_ms() if now is None else now
        todo = self._sweep_todo
        if not todo:
            todo = self._sweep_todo = list(self._streams)
        n = self.sweep_batch if limit is None else limit
        batch = todo[-n:]
        del todo[-n:]
        idle_before = now - int(self.settings.ttl * 1000)
        forgotten = 0
        streams = self._streams
        for name in batch:
            stream = streams.get(name)
            if stream is None:
                continue
            self._trim(stream, now)
            idle = stream.last_ts < idle_before and stream.snapshot is None
            if idle and name not in self._subscribed:
                del streams[name]
                self._wanted.discard(name)
                forgotten += 1
        return forgotten

    @property
    def sweep_pending(self) -> int:
        """Channels left in the current sweep pass."""
        return len(self._sweep_todo)

    def _sweep_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """One step of the pass; the next step runs in the next loop iteration (so
        publications and fan-out run in between), the next pass after the interval."""
        self.sweep_step()
        if self._sweep_todo:
            self._sweep_timer = loop.call_soon(self._sweep_tick, loop)
        else:
            self._sweep_timer = loop.call_later(self.sweep_interval, self._sweep_tick, loop)

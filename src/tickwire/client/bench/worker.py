"""One load-generator process: many WebSocket connections on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import struct
import time
from collections import Counter
from multiprocessing.connection import Connection as Pipe
from typing import Any, cast

from tickwire.client.bench.config import BenchConfig, channels_for
from tickwire.client.bench.dialects import BenchDialect, dialect_for
from tickwire.client.bench.stats import Histogram
from tickwire.client.bench.wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ProtocolError,
    client_frame,
    handshake_request,
    sample_ts,
    scan,
)

_HANDSHAKE, _OPEN, _READY, _CLOSED = range(4)
_MAX_HEADER = 16384
_REPORT_EVERY = 0.5


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit; returns the new soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Counters:
    """What one worker has seen; the connections add to it directly."""

    __slots__ = (
        "bytes",
        "close_codes",
        "errors",
        "failed",
        "frames",
        "hist",
        "lost",
        "messages",
        "opened",
        "reads",
        "ready",
        "recent",
        "recording",
        "sample_countdown",
        "sample_every",
    )

    def __init__(self, sample_every: int) -> None:
        self.opened = 0
        self.ready = 0
        self.failed = 0
        self.lost = 0
        self.frames = 0
        self.messages = 0
        #: data_received calls: what the transport read from the socket, one or more
        #: of the server's writes each
        self.reads = 0
        self.bytes = 0
        self.close_codes: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.hist = Histogram()  # the measured window
        self.recent = Histogram()  # since the last progress report
        self.recording = False
        self.sample_every = max(1, sample_every)
        self.sample_countdown = self.sample_every

    def error(self, what: str) -> None:
        if len(self.errors) < 20 or what in self.errors:
            self.errors[what] += 1


class BenchClient(asyncio.Protocol):
    """One WebSocket connection that counts what it receives and decodes almost nothing."""

    __slots__ = ("dialect", "key", "opened", "request", "rest", "state", "stats", "transport")

    def __init__(
        self,
        stats: Counters,
        dialect: BenchDialect,
        request: bytes,
        opened: asyncio.Future[None],
    ) -> None:
        self.stats = stats
        self.dialect = dialect
        self.request = request
        self.opened: asyncio.Future[None] | None = opened
        self.rest = b""
        self.state = _HANDSHAKE
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def _fail(self, why: str) -> None:
        if self.state in (_HANDSHAKE, _OPEN):
            self.stats.failed += 1
        self.stats.error(why)
        self.state = _CLOSED
        self._settle()
        if self.transport is not None:
            self.transport.abort()

    def _settle(self) -> None:
        if self.opened is not None:
            if not self.opened.done():
                self.opened.set_result(None)
            self.opened = None

    def data_received(self, data: bytes) -> None:
        stats = self.stats
        stats.bytes += len(data)
        stats.reads += 1
        if self.rest:
            data = self.rest + data
        state = self.state
        if state == _HANDSHAKE:
            i = data.find(b"\r\n\r\n")
            if i < 0:
                if len(data) > _MAX_HEADER:
                    self._fail("handshake: response header too large")
                else:
                    self.rest = data
                return
            status = data[: data.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                self._fail("handshake: " + status.decode(errors="replace")[:80])
                return
            data = data[i + 4 :]
            self.state = state = _OPEN
            stats.opened += 1
            self._settle()
            assert self.transport is not None
            for payload in self.dialect.opening():
                self.transport.write(client_frame(OP_TEXT, payload))
        elif state == _CLOSED:
            return
        try:
            pos, frames, messages, special = scan(data, 0, state != _READY)
        except ProtocolError as exc:
            self._fail(str(exc))
            return
        if pos:
            stats.frames += frames
            if messages:
                stats.messages += messages
                stats.sample_countdown -= 1
                if stats.sample_countdown <= 0:
                    stats.sample_countdown = stats.sample_every
                    sent = sample_ts(data, 0, pos)
                    if sent >= 0:
                        latency = time.time_ns() // 1000 - sent
                        stats.recent.add(latency)
                        if stats.recording:
                            stats.hist.add(latency)
        self.rest = data[pos:] if pos < len(data) else b""
        if special is not None:
            self._special(special)

    def _special(self, frames: list[tuple[int, bytes]]) -> None:
        transport = self.transport
        assert transport is not None
        for opcode, payload in frames:
            if self.state == _CLOSED:
                return
            if opcode == OP_TEXT or opcode == OP_BINARY:
                step = self.dialect.on_message(payload, self.state == _READY)
                for out in step.send:
                    transport.write(client_frame(OP_TEXT, out))
                if step.error is not None:
                    self._fail("subscribe: " + step.error)
                    return
                if step.ready and self.state == _OPEN:
                    self.state = _READY
                    self.stats.ready += 1
            elif opcode == OP_PING:
                transport.write(client_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.stats.close_codes[code] += 1
                if self.state == _READY:
                    self.stats.lost += 1
                    self.stats.ready -= 1
                else:
                    self.stats.failed += 1
                self.state = _CLOSED
                transport.write(client_frame(OP_CLOSE, payload[:2]))
                transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == _READY:
            self.stats.lost += 1
            self.stats.ready -= 1
            self.stats.close_codes[1006] += 1
        elif self.state != _CLOSED:
            self.stats.failed += 1
            self.stats.error("connection lost before ready")
        self.state = _CLOSED
        self._settle()

    def close(self) -> None:
        """Close without a closing handshake: the run is over."""
        self.state = _CLOSED
        if self.transport is not None:
            self.transport.abort()


class Worker:
    """Opens this worker's share of the connections and reports to the coordinator."""

    def __init__(self, config: BenchConfig, index: int, pipe: Pipe) -> None:
        self.config = config
        self.index = index
        self.pipe = pipe
        self.stats = Counters(config.sample_every)
        self.clients: list[BenchClient] = []
        self.done = asyncio.Event()
        self.window: dict[str, Any] = {}
        self._start_totals: tuple[int, int, int, int] = (0, 0, 0, 0)

    def my_indices(self) -> range:
        return range(self.index, self.config.connections, self.config.workers)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.pipe.fileno(), self._command)
        reporter = asyncio.ensure_future(self._report_loop())
        try:
            await self._connect_all()
            self.pipe.send(("connected", self._progress()))
            await self.done.wait()
        finally:
            reporter.cancel()
            loop.remove_reader(self.pipe.fileno())
            for client in self.clients:
                client.close()
        self.pipe.send(("final", self._final()))

    async def _connect_all(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        indices = iter(self.my_indices())
        target = cfg.target

        async def one(i: int) -> None:
            dialect_cls = dialect_for(cfg.dialect, i)
            dialect = dialect_cls(channels_for(cfg.channels, i, cfg.seed), cfg.credentials)
            path = dialect.path(target.path or dialect_cls.default_path)
            request, _ = handshake_request(target.host, target.port, path)
            opened: asyncio.Future[None] = loop.create_future()
            client = BenchClient(self.stats, dialect, request, opened)
            try:
                await loop.create_connection(lambda: client, target.host, target.port)
            except OSError as exc:
                self.stats.failed += 1
                self.stats.error(f"connect: {exc.strerror or exc}")
                return
            self.clients.append(client)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(cfg.connect_timeout):
                    await opened

        async def opener() -> None:
            for i in indices:
                if self.done.is_set():
                    return
                await one(i)

        await asyncio.gather(*(opener() for _ in range(max(1, cfg.connect_concurrency))))

    def _command(self) -> None:
        try:
            msg = self.pipe.recv()
        except EOFError:
            self.done.set()
            return
        kind = msg[0]
        if kind == "measure":
            self._start_measure()
        elif kind == "end":
            self._end_measure()
        elif kind == "stop":
            self.done.set()

    def _totals(self) -> tuple[int, int, int, int]:
        s = self.stats
        return s.messages, s.frames, s.bytes, s.reads

    def _start_measure(self) -> None:
        self._start_totals = self._totals()
        self.stats.hist.clear()
        self.stats.recording = True
        self.window = {"start": time.time(), "cpu_start": _cpu_seconds()}

    def _end_measure(self) -> None:
        if not self.stats.recording:
            return
        self.stats.recording = False
        m0, f0, b0, r0 = self._start_totals
        m1, f1, b1, r1 = self._totals()
        self.window.update(
            end=time.time(),
            cpu=_cpu_seconds() - self.window["cpu_start"],
            messages=m1 - m0,
            frames=f1 - f0,
            bytes=b1 - b0,
            reads=r1 - r0,
            hist=self.stats.hist.sparse(),
        )
        self.pipe.send(("window", self.window))

    def _progress(self) -> dict[str, Any]:
        s = self.stats
        recent = s.recent.sparse()
        s.recent.clear()
        return {
            "worker": self.index,
            "time": time.time(),
            "opened": s.opened,
            "ready": s.ready,
            "failed": s.failed,
            "lost": s.lost,
            "frames": s.frames,
            "messages": s.messages,
            "bytes": s.bytes,
            "recent": recent,
        }

    def _final(self) -> dict[str, Any]:
        s = self.stats
        out = self._progress()
        out["close_codes"] = dict(s.close_codes)
        out["errors"] = dict(s.errors)
        return out

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(_REPORT_EVERY)
            self.pipe.send(("progress", self._progress()))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_main(config: BenchConfig, index: int, pipe: Pipe) -> None:
    """Entry point of a worker process."""
    if config.cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {config.cpus[index % len(config.cpus)]})
    raise_nofile()
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(Worker(config, index, pipe).run())

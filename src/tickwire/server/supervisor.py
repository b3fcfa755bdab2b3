"""``tickwire serve --workers N``: one supervisor process and N worker processes on one
port (docs/scaling.md, Workers).

The supervisor binds no listening socket. It checks that the port is free (a port in use
is the same one-line error as without workers), resolves port 0 to a concrete port and
keeps it reserved with a bound, never listening ``SO_REUSEPORT`` socket, so that a worker
started again later binds the same port and nobody else can take it meanwhile. Each worker
is a full node (``python -m tickwire serve --worker-of PID --worker-index I``) listening on
that port with ``SO_REUSEPORT``: the kernel spreads new connections over the workers that
listen, and the workers share channels, sequences and history through the engine.

Workers are separate programs started with ``subprocess`` (fork and exec at once: no
process continues from a copy of a running event loop), not ``multiprocessing``: a worker
is exactly the ``tickwire serve`` that runs without workers, it does not depend on how the
supervisor's ``__main__`` was started, and ``ps`` shows what it is. The supervisor writes
its resolved config to the worker's stdin (flags, environment and file are read once, and
no secret goes on a command line) and keeps that pipe open: a worker that reads end of
file there has lost its supervisor (even to ``kill -9``) and drains and exits. A worker
says it listens with one line on its stdout.

A worker that exits unexpectedly is started again after a delay that doubles with each
exit in a row that came soon after its start (0.1 s up to 30 s), so a crash loop does not
spin. SIGTERM or SIGINT to the supervisor is passed to every worker, which drains its
clients (close 3001) and exits; the supervisor exits when all have, 0 when all exited 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from tickwire.server.app import ListenError, banner
from tickwire.server.config import Config
from tickwire.server.node import make_engine

log = logging.getLogger(__name__)

#: What a worker prints on its stdout once it listens.
READY = b"tickwire-worker-ready\n"
#: Restart delays: the first, the factor per quick exit in a row, the longest.
RESTART_FIRST, RESTART_FACTOR, RESTART_MAX = 0.1, 2.0, 30.0
#: A worker that ran this long before it exited is restarted without delay growth.
STABLE_AFTER = 10.0
#: Seconds a worker has to start listening.
START_TIMEOUT = 60.0


def reserve(host: str, port: int) -> tuple[int, list[socket.socket]]:
    """Check that ``host:port`` is free and hold it: returns the port (port 0 resolved)
    and bound, not listening ``SO_REUSEPORT`` sockets, one per address of ``host``.
    Raises :class:`ListenError` when the port is in use or the address cannot be bound."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise ListenError(host, port, exc) from None
    held: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            # a probe without SO_REUSEPORT fails on any listening socket, ours or not
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind((address[0], port, *address[2:]))
                port = probe.getsockname()[1]
            sock = socket.socket(family, kind, proto)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
    except OSError as exc:
        for sock in held:
            sock.close()
        raise ListenError(host, port, exc) from None
    return port, held


@dataclass
class WorkerProcess:
    """One worker slot: the process running in it now, and its restart history."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    quick_exits: int = 0
    restarts: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Supervisor:
    """Runs ``workers`` worker processes of ``config`` until SIGTERM or SIGINT."""

    def __init__(
        self, config: Config, workers: int, *, command: Sequence[str] | None = None
    ) -> None:
        self.config = config
        self.workers = [WorkerProcess(i) for i in range(workers)]
        self.command = list(command or [sys.executable, "-m", "tickwire", "serve"])
        self.stopping = asyncio.Event()
        #: Set once every worker listens (before the banner).
        self.ready = asyncio.Event()
        self._config_line = b""

    async def run(self) -> int:
        """Reserve the ports, start the workers, print the banner, supervise; returns
        the exit code. Raises :class:`ListenError` when a port is in use, and
        :class:`ConfigError` when the engine URL does not parse or its package is
        missing (said once, here, rather than by every worker)."""
        make_engine(self.config)  # builds the client only: it connects when started
        port, held = reserve(self.config.host, self.config.port)
        opcode_port = self.config.opcode_port
        if opcode_port is not None:
            try:
                opcode_port, more = reserve(self.config.host, opcode_port)
            except ListenError:
                for sock in held:
                    sock.close()
                raise
            held += more
        config = msgspec.structs.replace(self.config, port=port, opcode_port=opcode_port)
        if not config.auth.auth_secret:
            # one random secret for all workers: a token or session key made by one is
            # valid on all (it signs HS256 tokens and derives the session keys)
            auth = dataclasses.replace(config.auth, auth_secret=secrets.token_urlsafe(48))
            config = msgspec.structs.replace(config, auth=auth)
            log.warning(
                "auth: no secret configured (TICKWIRE_AUTH_SECRET): the workers share a "
                "random one; tokens and session keys end when this supervisor does and work "
                "on its workers only"
            )
        self._config_line = msgspec.json.encode(config) + b"\n"
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            code = await self._start_all()
            if code is None:
                self.ready.set()
                print(
                    "\n".join(banner(self.config, port, opcode_port, len(self.workers))),
                    flush=True,
                )
                await self._supervise()
                code = 0
            return await self._stop_all(code)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            for sock in held:
                sock.close()

    async def _start_all(self) -> int | None:
        """Worker 0 first (a config error is then reported once), then the others
        together. Returns None when all listen, else the exit code to exit with."""
        first, *rest = self.workers
        for group in ([first], rest):
            results = await asyncio.gather(*(self._start(w) for w in group))
            for w, ok in zip(group, results, strict=True):
                if not ok:
                    assert w.proc is not None
                    code = w.proc.returncode
                    return code if code is not None and code > 0 else 1
            if self.stopping.is_set():
                return 0
        return None

    async def _start(self, w: WorkerProcess) -> bool:
        """Start a worker in ``w``'s slot and wait until it listens; False if it exited
        (or had to be killed) before it did."""
        argv = [*self.command, "--worker-of", str(os.getpid()), "--worker-index", str(w.index)]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        w.proc, w.started = proc, time.monotonic()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(self._config_line)
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        try:
            async with asyncio.timeout(START_TIMEOUT):
                line = await proc.stdout.readline()
        except TimeoutError:
            log.error(
                "worker %d (pid %d) did not listen in %.0f s", w.index, proc.pid, START_TIMEOUT
            )
            _signal(proc, signal.SIGKILL)
            line = b""
        if line != READY:
            if line:  # it printed something else, or is stuck: it will not listen
                _signal(proc, signal.SIGKILL)
            try:  # at end of file it is exiting: its own exit code says why
                async with asyncio.timeout(10.0):
                    await proc.wait()
            except TimeoutError:
                _signal(proc, signal.SIGKILL)
                await proc.wait()
            return False
        w.tasks.append(asyncio.create_task(self._relay(proc.stdout)))
        return True

    @staticmethod
    async def _relay(stream: asyncio.StreamReader) -> None:
        """Whatever else a worker prints goes to the supervisor's stdout."""
        while line := await stream.readline():
            sys.stdout.buffer.write(line)
            sys.stdout.flush()

    async def _supervise(self) -> None:
        """Keep every worker running until told to stop."""
        keepers = [asyncio.create_task(self._keep(w)) for w in self.workers]
        await self.stopping.wait()
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)

    async def _keep(self, w: WorkerProcess) -> None:
        """Start ``w`` again each time it exits, after its backoff (cancelled on stop)."""
        while True:
            assert w.proc is not None
            await w.proc.wait()
            if self.stopping.is_set():
                return
            ran = time.monotonic() - w.started
            w.quick_exits = 0 if ran >= STABLE_AFTER else w.quick_exits + 1
            delay = (
                0.0
                if w.quick_exits == 0
                else min(RESTART_MAX, RESTART_FIRST * RESTART_FACTOR ** (w.quick_exits - 1))
            )
            log.warning(
                "worker %d (pid %d) exited unexpectedly (%s) after %.1f s; starting it again "
                "in %.1f s",
                w.index,
                w.proc.pid,
                _how(w.proc.returncode),
                ran,
                delay,
            )
            await asyncio.sleep(delay)  # the backoff itself: cancelled when stopping
            w.restarts += 1
            if await self._start(w):
                assert w.proc is not None
                log.warning("worker %d started again (pid %d)", w.index, w.proc.pid)

    async def _stop_all(self, code: int) -> int:
        """Pass SIGTERM to every live worker and wait until all exited (SIGKILL after
        three times ``drain_timeout``, as long as a worker's drain, its connections' close
        and its hub's may each take, plus 10 s). Returns ``code``, or 1 if a worker did
        not exit 0."""
        live = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        if live:
            log.info("stopping %d workers: draining clients", len(live))
        for proc in live:
            _signal(proc, signal.SIGTERM)
        try:
            async with asyncio.timeout(3 * self.config.drain_timeout + 10.0):
                await asyncio.gather(*(proc.wait() for proc in live))
        except TimeoutError:
            for proc in live:
                if proc.returncode is None:
                    log.error("worker pid %d did not exit: killing it", proc.pid)
                    _signal(proc, signal.SIGKILL)
            await asyncio.gather(*(proc.wait() for proc in live))
        for w in self.workers:
            for task in w.tasks:
                task.cancel()
            await asyncio.gather(*w.tasks, return_exceptions=True)
        # a worker still starting may not have its handler yet: SIGTERM ends it at once
        clean = (0, -signal.SIGTERM)
        if code == 0 and any(proc.returncode not in clean for proc in live):
            for proc in live:
                if proc.returncode not in clean:
                    log.error("worker pid %d exited %s", proc.pid, _how(proc.returncode))
            return 1
        return code


def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
    """Send ``sig`` with ``os.kill``, not ``proc.send_signal``: that polls first, and a
    poll reaps a worker that just exited before the event loop's child watcher does,
    which then reports exit code 255 instead of the worker's own. A signal to a process
    that exited but was not reaped yet does nothing (its pid is not reused before)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)


def _how(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def supervise(config: Config, workers: int) -> int:
    """Run ``workers`` workers of ``config`` until SIGTERM/SIGINT; returns the exit code.
    Raises :class:`ListenError` when a port is in use."""
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s supervisor %(name)s: %(message)s",
    )
    return asyncio.run(Supervisor(config, workers).run())


class StdioSeat:
    """A worker's side of the supervisor's pipes: its config and liveness on stdin, the
    one line that says it listens on stdout."""

    def __init__(self, index: int) -> None:
        self.index = index

    def listening(self, port: int, opcode_port: int | None) -> None:
        sys.stdout.buffer.write(READY)
        sys.stdout.flush()

    async def supervisor_gone(self) -> None:
        loop = asyncio.get_running_loop()
        gone = loop.create_future()

        class Watch(asyncio.Protocol):
            def connection_lost(self, exc: Exception | None) -> None:
                if not gone.done():
                    gone.set_result(None)

        transport, _ = await loop.connect_read_pipe(Watch, sys.stdin.buffer)
        try:
            await gone
        finally:
            transport.close()


def run_worker(supervisor: int, index: int) -> int:
    """A worker's life: read the config from stdin, serve until told to stop or until
    the supervisor is gone. Returns the exit code."""
    from tickwire.server.app import serve

    line = sys.stdin.buffer.readline()
    if not line:
        return 1  # the supervisor went away before it said anything
    config = msgspec.json.decode(line, type=Config)
    if os.getppid() != supervisor:
        print(
            f"tickwire: worker {index}: its supervisor (pid {supervisor}) is gone", file=sys.stderr
        )
        return 1
    serve(config, worker=StdioSeat(index))
    return 0

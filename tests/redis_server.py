"""A private redis-server on an ephemeral port, for tests that stop, restart or
reconfigure Redis (never done to the shared one on 6379)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
from pathlib import Path

import pytest

from .services import IN_CI


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_args(port: int, workdir: Path, *extra: str) -> list[str]:
    """A private redis-server's arguments: loopback only, that port, nothing on disk."""
    return [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        *extra,
    ]


class RedisServer:
    """``redis-server`` as a child process. ``start()`` returns once it accepts
    connections (its log says so); ``stop()`` kills it; ``start()`` again reuses the port.
    No persistence unless ``extra`` asks for it, so a restart loses every key."""

    def __init__(self, workdir: Path, *extra: str, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            # a missing service fails in CI and skips (with the reason) elsewhere
            (pytest.fail if IN_CI else pytest.skip)("redis-server is not installed")
        self.binary = binary
        self.workdir = workdir
        self.extra = extra
        self.port = port or free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        self._drain: asyncio.Task[None] | None = None
        #: the log line (lower case) that says the server is ready
        self.ready_marker = "ready to accept connections"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        return server_args(self.port, self.workdir, *self.extra)

    async def start(self, timeout: float = 10.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            *self.args(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        ready = asyncio.get_running_loop().create_future()
        self._drain = asyncio.create_task(self._read_log(self.proc, ready))
        try:
            async with asyncio.timeout(timeout):
                await ready
        except BaseException:
            await self.stop()  # never leave a server behind
            raise

    async def _read_log(
        self, proc: asyncio.subprocess.Process, ready: asyncio.Future[None]
    ) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            self.log.append(text)
            if self.ready_marker in text.lower() and not ready.done():
                ready.set_result(None)
        if not ready.done():
            ready.set_exception(RuntimeError("redis-server exited:\n" + "\n".join(self.log)))

    async def stop(self, sig: int = signal.SIGKILL) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(sig)
        await proc.wait()
        if self._drain is not None:
            await self._drain
            self._drain = None

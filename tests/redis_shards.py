"""Private redis-servers for the sharded engine's tests: three on free ports, in a
temporary directory, started once per test session (well under a second)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .redis_server import free_port, server_args
from .services import IN_CI


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisShards:
    """``count`` independent ``redis-server`` processes (no persistence)."""

    def __init__(self, workdir: Path, count: int = 3) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            (pytest.fail if IN_CI else pytest.skip)("redis-server is not installed")
        assert binary is not None
        self.binary = binary
        self.workdir = workdir
        self.ports: list[int] = []
        while len(self.ports) < count:
            port = free_port()
            if port not in self.ports:
                self.ports.append(port)
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def urls(self) -> list[str]:
        """Named ``s1``, ``s2``, … so that placement is the same in every session (the
        ports are not)."""
        return [f"redis://127.0.0.1:{p}/0?shard=s{i}" for i, p in enumerate(self.ports, 1)]

    def start(self, timeout: float = 15.0) -> None:
        try:
            for port in self.ports:
                node_dir = self.workdir / str(port)
                node_dir.mkdir()
                self.procs.append(
                    subprocess.Popen(
                        [self.binary, *server_args(port, node_dir)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            deadline = time.monotonic() + timeout
            for port, proc in zip(self.ports, self.procs, strict=True):
                # no event to await from another process: poll, bounded
                while not _answers(port):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on port {port} did not start")
                    time.sleep(0.02)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.procs = []

"""A private Redis Cluster for the tests: three masters and a replica of each, on free
ports, in a temporary directory, started once per test session (a few seconds)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .services import IN_CI


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (port + 10000) is free too: the kernel's
    ephemeral ports are too high for that, so pick among 20000-45000."""
    for _ in range(1000):
        port = random.randrange(20000, 45000)
        if port not in taken and _free(port) and _free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _cli(port: int, *args: str, timeout: float = 30.0) -> str:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return out.stdout


def _wait_until(what: str, check: object, timeout: float = 30.0) -> None:
    """Poll ``check()`` (Redis has no event to await for cluster state) until it holds."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis Cluster: {what} did not happen within {timeout:g} s")
        time.sleep(0.05)


class RedisCluster:
    """``redis-server --cluster-enabled yes`` six times, joined by ``redis-cli --cluster
    create --cluster-replicas 1``."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        for tool in ("redis-server", "redis-cli"):
            if shutil.which(tool) is None:
                (pytest.fail if IN_CI else pytest.skip)(f"{tool} is not installed")
        self.workdir = workdir
        self.ports: list[int] = []
        for _ in range(2 * masters):
            self.ports.append(cluster_port(set(self.ports)))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def start(self) -> None:
        try:
            for port in self.ports:
                node_dir = self.workdir / str(port)
                node_dir.mkdir()
                self.procs[port] = subprocess.Popen(
                    [
                        "redis-server",
                        "--port", str(port),
                        "--bind", "127.0.0.1",
                        "--save", "",
                        "--appendonly", "no",
                        "--dir", str(node_dir),
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "3000",
                        "--logfile", str(node_dir / "redis.log"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            for port in self.ports:
                _wait_until(f"node {port} listening", lambda p=port: self._listening(p))
            _cli(
                self.ports[0],
                "--cluster", "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas", "1",
                "--cluster-yes",
            )  # fmt: skip
            for port in self.ports:
                _wait_until(f"node {port} cluster_state:ok", lambda p=port: self._ok(p))
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    @staticmethod
    def _ok(port: int) -> bool:
        return "cluster_state:ok" in _cli(port, "CLUSTER", "INFO")

    def role(self, port: int) -> str:
        return _cli(port, "ROLE").split("\n", 1)[0].strip()

    def replica_of(self, master_port: int) -> int:
        """The port of a replica of the master on ``master_port``."""
        for port in self.ports:
            if port != master_port and self.role(port) == "slave":
                info = _cli(port, "INFO", "replication")
                if f"master_port:{master_port}" in info:
                    return port
        raise RuntimeError(f"no replica of {master_port}")

    def failover(self, replica_port: int) -> None:
        """``CLUSTER FAILOVER`` on a replica; returns once it is a master everywhere."""
        _cli(replica_port, "CLUSTER", "FAILOVER")
        _wait_until(f"{replica_port} promoted", lambda: self.role(replica_port) == "master")
        for port in self.ports:
            _wait_until(f"node {port} cluster_state:ok", lambda p=port: self._ok(p))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait()
        self.procs.clear()

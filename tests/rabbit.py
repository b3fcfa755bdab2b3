"""RabbitMQ for the ingest tests: a scratch virtual host on the machine's broker (several
agents share it: each test module gets a vhost of its own, deleted afterwards), and a
private broker node that a test may restart (the shared one is never restarted)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from .services import AMQP_URL, IN_CI, require


def require_rabbitmq() -> None:
    parts = urlsplit(AMQP_URL)
    require("RabbitMQ", parts.hostname or "127.0.0.1", parts.port or 5672)


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} (CI=true: a missing service fails the run)")
    pytest.skip(what)  # outside CI only (CI failed above)


async def ctl(*args: str, node: str | None = None, check: bool = True) -> str:
    """Run ``rabbitmqctl`` (against ``node``, or the machine's broker)."""
    cmd = ["rabbitmqctl", *(["-n", node] if node else []), *args]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {text[-500:]}")
    return text


def _ctl_sync(*args: str, check: bool = True) -> None:
    proc = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {proc.stdout[-500:]}")


@contextmanager
def scratch_vhost() -> Iterator[str]:
    """The AMQP URL of a new vhost on the machine's broker (deleted afterwards)."""
    require_rabbitmq()
    if shutil.which("rabbitmqctl") is None:
        _missing("rabbitmqctl is not installed (needed to make a scratch vhost)")
    vhost = f"tickwire-test-{uuid.uuid4().hex[:10]}"
    _ctl_sync("add_vhost", vhost)
    try:
        _ctl_sync("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        parts = urlsplit(AMQP_URL)
        yield f"{parts.scheme}://{parts.netloc}/{quote(vhost, safe='')}"
    finally:
        _ctl_sync("delete_vhost", vhost, check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateBroker:
    """A RabbitMQ node of this test alone (own name, ports, data directory)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.dist_port = _free_port()
        self.name = f"tw{uuid.uuid4().hex[:8]}@localhost"
        self.dir = Path(tempfile.mkdtemp(prefix="tickwire-rabbit-"))
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        d = self.dir
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (d / "enabled_plugins").write_text("[].\n")
        (d / "env.conf").write_text("")
        for sub in ("mnesia", "log"):
            (d / sub).mkdir(exist_ok=True)
        try:
            user = pwd.getpwnam("rabbitmq")
            for path in [d, *d.iterdir()]:
                os.chown(path, user.pw_uid, user.pw_gid)
        except (KeyError, PermissionError):
            pass
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "env.conf"),
            "RABBITMQ_PID_FILE": str(d / "pid"),
            # Erlang distribution on loopback only
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    async def start(self) -> None:
        if shutil.which("rabbitmq-server") is None:
            _missing("rabbitmq-server is not installed (needed for a private broker)")
        self.proc = await asyncio.create_subprocess_exec(
            "rabbitmq-server",
            env=self._env(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await ctl("wait", str(self.dir / "pid"), "--timeout", "60", node=self.name)
        await self.wait_listening()

    async def wait_listening(self) -> None:
        await ctl("await_startup", "--timeout", "60", node=self.name)

    async def restart(self) -> None:
        """Stop and start the broker application: every connection is closed, every
        non-durable exchange and queue is gone (a broker restart to its clients)."""
        await ctl("stop_app", node=self.name)
        await ctl("start_app", node=self.name)
        await self.wait_listening()

    async def close_connections(self, name: str) -> int:
        """Close the client connections called ``name`` (``rabbitmqctl close_connection``);
        returns how many."""
        listing = await ctl(
            "list_connections",
            "pid",
            "client_properties",
            "--no-table-headers",
            "-q",
            node=self.name,
        )
        pids = [line.split()[0] for line in listing.splitlines() if f'"{name}"' in line]
        for pid in pids:
            await ctl("close_connection", pid, "test: connection closed", node=self.name)
        assert pids, f"no connection called {name}: {listing[-300:]}"
        return len(pids)

    async def stop(self) -> None:
        if self.proc is not None:
            await ctl("stop", node=self.name, check=False)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()  # the process this test started, by its id
                await self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

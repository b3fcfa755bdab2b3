"""``tickwire serve`` as a real process: it prints its URLs, serves, and on SIGTERM tells
clients to reconnect elsewhere (close 3001) before exiting; a port in use is one line."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp


async def test_sigterm_drains_clients_then_exits() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tickwire",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TICKWIRE_KEY_STORE": ":memory:"},  # no key file in the cwd
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(20):
            while not any("metrics" in line for line in lines):
                lines.append((await proc.stdout.readline()).decode())
        ws_url = next(re.search(r"ws://\S+", line) for line in lines if "ws://" in line)
        assert ws_url is not None
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(ws_url.group(0))
            await ws.send_json({"id": 1, "op": "subscribe", "channels": ["trades:BTC-USD"]})
            reply = await ws.receive_json(timeout=5)
            assert reply["type"] == "subscribed"
            proc.send_signal(signal.SIGTERM)
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert (msg.data, msg.extra) == (3001, "shutdown")
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_port_in_use_is_one_line_naming_it_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tickwire",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=tmp_path,
            env={**os.environ, "TICKWIRE_KEY_STORE": ":memory:"},
        )
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    assert proc.returncode == 2, (out, err)
    assert out == b"" and b"Traceback" not in err, err
    assert err.decode().splitlines()[-1] == (
        f"tickwire: cannot listen on 127.0.0.1:{port}: port {port} is already in use "
        "(choose another with --port or TICKWIRE_PORT)"
    )

"""The core install (no extras) serves with the embedded defaults, and a setting that needs
an extra says which one.

Each test runs the real command line in a child process in which the optional packages
cannot be imported (an import hook raises ``ModuleNotFoundError`` for them, as on an
install without ``tickwire[redis]``, ``tickwire[postgres]`` or ``tickwire[bench]``; and
python-socketio, which only the tests use).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

#: The top-level modules the extras bring, and the tests' own Socket.IO client.
OPTIONAL = ("redis", "hiredis", "asyncpg", "rich", "socketio", "engineio")

RUN_WITHOUT_EXTRAS = f"""
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {OPTIONAL!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from tickwire.client.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def start(tmp_path: Path, *args: str, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUN_WITHOUT_EXTRAS,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "TICKWIRE_KEY_STORE": ":memory:", **env},
    )


async def run(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    proc = await start(tmp_path, *args, **env)
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_demo_serves_without_any_extra(tmp_path: Path) -> None:
    proc = await start(tmp_path, "serve", "--host", "127.0.0.1", "--port", "0", "--demo")
    try:
        assert proc.stdout is not None and proc.stderr is not None
        lines: list[str] = []
        async with asyncio.timeout(30):
            while not any("metrics" in line for line in lines):
                line = (await proc.stdout.readline()).decode()
                assert line, (await proc.stderr.read()).decode()
                lines.append(line)
        http = next(w for line in lines for w in line.split() if w.startswith("http://"))
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(http.replace("http://", "ws://") + "ws") as ws:
                await ws.send_json({"id": 1, "op": "subscribe", "channels": ["book:BTC-USD"]})
                reply = await ws.receive_json(timeout=10)
                assert reply["type"] == "subscribed", reply
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_redis_engine_names_the_redis_extra(tmp_path: Path) -> None:
    code, _, err = await run(tmp_path, "serve", "--engine", "redis://127.0.0.1:1")
    assert code == 2
    assert err == (
        "tickwire: config field 'engine': a Redis engine needs the 'redis' package: "
        "pip install 'tickwire[redis]'\n"
    )


async def test_a_postgres_key_store_names_the_postgres_extra(tmp_path: Path) -> None:
    dsn = "postgresql://nobody@127.0.0.1:1/none"
    code, _, err = await run(tmp_path, "serve", TICKWIRE_KEY_STORE=dsn)
    assert code == 2
    assert err.count("\n") == 1 and "'asyncpg'" in err and "tickwire[postgres]" in err, err


async def test_bench_names_the_bench_extra(tmp_path: Path) -> None:
    code, _, err = await run(
        tmp_path, "bench", "--url", "ws://127.0.0.1:1", "--duration", "1", "--warmup", "0"
    )
    assert (code, err) == (2, "tickwire bench: needs rich: pip install 'tickwire[bench]'\n")

"""RSS of a node before and after rounds of connections opened and closed (issue 10).

    .venv/bin/python bench/memory_flood.py --connections 3000 --rounds 2

Starts ``tickwire serve`` on a free loopback port, opens ``--connections`` native
WebSocket connections (200 handshakes in flight), closes them all, and prints the
server's VmRSS after each round (docs/operations.md, "Memory").
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

TICKWIRE = Path(sys.executable).with_name("tickwire")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def handshake(
    port: int, sem: asyncio.Semaphore
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        return reader, writer


async def flood(port: int, n: int) -> None:
    sem = asyncio.Semaphore(200)
    conns = await asyncio.gather(*(handshake(port, sem) for _ in range(n)))
    for _, writer in conns:
        writer.close()
    await asyncio.sleep(2)  # let the server see every close


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--connections", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "TICKWIRE_MAX_CONNECTIONS_PER_ADDRESS": "0",
        "TICKWIRE_KEY_STORE": ":memory:",
    }
    cmd = [str(TICKWIRE), "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)
        base = rss_mb(proc.pid)
        print(f"baseline: {base:.1f} MB")
        for i in range(args.rounds):
            asyncio.run(flood(port, args.connections))
            now = rss_mb(proc.pid)
            print(f"after round {i + 1}: {now:.1f} MB (+{now - base:.1f})")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()

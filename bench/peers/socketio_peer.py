"""`python-socketio` peer on aiohttp: rooms per channel, ``sio.emit('pub', …, room=…)``,
WebSocket transport. Subscribe: ``emit('subscribe', {channels}, ack)``.
Usage: python socketio_peer.py --port P --synthetic SPEC
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import socketio
from aiohttp import web
from synthetic_spec import install_uvloop, raise_nofile, start

sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"], cors_allowed_origins="*")
seqs: dict[str, int] = {}


async def subscribe(sid: str, msg: Any) -> dict[str, Any]:
    names = [c if isinstance(c, str) else c["channel"] for c in (msg or {}).get("channels", [])]
    for name in names:
        await sio.enter_room(sid, name)
    return {"channels": names}


sio.on("subscribe", handler=subscribe)


async def publish(channel: str, data: str) -> None:
    seq = seqs.get(channel, 0) + 1
    seqs[channel] = seq
    env = {
        "type": "pub",
        "channel": channel,
        "seq": seq,
        "epoch": "peer0001",
        "ts": time.time_ns() // 1_000_000,
        "data": json.loads(data),
    }
    await sio.emit("pub", env, room=channel)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--synthetic", default="")
    args = ap.parse_args()
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port, backlog=4096).start()
    start(args.synthetic, publish)
    await asyncio.Event().wait()


if __name__ == "__main__":
    raise_nofile()
    install_uvloop()
    asyncio.run(main())

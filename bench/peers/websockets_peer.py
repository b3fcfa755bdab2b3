"""`websockets` peer: the asyncio implementation's ``broadcast()`` to every subscriber,
compression off. Speaks the subset of tickwire's native protocol the generator uses.
Usage: python websockets_peer.py --port P --synthetic SPEC
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from synthetic_spec import Sequencer, install_uvloop, raise_nofile, start
from websockets.asyncio.server import ServerConnection, broadcast, serve

channels: dict[str, set[ServerConnection]] = {}


async def handler(ws: ServerConnection) -> None:
    mine: list[str] = []
    try:
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("op") != "subscribe":
                continue
            for ch in msg["channels"]:
                name = ch if isinstance(ch, str) else ch["channel"]
                channels.setdefault(name, set()).add(ws)
                mine.append(name)
            reply = {"id": msg.get("id"), "type": "subscribed", "channels": msg["channels"]}
            await ws.send(json.dumps(reply))
    finally:
        for name in mine:
            channels.get(name, set()).discard(ws)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--synthetic", default="")
    args = ap.parse_args()
    seq = Sequencer()

    def publish(channel: str, data: str) -> None:
        subs = channels.get(channel)
        if subs:
            broadcast(subs, seq.envelope(channel, data))

    # max_queue=None (no limit) is valid for the pinned websockets 15; the 13.x that the
    # Coinbase SDK brings into tickwire's venv types it as int only.
    unbounded: Any = None
    async with serve(
        handler, args.host, args.port, compression=None, max_queue=unbounded, backlog=4096
    ) as server:
        start(args.synthetic, publish)
        await server.serve_forever()


if __name__ == "__main__":
    raise_nofile()
    install_uvloop()
    asyncio.run(main())

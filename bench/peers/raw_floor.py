"""The floor of what Python does here: a raw asyncio WebSocket server that builds each
frame once and writes all frames queued for a connection in one write per loop iteration.

Speaks the native dialect's subset the generator uses: ``{"id":1,"op":"subscribe",
"channels":[…]}`` → ``{"id":1,"type":"subscribed",…}``, then ``pub`` envelopes.
Usage: python raw_floor.py --port P --synthetic SPEC
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import struct

from synthetic_spec import Sequencer, install_uvloop, raise_nofile, start

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class Hub:
    def __init__(self) -> None:
        self.channels: dict[str, set[Conn]] = {}
        self.dirty: list[Conn] = []
        self.scheduled = False
        self.loop = asyncio.get_event_loop()

    def publish(self, channel: str, payload: bytes) -> None:
        subs = self.channels.get(channel)
        if not subs:
            return
        frame = text_frame(payload)
        for conn in subs:
            if not conn.queue:
                self.dirty.append(conn)
            conn.queue.append(frame)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            q = conn.queue
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.write(q[0] if len(q) == 1 else b"".join(q))
            q.clear()


class Conn(asyncio.Protocol):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.buf = b""
        self.open = False
        self.queue: list[bytes] = []
        self.subs: list[str] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.open:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head, self.buf = self.buf[:i], self.buf[i + 4 :]
            key = b""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.open = True
        while len(self.buf) >= 6:
            b0, b1 = self.buf[0], self.buf[1] & 0x7F
            pos = 2
            if b1 == 126:
                b1 = struct.unpack("!H", self.buf[2:4])[0]
                pos = 4
            elif b1 == 127:
                b1 = struct.unpack("!Q", self.buf[2:10])[0]
                pos = 10
            if len(self.buf) < pos + 4 + b1:
                return
            mask = self.buf[pos : pos + 4]
            body = bytes(c ^ mask[j % 4] for j, c in enumerate(self.buf[pos + 4 : pos + 4 + b1]))
            self.buf = self.buf[pos + 4 + b1 :]
            self.on_frame(b0 & 0x0F, body)

    def on_frame(self, opcode: int, body: bytes) -> None:
        assert self.transport is not None
        if opcode == 0x8:
            self.transport.close()
        elif opcode == 0x9:
            self.transport.write(bytes((0x8A, len(body))) + body)
        elif opcode == 0x1:
            msg = json.loads(body)
            if msg.get("op") == "subscribe":
                for ch in msg["channels"]:
                    name = ch if isinstance(ch, str) else ch["channel"]
                    self.hub.channels.setdefault(name, set()).add(self)
                    self.subs.append(name)
                reply = {"id": msg.get("id"), "type": "subscribed", "channels": msg["channels"]}
                self.transport.write(text_frame(json.dumps(reply).encode()))

    def connection_lost(self, exc: Exception | None) -> None:
        for name in self.subs:
            self.hub.channels.get(name, set()).discard(self)
        self.transport = None


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--synthetic", default="")
    args = ap.parse_args()
    hub = Hub()
    seq = Sequencer()
    server = await asyncio.get_running_loop().create_server(
        lambda: Conn(hub), args.host, args.port, backlog=4096
    )

    def publish(channel: str, data: str) -> None:
        if channel in hub.channels:
            hub.publish(channel, seq.envelope(channel, data).encode())

    start(args.synthetic, publish)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    raise_nofile()
    install_uvloop()
    asyncio.run(main())

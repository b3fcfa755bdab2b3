"""A raw WebSocket client over a plain socket, for tests that must control reading."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame (RFC 6455 5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes((0x80 | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 65536:
        head += struct.pack("!BH", 0x80 | 126, n)
    else:
        head += struct.pack("!BQ", 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


#: raw clients not closed yet (the harness closes them before the gateway stops)
_OPEN: list[RawClient] = []


async def close_raw_clients() -> None:
    """Close the TCP connection of every raw client still open."""
    while _OPEN:
        client = _OPEN.pop()
        client.writer.close()
        try:
            await client.writer.wait_closed()
        except OSError:
            pass


class RawClient:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: str = ""
    ) -> None:
        self.reader = reader
        self.writer = writer
        #: the server's handshake response headers, as text
        self.response_headers = headers

    @classmethod
    async def connect(
        cls, port: int, path: str = "/ws", rcvbuf: int | None = None, extensions: str = ""
    ) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                + (f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else "")
                + "\r\n"
            ).encode()
        )
        status = await reader.readuntil(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101"), status
        client = cls(reader, writer, status.decode())
        _OPEN.append(client)
        return client

    def send(self, msg: Any) -> None:
        self.writer.write(client_frame(json.dumps(msg).encode()))

    async def read_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame from the server (never masked)."""
        opcode, payload, _ = await self.read_frame_bits()
        return opcode, payload

    async def read_frame_bits(self) -> tuple[int, bytes, bool]:
        """(opcode, payload, RSV1 set) of the next frame from the server."""
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(n), bool(b0 & 0x40)

    def sockname(self) -> tuple[str, int]:
        name: tuple[str, int] = self.writer.get_extra_info("sockname")
        return name


class StalledClient:
    """A WebSocket client that reads only when told to: after its handshake (and any
    reply it waits for with :meth:`read_frame`) nothing is taken from its socket, whose
    receive buffer is shrunk before connecting (``rcvbuf``). What the server sends piles
    up in the kernel's buffers, then in the server's. A plain non-blocking socket: an
    asyncio stream would read ahead into memory."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: the receive buffer the kernel gave the socket (Linux doubles the request;
        #: set, it is not autotuned)
        self.rcvbuf: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    @classmethod
    async def connect(cls, port: int, path: str, rcvbuf: int = 4096) -> StalledClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        client = cls(sock)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):  # byte by byte: nothing past the headers
            head += await client._exactly(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        return client

    async def send_text(self, text: str) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, client_frame(text.encode()))

    async def _exactly(self, n: int) -> bytes:
        loop = asyncio.get_running_loop()
        data = b""
        while len(data) < n:
            chunk = await loop.sock_recv(self.sock, n - len(data))
            if not chunk:
                raise ConnectionError(f"connection closed {len(data)} of {n} bytes into a read")
            data += chunk
        return data

    async def read_frame(self) -> tuple[int, bytes, int]:
        """(opcode, payload, the frame's size on the wire) of the next server frame,
        reading exactly that frame."""
        b0, b1 = await self._exactly(2)
        n, size = b1 & 0x7F, 2
        if n == 126:
            (n,) = struct.unpack("!H", await self._exactly(2))
            size += 2
        elif n == 127:
            (n,) = struct.unpack("!Q", await self._exactly(8))
            size += 8
        return b0 & 0x0F, await self._exactly(n), size + n

    async def send_close(self, code: int) -> None:
        """Answer a close frame (RFC 6455 5.5.1)."""
        frame = client_frame(struct.pack("!H", code), opcode=0x8)
        await asyncio.get_running_loop().sock_sendall(self.sock, frame)

    async def at_eof(self) -> bool:
        """Whether the server ended the connection (nothing more comes)."""
        return await asyncio.get_running_loop().sock_recv(self.sock, 1) == b""

    def close(self) -> None:
        self.sock.close()

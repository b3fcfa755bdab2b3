"""The I/O shell of the native dialect: aiohttp handshake in, hub frames out.

After the handshake the hub writes ready-made frames straight to the connection's
transport (one write per loop iteration); aiohttp still reads frames and answers pings.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSMsgType, web

from tickwire.auth import AuthError, Principal
from tickwire.dialects import native
from tickwire.dialects.errors import ProtocolError
from tickwire.hub import CLOSE_POLICY, CLOSE_TOKEN_EXPIRED, CLOSE_UNAUTHORIZED, Connection
from tickwire.hub.wire import deflated
from tickwire.model.publication import now_ms
from tickwire.server.guard import CLOSE_PROTOCOL_ERROR, GuardedRequestHandler
from tickwire.server.node import NODE_KEY, Node
from tickwire.server.session import RateLimiter, Session, auth_error

log = logging.getLogger(__name__)

#: Errors in a row after which a connection is closed for policy violation.
MAX_CONSECUTIVE_ERRORS = 50


class NativeConnection:
    """One native client: reads requests, answers through the hub."""

    def __init__(self, node: Node, ws: web.WebSocketResponse, conn: Connection) -> None:
        cfg = node.config
        self.node = node
        self.ws = ws
        self.conn = conn
        self.session = Session(
            node.hub,
            conn,
            max_channels=cfg.max_channels,
            channel_exists=node.channel_exists,
        )
        self.limiter = RateLimiter(cfg.max_requests_per_second, 2 * cfg.max_requests_per_second)
        self.errors_in_a_row = 0
        self.expiry: asyncio.TimerHandle | None = None

    def send(self, payload: bytes) -> None:
        self.node.hub.send(self.conn, payload)

    def fail(self, error: ProtocolError) -> None:
        self.send(native.render_error(error))
        self.errors_in_a_row += 1
        if self.errors_in_a_row >= MAX_CONSECUTIVE_ERRORS:
            self.conn.close(CLOSE_POLICY, "too many errors")

    async def authenticate(self, token: str, rid: native.RequestId, refresh: bool) -> None:
        verify = self.node.verify_token
        if verify is None:
            raise ProtocolError("unauthorized", "this server does not accept tokens", rid)
        try:
            principal = await verify(token)
        except AuthError as exc:
            raise auth_error(exc, rid) from None
        self.become(principal, rid, refresh)

    async def authenticate_digest(self, uid: str, nonce: str, digest: str) -> None:
        verify = self.node.verify_digest
        if verify is None:
            raise ProtocolError("unauthorized", "this server does not accept session digests")
        try:
            principal = await verify(uid, nonce, digest)
        except AuthError as exc:
            raise auth_error(exc) from None
        self.become(principal, None, refresh=False)

    def become(self, principal: Principal, rid: native.RequestId, refresh: bool) -> None:
        """Act as ``principal`` from now on (after its credential verified)."""
        if refresh and principal.user_id != self.session.principal.user_id:
            raise ProtocolError("forbidden", "refresh token is for another user", rid)
        dropped = self.session.reauthorize(principal)
        self.schedule_expiry(principal.expires_at)
        self.send(
            native.render_authenticated(rid, principal.user_id, principal.expires_at, dropped)
        )

    def schedule_expiry(self, expires_at: float | None) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if expires_at is None:
            return
        delay = max(0.0, expires_at - time.time())
        self.expiry = asyncio.get_running_loop().call_later(delay, self.expired)

    def expired(self) -> None:
        # auth (issue 3): tell the client, then close 3005 unless a refresh lands within
        # the grace period (authenticate() -> schedule_expiry() cancels this timer)
        grace = self.node.config.token_expiry_grace
        self.send(
            native.render_error(
                ProtocolError(
                    "token_expired",
                    f"token expired: send refresh with a new token within {grace:g} s, "
                    "or reconnect with one",
                )
            )
        )
        if grace <= 0:
            self.conn.close(CLOSE_TOKEN_EXPIRED)
            return
        self.expiry = asyncio.get_running_loop().call_later(
            grace, self.conn.close, CLOSE_TOKEN_EXPIRED
        )

    async def handle(self, data: str) -> None:
        limit = self.node.config.max_frame_bytes
        if len(data) > limit or (4 * len(data) > limit and len(data.encode()) > limit):
            self.fail(ProtocolError("frame_too_large", f"frame exceeds {limit} bytes"))
            return
        if not self.limiter.allow():
            self.fail(ProtocolError("rate_limited", "too many requests: slow down"))
            return
        cmd: native.Command | None = None
        try:
            cmd = native.parse(data, max_bytes=limit)
            await self.execute(cmd)
        except ProtocolError as exc:
            self.fail(exc)
            return
        except Exception:
            # a bug of ours: the client is told, the connection and the process go on
            log.exception("native request failed")
            rid = None if cmd is None else cmd.id
            self.fail(ProtocolError("internal", "the server failed to serve the request", rid))
            return
        self.errors_in_a_row = 0

    async def execute(self, cmd: native.Command) -> None:
        if isinstance(cmd, native.Subscribe):
            catchups = await self.session.subscribe(cmd.channels, cmd.id)
            since = {ch.name: s for ch, s in cmd.channels}
            reply = [
                native.SubscribedChannel(
                    c.channel,
                    c.position.epoch,
                    c.position.seq,
                    c.recovered if since.get(c.channel) is not None else None,
                )
                for c in catchups
            ]
            self.send(native.render_subscribed(cmd.id, reply))
            for catchup in catchups:
                self.node.hub.go_live(self.conn, catchup)
        elif isinstance(cmd, native.Unsubscribe):
            self.send(native.render_unsubscribed(cmd.id, self.session.unsubscribe(cmd.channels)))
        elif isinstance(cmd, native.Ping):
            self.send(native.render_pong(cmd.id, now_ms()))
        else:
            await self.authenticate(cmd.token, cmd.id, cmd.refresh)


async def native_handler(request: web.Request) -> web.StreamResponse:
    """``GET /ws``: the native protocol."""
    node = request.app[NODE_KEY]
    cfg = node.config
    if node.draining:
        raise web.HTTPServiceUnavailable(text="draining: connect to another node")
    ws = web.WebSocketResponse(
        autoping=True, max_msg_size=cfg.max_frame_hard_bytes, compress=cfg.compression
    )
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # pragma: no cover - the peer vanished during the handshake
        return ws
    # permessage-deflate, when enabled and asked for: the window size aiohttp negotiated
    wbits = int(ws.compress)
    fmt = deflated(native.NATIVE, wbits) if wbits else native.NATIVE
    conn = node.hub.connect(transport, fmt, cfg.max_queue_bytes)
    client = NativeConnection(node, ws, conn)
    if isinstance(request.protocol, GuardedRequestHandler):  # RFC 6455 5.1: close with 1002
        request.protocol.on_unmasked_frame(
            lambda: conn.close(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        )
    try:
        query = request.query
        token = query.get("token")
        digest = [query.get(k) for k in ("id", "n", "h")]
        if token is not None or any(v is not None for v in digest):
            try:
                if token is not None:
                    await client.authenticate(token, None, refresh=False)
                else:
                    uid, nonce, h = (v or "" for v in digest)
                    await client.authenticate_digest(uid, nonce, h)
            except ProtocolError as exc:
                client.send(native.render_error(exc))
                conn.close(CLOSE_UNAUTHORIZED)
                return ws
        async for msg in ws:
            if conn.closed:
                break
            if msg.type == WSMsgType.TEXT:
                await client.handle(msg.data)
            elif msg.type == WSMsgType.BINARY:
                client.fail(
                    ProtocolError("binary_not_supported", "binary frames are not supported")
                )
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        if client.expiry is not None:
            client.expiry.cancel()
        if not conn.closed:
            node.hub.disconnect(conn)
    return ws

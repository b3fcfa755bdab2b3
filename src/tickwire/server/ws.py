"""The one WebSocket shell: every dialect is mounted on its paths by this handler.

The shell does only I/O: aiohttp answers the handshake; then the connection leaves
aiohttp (:mod:`tickwire.server.wsconn`): our protocol on the raw transport reads frames
(:mod:`tickwire.server.wsframes`), answers pings and the close handshake, and hands
messages to the dialect's :class:`~tickwire.dialects.core.ConnectionCore`. The hub
writes ready-made frames straight to the same transport (one write per loop iteration).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from tickwire.auth import AuthError, Principal
from tickwire.dialects.base import (
    Bearer,
    Credential,
    Dialect,
    Digest,
    Handshake,
    Refused,
    Token,
    dialect_error,
)
from tickwire.dialects.core import Cancellable, ConnectionCore, Limits
from tickwire.hub import Hub
from tickwire.hub.wire import deflated
from tickwire.model.channels import Channel
from tickwire.model.publication import now_ms
from tickwire.server.node import Node
from tickwire.server.wsconn import OpenConnections, WebSocketProtocol, take_over, upgrade
from tickwire.server.wsframes import FrameReader

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NodeServices:
    """What every connection core of one node needs from it (see ``Services``)."""

    def __init__(self, node: Node) -> None:
        cfg = node.config
        self.node = node
        self.limits = Limits(
            max_channels=cfg.max_channels,
            max_frame_bytes=cfg.max_frame_bytes,
            requests_per_second=cfg.max_requests_per_second,
            request_burst=2 * cfg.max_requests_per_second,
            token_expiry_grace=cfg.auth.token_expiry_grace,
            token_leeway=cfg.auth.auth_leeway,
        )
        #: the WebSocket connections served, from the handshake to their end
        self.sockets = OpenConnections()

    @property
    def hub(self) -> Hub:
        return self.node.hub

    def channel_exists(self, channel: Channel) -> bool:
        return self.node.channel_exists(channel)

    async def verify(self, credential: Credential) -> Principal:
        node = self.node
        if isinstance(credential, Token):
            if node.verify_token is None:
                raise AuthError("unauthorized", "this server does not accept tokens")
            return await node.verify_token(credential.value)
        if isinstance(credential, Digest):
            if node.verify_digest is None:
                raise AuthError("unauthorized", "this server does not accept session digests")
            return await node.verify_digest(credential.user_id, credential.nonce, credential.digest)
        if isinstance(credential, Bearer):
            if node.verify_bearer is None:
                raise AuthError("unauthorized", "no identity provider is configured")
            return await node.verify_bearer(credential.value)
        raise AuthError("unauthorized", "unsupported credential")  # pragma: no cover

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        return asyncio.get_running_loop().call_later(delay, callback)

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def now_ms(self) -> int:
        return now_ms()


def handshake_of(request: web.Request) -> Handshake:
    query = request.query
    return Handshake(
        path=request.path,
        query={key: query.getall(key) for key in query.keys()},
        headers={k.lower(): v for k, v in request.headers.items()},
    )


def dialect_handler(
    dialect: type[Dialect], svc: NodeServices, compression: bool | None = None
) -> Handler:
    """The aiohttp handler serving ``dialect`` on ``svc``'s node; ``compression``
    (permessage-deflate when the client offers it) defaults to the config's."""
    node = svc.node
    cfg = node.config
    compress = cfg.compression if compression is None else compression

    async def handler(request: web.Request) -> web.StreamResponse:
        if node.draining:
            raise web.HTTPServiceUnavailable(text="draining: connect to another node")
        try:
            translator = dialect(handshake_of(request))
            principal = await _verified_handshake(svc, translator)
        except Refused as exc:
            return web.Response(status=exc.status, body=exc.body, content_type=exc.content_type)
        response, wbits = upgrade(request, compress)
        await response.prepare(request)
        transport = request.transport
        if transport is None or transport.is_closing():
            return response  # pragma: no cover - the peer vanished during the handshake
        # permessage-deflate, when enabled and asked for: the window size negotiated
        fmt = deflated(translator.fmt, wbits) if wbits else translator.fmt
        conn = node.hub.connect(transport, fmt, cfg.max_queue_bytes, linger=True)
        core = ConnectionCore(svc, translator, conn)
        node.cores.add(core)  # closed when its key is revoked (tickwire.server.revocation)
        reader = FrameReader(cfg.max_frame_hard_bytes, deflate=bool(wbits))
        protocol = WebSocketProtocol(core, conn, reader, transport, svc.sockets)
        take_over(request, protocol)
        await protocol.open(core.open(principal))
        return response

    handler.__name__ = f"{dialect.name}_handler"
    return handler


async def _verified_handshake(svc: NodeServices, translator: Dialect) -> Principal | None:
    """The identity of a dialect that needs a credential before the upgrade (None for
    the others); raises :class:`Refused` (HTTP 401) when it is missing or does not verify."""
    if not translator.credential_required():
        return None
    credential = translator.credential()
    if credential is None:
        raise translator.refusal(
            dialect_error(AuthError("unauthorized", "this endpoint needs a credential"))
        )
    try:
        return await svc.verify(credential)
    except AuthError as exc:
        raise translator.refusal(dialect_error(exc)) from None


def mount(
    app: web.Application,
    node: Node,
    dialect: type[Dialect],
    paths: list[str],
    *,
    compression: bool | None = None,
) -> None:
    """Serve ``dialect`` on each of ``paths`` (and send its heartbeats); ``compression``
    overrides the config's ``compression`` for this dialect."""
    handler = dialect_handler(dialect, node_services(app, node), compression)
    for path in paths:
        app.router.add_get(path, handler)
    if dialect.heartbeat(0) is not None:
        node.heartbeats.append((dialect.fmt, dialect.heartbeat))


#: The node's services shared by every dialect mounted on an application.
SERVICES_KEY: web.AppKey[NodeServices] = web.AppKey("services", NodeServices)


def node_services(app: web.Application, node: Node) -> NodeServices:
    """The services of ``node`` that every WebSocket endpoint of ``app`` shares (made on
    the first call)."""
    svc = app.get(SERVICES_KEY)
    if svc is None:
        svc = app[SERVICES_KEY] = NodeServices(node)
    return svc


async def connections_ended(app: web.Application) -> int:
    """After a drain: wait (up to the drain timeout) for the WebSocket connections of
    ``app`` to end, each client answering its close frame; abort the rest (returns how
    many). aiohttp no longer holds these connections, so its own shutdown does not."""
    svc = app.get(SERVICES_KEY)
    if svc is None:
        return 0
    return await svc.sockets.ended(svc.node.config.drain_timeout)

"""The aiohttp application: routes, lifecycle, graceful drain. The only place that wires."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Protocol

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry

from tickwire.auth import Principal
from tickwire.dialects.native import Native
from tickwire.dialects.opcode import LogonSessions, Opcode, opcode_dialect
from tickwire.dialects.ranger import RangerSettings, ranger_dialect
from tickwire.engine.urls import redact
from tickwire.ingest.amqp import AmqpSettings, PeatioIngest, amqp_url
from tickwire.ingest.gateway import Gateway
from tickwire.model.markets import build_registry
from tickwire.server import metrics
from tickwire.server.auth_routes import install_auth
from tickwire.server.coinbase_routes import install_coinbase
from tickwire.server.config import Config, parse_rbac
from tickwire.server.dashboard import install_dashboard
from tickwire.server.data_routes import install_market_data
from tickwire.server.guard import ConnectionGuard, GuardedSite, header_deadline_met
from tickwire.server.node import NODE_KEY, Node
from tickwire.server.realtime_routes import add_realtime_routes
from tickwire.server.revocation import watch_revocations
from tickwire.server.socketio import install_socketio
from tickwire.server.ws import connections_ended, mount

log = logging.getLogger(__name__)

METRICS_KEY: web.AppKey[CollectorRegistry] = web.AppKey("metrics", CollectorRegistry)
#: The opcode dialect as mounted on this node (bound to its logon sessions).
OPCODE_KEY: web.AppKey[type[Opcode]] = web.AppKey("opcode", type)
#: The response header naming the ``tickwire serve --workers`` worker that answered.
WORKER_HEADER = "X-Tickwire-Worker"


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    node: Node = request.app[NODE_KEY]
    if node.started and not node.draining:
        return web.json_response({"status": "ready"})
    state = "draining" if node.draining else "starting"
    return web.json_response({"status": state}, status=503)


async def metrics_handler(request: web.Request) -> web.Response:
    body = metrics.render(request.app[METRICS_KEY])
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


def build_app(
    config: Config, node: Node | None = None, *, worker: int | None = None
) -> web.Application:
    """The whole gateway as an aiohttp application (started and stopped with it).

    ``worker``: this process is that worker of ``tickwire serve --workers N``. Every
    response then names it (``X-Tickwire-Worker``, and ``tickwire_worker`` in /metrics),
    and only worker 0 runs the publishers a deployment may run once (the demo market, the
    ``synthetic`` publisher, the RabbitMQ ingest); the others serve their channels."""
    singletons = worker is None or worker == 0
    node = node or Node(config, singletons=singletons)
    app = web.Application(
        client_max_size=max(config.max_frame_hard_bytes, 1 << 20),
        middlewares=[header_deadline_met],
    )
    app[NODE_KEY] = node
    app[METRICS_KEY] = metrics.make_registry(node)
    if worker is not None:
        name = str(worker)

        async def worker_header(request: web.Request, response: web.StreamResponse) -> None:
            response.headers[WORKER_HEADER] = name

        app.on_response_prepare.append(worker_header)
        app[METRICS_KEY].register(metrics.WorkerCollector(worker, os.getpid()))
    install_dashboard(app)  # GET / and /static/*: the live page (docs/dashboard.md)
    mount(app, node, Native, config.native_paths)
    install_socketio(app, node)  # Market Prophit: Socket.IO, Engine.IO 3 and 4
    add_realtime_routes(app, node)  # Market Prophit: GET /real-time/<name>
    logons = LogonSessions(
        config.opcode_relogon_window, config.opcode_relogon_max_users, time.monotonic
    )
    opcode = app[OPCODE_KEY] = opcode_dialect(logons)
    mount(app, node, opcode, config.opcode_paths)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    auth = install_auth(app, config)
    node.verify_token = auth.verify_token  # POST /jwt, /login; tokens
    node.verify_digest = auth.verify_digest  # ?id=&n=&h= after POST /login
    subject = config.ranger_jwt_subject or None
    require_jti = config.ranger_require_jti

    rbac = parse_rbac(config.ranger_rbac)

    async def verify_bearer(token: str) -> Principal:
        principal = await auth.verify_bearer(token, subject=subject, require_jti=require_jti)
        return with_role_prefixes(principal, rbac)

    node.verify_bearer = verify_bearer  # the ranger dialect's Barong tokens

    async def revocations() -> None:  # keys revoked anywhere close their connections here
        await watch_revocations(auth.store, node.close_revoked)

    node.background.append(revocations)
    mount_ranger(app, config, node)
    # Market data: gateway, publish + book HTTP API, demo market (docs/market-data.md).
    # The publish API's failed credential checks count against the limiter of /jwt, /login.
    gateway = install_market_data(
        app,
        config if singletons else msgspec.structs.replace(config, demo=False),
        node,
        publisher_keys=auth.verify_secret,
        limiter=auth.rate_limiter,
    )
    ingest = install_amqp(config, node, gateway) if singletons else None
    if ingest is not None:
        app[INGEST_KEY] = ingest
        app[METRICS_KEY].register(metrics.IngestCollector(ingest.stats))
    # Coinbase Advanced Trade: the feed and its product routes (docs/dialects.md).
    install_coinbase(app, config, node, gateway.markets)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await node.start()
        yield
        await node.stop()

    async def on_shutdown(app: web.Application) -> None:
        n = await node.drain()
        if n:
            log.info("drained %d connections (close 3001: reconnect elsewhere)", n)
        await connections_ended(app)

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    return app


def make_runner(
    app: web.Application, config: Config, *, shutdown_timeout: float | None = None
) -> web.AppRunner:
    """The runner for ``app``: keep-alive connections idle at most ``header_timeout``."""
    return web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=config.drain_timeout if shutdown_timeout is None else shutdown_timeout,
        keepalive_timeout=config.header_timeout,
    )


async def start_site(
    runner: web.AppRunner,
    config: Config,
    host: str | None = None,
    port: int | None = None,
    *,
    reuse_port: bool = False,
) -> GuardedSite:
    """Listen on ``host:port`` (default: the config's) with the connection guard's limits:
    header deadline, connections per address, the sockets' send buffer
    (tickwire.server.guard). ``reuse_port``: ``SO_REUSEPORT``, so that the workers of one
    supervisor listen on the same port and the kernel spreads connections over them."""
    guard = ConnectionGuard(
        header_timeout=config.header_timeout,
        max_per_address=config.max_connections_per_address,
        send_buffer=config.send_buffer_bytes,
    )
    site = GuardedSite(
        runner,
        config.host if host is None else host,
        config.port if port is None else port,
        guard,
        reuse_address=True,
        reuse_port=reuse_port or None,
    )
    await site.start()
    return site


def build_opcode_port_app(app: web.Application) -> web.Application:
    """The application of the dedicated opcode port: the opcode dialect at ``/`` (the
    seed's ``wss://host:9999?id=…``) on ``app``'s node, drained with it."""
    node = app[NODE_KEY]
    port_app = web.Application(
        client_max_size=max(node.config.max_frame_hard_bytes, 1 << 20),
        middlewares=[header_deadline_met],
    )
    mount(port_app, node, app[OPCODE_KEY], ["/"])

    async def on_shutdown(port_app: web.Application) -> None:
        await node.drain()
        await connections_ended(port_app)

    port_app.on_shutdown.append(on_shutdown)
    return port_app


def with_role_prefixes(principal: Principal, rbac: Mapping[str, frozenset[str]]) -> Principal:
    """``principal`` entitled to the role-gated prefixes its role is listed for (rango's
    RBAC, ``ranger_rbac``)."""
    role = principal.role
    prefixes = frozenset(p for p, roles in rbac.items() if role is not None and role in roles)
    if not prefixes:
        return principal
    ents = dataclasses.replace(principal.entitlements, prefixes=prefixes)
    return dataclasses.replace(principal, entitlements=ents)


def mount_ranger(app: web.Application, config: Config, node: Node) -> None:
    """Serve the Peatio ranger dialect on its public and private paths (each also with
    and without the trailing slash)."""
    registry = build_registry(config.markets, config.tickers, config.market_specs)

    def both(paths: list[str]) -> list[str]:
        out: dict[str, None] = {}
        for path in paths:
            bare = path.rstrip("/") or "/"
            out[bare] = None
            out[bare + "/" if bare != "/" else bare] = None
        return list(out)

    private = both(config.ranger_private_paths)
    settings = RangerSettings(
        private_paths=tuple(p.rstrip("/") or "/" for p in private),
        challenge=config.ranger_challenge,
        jwt_subject=config.ranger_jwt_subject or None,
        require_jti=config.ranger_require_jti,
        rbac=parse_rbac(config.ranger_rbac),
    )
    dialect = ranger_dialect(registry, settings, extra_markets=sorted(node.markets))
    mount(app, node, dialect, both(config.ranger_public_paths) + private)


def install_amqp(config: Config, node: Node, gateway: Gateway) -> PeatioIngest | None:
    """The RabbitMQ ingest of Peatio's events when ``amqp`` or ``rabbitmq_host`` is set
    (docs/ingest.md), run with the node."""
    url = config.amqp
    if url is None and config.rabbitmq_host:
        url = amqp_url(
            config.rabbitmq_host,
            config.rabbitmq_port,
            config.rabbitmq_user,
            config.rabbitmq_password,
            config.rabbitmq_vhost,
        )
    if url is None:
        return None
    settings = AmqpSettings(
        url=url,
        queue_ttl=config.amqp_queue_ttl,
        queue_max=config.amqp_queue_max,
        prefetch=config.amqp_prefetch,
        prefixes=frozenset(parse_rbac(config.ranger_rbac)),
    )
    if config.amqp_queue:
        settings = dataclasses.replace(settings, queue=config.amqp_queue)
    ingest = PeatioIngest(gateway, settings)
    node.background.append(ingest.run)
    return ingest


#: The RabbitMQ ingest, when one runs.
INGEST_KEY: web.AppKey[PeatioIngest] = web.AppKey("ingest", PeatioIngest)


def install_uvloop() -> bool:
    """Use uvloop's event loop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def urls(config: Config, port: int, opcode_port: int | None = None) -> list[tuple[str, str]]:
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    base = f"{host}:{port}"
    out = [
        ("live demo page", f"http://{base}/"),
        ("native WebSocket", f"ws://{base}{config.native_paths[0]}"),
        ("opcode WebSocket", f"ws://{base}{config.opcode_paths[0]}"),
        ("ranger WebSocket", f"ws://{base}{config.ranger_public_paths[0]}"),
        ("Coinbase feed", f"ws://{base}{config.coinbase_paths[0]}"),
        ("Socket.IO", f"http://{base}{config.prophit_paths[0]}"),
    ]
    if opcode_port is not None:
        out.append(("opcode port", f"ws://{host}:{opcode_port}/"))
    return [*out, ("metrics", f"http://{base}/metrics"), ("health", f"http://{base}/healthz")]


class ListenError(Exception):
    """The server could not listen on its address (e.g. the port is already in use)."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            why = f"port {port} is already in use (choose another with --port or TICKWIRE_PORT)"
        else:
            why = exc.strerror or str(exc)
        super().__init__(f"cannot listen on {where}: {why}")
        self.host, self.port = host, port


class WorkerSeat(Protocol):
    """What a worker of ``tickwire serve --workers`` tells its supervisor, and hears from
    it (tickwire.server.supervisor)."""

    #: The worker's number, 0 to N-1 (worker 0 runs the singletons).
    index: int

    def listening(self, port: int, opcode_port: int | None) -> None:
        """Called once, when every site listens."""

    def supervisor_gone(self) -> Awaitable[None]:
        """Completes when the supervisor is gone (then the worker drains and exits)."""


def serve(config: Config, *, worker: WorkerSeat | None = None) -> None:
    """Run a node until SIGINT/SIGTERM; on either, drain clients (close 3001) and exit.

    As a ``worker`` of a supervisor: listen with ``SO_REUSEPORT`` on the port the
    supervisor reserved, tell it instead of printing the banner, and drain too when the
    supervisor is gone. Raises :class:`ListenError` when the address cannot be bound."""
    where = "" if worker is None else f" worker {worker.index}"
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s %(levelname)s{where} %(name)s: %(message)s",
    )
    install_uvloop()
    reuse_port = worker is not None

    async def main() -> None:
        app = build_app(config, worker=None if worker is None else worker.index)
        runner = make_runner(app, config)
        await runner.setup()
        try:
            await start_site(runner, config, reuse_port=reuse_port)
        except OSError as exc:
            await runner.cleanup()
            raise ListenError(config.host, config.port, exc) from None
        port = int(runner.addresses[0][1]) if runner.addresses else config.port
        runners = [runner]
        opcode_port = None
        if config.opcode_port is not None:
            port_runner = make_runner(build_opcode_port_app(app), config)
            await port_runner.setup()
            try:
                await start_site(
                    port_runner, config, port=config.opcode_port, reuse_port=reuse_port
                )
            except OSError as exc:
                await runner.cleanup()
                raise ListenError(config.host, config.opcode_port, exc) from None
            opcode_port = int(port_runner.addresses[0][1])
            runners.insert(0, port_runner)  # stopped first: the node stops with the main app
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watch: asyncio.Future[None] | None = None
        if worker is None:
            print("\n".join(banner(config, port, opcode_port)), flush=True)
        else:
            worker.listening(port, opcode_port)
            watch = asyncio.ensure_future(worker.supervisor_gone())
            watch.add_done_callback(lambda _: stop.set())
        await stop.wait()
        if watch is not None and watch.done():
            log.warning("the supervisor is gone: draining clients")
        else:
            log.info("shutting down: draining clients")
        for each in runners:
            await each.cleanup()
        if watch is not None:
            watch.cancel()

    asyncio.run(main())


def banner(
    config: Config, port: int, opcode_port: int | None = None, workers: int = 1
) -> list[str]:
    """The lines ``tickwire serve`` prints once it listens."""
    how = f"engine: {redact(config.engine)}" + (f", {workers} workers" if workers > 1 else "")
    lines = [f"tickwire listening on {config.host}:{port} ({how})"]
    return lines + [f"  {name:<17} {url}" for name, url in urls(config, port, opcode_port)]

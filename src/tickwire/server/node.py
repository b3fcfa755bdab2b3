"""A running tickwire node: config, engine, hub and the background duties that join them."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from tickwire.auth import Principal
from tickwire.dialects.core import ConnectionCore
from tickwire.engine import Engine, HistorySettings, MemoryEngine
from tickwire.engine.urls import engine_urls, is_engine_url, redact
from tickwire.hub import CLOSE_SHUTDOWN, Hub, WireFormat
from tickwire.model.channels import Channel, parse_channel
from tickwire.model.publication import now_ms
from tickwire.server.config import Config, ConfigError, parse_rbac

if TYPE_CHECKING:
    from tickwire.ingest.synthetic import SyntheticPublisher

log = logging.getLogger(__name__)

TokenVerifier = Callable[[str], Awaitable[Principal]]
DigestVerifier = Callable[[str, str, str], Awaitable[Principal]]


def make_engine(config: Config) -> Engine:
    """The engine named by ``config.engine``: ``memory``, a Redis URL, or several Redis
    URLs separated by whitespace (a sharded engine, docs/scaling.md)."""
    settings = HistorySettings(size=config.history_size, ttl=config.history_ttl)
    url = config.engine
    if url == "memory":
        return MemoryEngine(settings)
    if is_engine_url(url):
        try:
            from tickwire.engine.redis import RedisEngine, ShardedRedisEngine
        except ModuleNotFoundError as exc:  # only a Redis engine needs the redis client
            raise ConfigError(
                f"config field 'engine': a Redis engine needs the {exc.name!r} package: "
                "pip install 'tickwire[redis]'"
            ) from None
        urls = engine_urls(url)
        try:
            if len(urls) > 1:
                return ShardedRedisEngine(urls, settings)
            return RedisEngine(urls[0], settings)
        except ValueError as exc:
            raise ConfigError(f"config field 'engine': {exc}") from None
    raise ConfigError(
        f"config field 'engine': expected 'memory', a redis://, rediss://, unix://, "
        f"redis+sentinel:// or redis+cluster:// URL, or several Redis URLs separated by "
        f"spaces (shards), got {redact(url)!r}"
    )


class Node:
    """Everything one gateway process runs. The server package is the only place that
    builds one; dialect shells reach the core through it."""

    def __init__(
        self, config: Config, engine: Engine | None = None, *, singletons: bool = True
    ) -> None:
        """``singletons``: run the publishers only one process of a deployment may run
        (here the ``synthetic`` one); a ``tickwire serve --workers`` worker other than
        worker 0 serves their channels without running them."""
        self.config = config
        self.engine = engine or make_engine(config)
        self.hub = Hub(
            self.engine,
            max_recover=config.max_recover,
            drain_timeout=config.drain_timeout,
            max_write_delay=config.max_write_delay,
        )
        self.markets: set[str] = set(config.markets)
        self.tickers: set[str] = set(config.tickers)
        #: the role-gated prefixes configured (``ranger_rbac``): ``scoped:<prefix>:…``
        self.prefixes: frozenset[str] = frozenset(parse_rbac(config.ranger_rbac))
        #: Verifies a native token into a principal; set by the auth layer when configured.
        self.verify_token: TokenVerifier | None = None
        #: Verifies an identity-provider (Barong) JWT only; set with the auth layer.
        self.verify_bearer: TokenVerifier | None = None
        #: Verifies an InstaMrkt-style ``?id=&n=&h=`` digest; set with the auth layer.
        self.verify_digest: DigestVerifier | None = None
        #: Heartbeat renderers of the mounted dialects, by the wire format they go to.
        self.heartbeats: list[tuple[WireFormat, Callable[[int], bytes | None]]] = []
        #: every connection's core (WebSocket and Socket.IO), to close those of a revoked key
        self.cores: weakref.WeakSet[ConnectionCore] = weakref.WeakSet()
        self.draining = False
        self.started = False
        self._tasks: list[asyncio.Task[None]] = []
        #: Coroutines started with the node and cancelled when it stops (demo, ingest).
        self.background: list[Callable[[], Awaitable[None]]] = []
        #: The benchmark publisher, when ``config.synthetic`` asks for one.
        self.synthetic: SyntheticPublisher | None = None
        if config.synthetic:
            self._add_synthetic(config.synthetic, run=singletons)

    def _add_synthetic(self, spec: str, *, run: bool = True) -> None:
        """Serve the benchmark publisher's channels and run it with the node."""
        from tickwire.ingest.synthetic import SyntheticPublisher, parse_synthetic

        streams = parse_synthetic(spec)
        for stream in streams:
            self.markets.update(parse_channel(name).symbol for name in stream.channels)
        if run:
            self.synthetic = SyntheticPublisher(self.engine, streams)
            self.background.append(self.synthetic.run)

    def close_revoked(self, key_names: set[str]) -> int:
        """Close every connection acting with one of ``key_names``; returns how many."""
        closed = sum(core.revoked(key_names) for core in list(self.cores))
        if closed:
            self.hub.flush()
        return closed

    def channel_exists(self, channel: Channel) -> bool:
        """Whether a public channel names a market or ticker this node serves."""
        if channel.kind == "sentiment":
            return channel.symbol in self.tickers
        if channel.kind == "scoped":
            return channel.symbol in self.prefixes
        return channel.symbol in self.markets

    async def start(self) -> None:
        await self.engine.start(self.hub)
        self._tasks.append(asyncio.create_task(self._heartbeats(), name="heartbeats"))
        for factory in self.background:
            self._tasks.append(asyncio.create_task(_logged(factory), name="background"))
        self.started = True

    async def drain(self) -> int:
        """Tell every client to reconnect elsewhere (close 3001); returns how many."""
        self.draining = True
        conns = list(self.hub.connections)
        for conn in conns:
            conn.close(CLOSE_SHUTDOWN)
        self.hub.flush()
        return len(conns)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # a task that swallowed its cancellation (seen: the demo market on a Redis
            # engine, which then kept a stopping worker alive for good) is cancelled
            # again each second until it ends
            while not task.done():
                await asyncio.wait([task], timeout=1.0)
                if not task.done():
                    log.warning("%s task went on after it was cancelled: again", task.get_name())
                    task.cancel()
            if not task.cancelled():
                task.exception()  # retrieved: it ended by itself, its error was logged
        self._tasks.clear()
        await self.hub.close()
        await self.engine.close()
        self.started = False

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            ts = now_ms()
            for fmt, render in self.heartbeats:
                payload = render(ts)
                if payload is not None:
                    self.hub.broadcast(payload, fmt)


async def _logged(factory: Callable[[], Awaitable[None]]) -> None:
    try:
        await factory()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background task failed")


#: Where the application keeps its node.
NODE_KEY: web.AppKey[Node] = web.AppKey("node", Node)

"""HTTP routes for market data: ``POST /api/v1/publish``, ``GET /api/v1/book/<market>`` and
``GET /api/v1/markets`` (the registry).

Errors are ``{"error": {"code", "message", "field"?, "index"?}}`` with a 4xx status; the
codes are stable and listed in docs/market-data.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from tickwire.auth.principal import AuthError, Principal
from tickwire.auth.ratelimit import RateLimited, RateLimiter
from tickwire.engine.base import EngineError
from tickwire.ingest.demo import DemoMarket
from tickwire.ingest.gateway import Gateway, GatewaySettings, IngestError
from tickwire.ingest.schemas import decode_batch, to_ops
from tickwire.model.channels import CANDLE_INTERVALS
from tickwire.model.markets import MarketRegistry, build_registry
from tickwire.model.sentiment import SentimentSettings
from tickwire.server.config import Config
from tickwire.server.node import Node

log = logging.getLogger(__name__)

#: Checks a publisher's bearer token (None when the request had none); returns the
#: publisher's name when it may publish, None otherwise. The key store plugs in here.
PublisherCheck = Callable[[str | None], Awaitable[str | None]]

_encode = msgspec.json.Encoder().encode

#: HTTP status per error code (400 otherwise).
STATUS: dict[str, int] = {
    "unauthorized": 401,
    "publish_disabled": 403,
    "duplicate_idempotency_key": 409,
    "body_too_large": 413,
    "body_timeout": 408,
    "rate_limited": 429,
    "batch_too_large": 413,
    "crossed_book": 422,
    "book_too_deep": 422,
    "trade_out_of_order": 422,
    "engine_unavailable": 503,
}


def static_token_check(token: str | None, name: str = "publisher") -> PublisherCheck:
    """A check that accepts exactly ``token`` (compared in constant time)."""
    expected = None if not token else hashlib.sha256(token.encode()).digest()

    async def check(presented: str | None) -> str | None:
        if expected is None or presented is None:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        return name if hmac.compare_digest(digest, expected) else None

    return check


def secret_check(verify: Callable[[str], Awaitable[Principal]]) -> PublisherCheck:
    """A check backed by the key store: ``verify`` is ``Authenticator.verify_secret``
    (keys of kind ``publisher``); the publisher is named by its key name."""

    async def check(presented: str | None) -> str | None:
        if presented is None:
            return None
        try:
            principal = await verify(presented)
        except AuthError:
            return None
        return principal.key_name or principal.user_id

    return check


def first_of(*checks: PublisherCheck) -> PublisherCheck:
    """A check that accepts what any of ``checks`` accepts (tried in order)."""

    async def check(presented: str | None) -> str | None:
        for one in checks:
            name = await one(presented)
            if name is not None:
                return name
        return None

    return check


@dataclass(frozen=True, slots=True)
class PublishSettings:
    """Limits of the publish API."""

    #: Most events in one batch.
    max_events: int = 1000
    #: Largest request body in bytes.
    max_body_bytes: int = 1 << 20
    #: Idempotency keys remembered (oldest forgotten first) ...
    idempotency_keys: int = 10_000
    #: ... for at most this many seconds.
    idempotency_ttl: float = 86_400.0
    #: Largest ``depth`` of ``GET /api/v1/book``.
    max_depth: int = 5_000
    #: ``depth`` when the query names none.
    default_depth: int = 100
    #: Seconds a client has to send the request body.
    body_timeout: float = 30.0


def _error(
    code: str,
    message: str,
    *,
    field: str | None = None,
    index: int | None = None,
    status: int | None = None,
    retry_after: float | None = None,
    **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    if index is not None:
        body["index"] = index
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if code == "unauthorized" else {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return web.Response(
        body=_encode({"error": body}),
        status=status or STATUS.get(code, 400),
        content_type="application/json",
        headers=headers,
    )


def _from_ingest(exc: IngestError) -> web.Response:
    field = exc.field
    if exc.index is not None and field is not None and not field.startswith("events["):
        field = f"events[{exc.index}].{field}"
    return _error(exc.code, exc.message, field=field, index=exc.index)


class _IdempotencyKeys:
    """Keys of applied batches: key -> (body digest, response, expiry); bounded."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._keys: OrderedDict[str, tuple[bytes, dict[str, Any], float]] = OrderedDict()

    def get(self, key: str) -> tuple[bytes, dict[str, Any]] | None:
        now = time.monotonic()
        while self._keys:
            oldest = next(iter(self._keys.values()))
            if oldest[2] > now:
                break
            self._keys.popitem(last=False)
        hit = self._keys.get(key)
        return None if hit is None else (hit[0], hit[1])

    def put(self, key: str, digest: bytes, response: dict[str, Any]) -> None:
        self._keys[key] = (digest, response, time.monotonic() + self.ttl)
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)


@dataclass(slots=True)
class PublisherAuth:
    """The publish API's credential check, read on every request: the auth layer may
    replace or wrap :attr:`check` (e.g. with key-store ``publisher`` keys). None
    disables publishing (403 ``publish_disabled``)."""

    check: PublisherCheck | None = None


#: Where the application keeps its gateway and the publish API's credential check.
GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
PUBLISHER_AUTH_KEY: web.AppKey[PublisherAuth] = web.AppKey("publisher_auth", PublisherAuth)


def add_data_routes(
    app: web.Application,
    gateway: Gateway,
    *,
    check_publisher: PublisherCheck | PublisherAuth | None = None,
    settings: PublishSettings | None = None,
    limiter: RateLimiter | None = None,
) -> PublisherAuth:
    """Add ``POST /api/v1/publish`` and ``GET /api/v1/book/{market}`` to ``app``;
    returns the (replaceable) credential check, also at ``app[PUBLISHER_AUTH_KEY]``.

    ``limiter`` counts failed credential checks per client address (the one ``POST /jwt``
    and ``POST /login`` use): over it, ``429 rate_limited`` before any check runs."""
    cfg = settings or PublishSettings()
    auth = (
        check_publisher
        if isinstance(check_publisher, PublisherAuth)
        else PublisherAuth(check_publisher)
    )
    app[PUBLISHER_AUTH_KEY] = auth
    app[GATEWAY_KEY] = gateway
    keys = _IdempotencyKeys(cfg.idempotency_keys, cfg.idempotency_ttl)
    lock = asyncio.Lock()

    async def publish(request: web.Request) -> web.Response:
        check = auth.check
        if check is None:
            return _error(
                "publish_disabled",
                "publishing is disabled: no publisher credentials are configured "
                "(set TICKWIRE_PUBLISH_TOKEN)",
            )
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        presented = token.strip() if scheme.lower() == "bearer" and token.strip() else None
        address = request.remote or "unknown"
        if limiter is not None:
            try:
                await limiter.take(address)
            except RateLimited as exc:
                return _error("rate_limited", exc.message, retry_after=exc.retry_after)
        publisher = await check(presented)
        if publisher is None:
            return _error(
                "unauthorized", "a valid publisher key is required (Authorization: Bearer)"
            )
        if limiter is not None:
            await limiter.give_back(address)
        if request.content_length is not None and request.content_length > cfg.max_body_bytes:
            return _error(
                "body_too_large", f"request body over {cfg.max_body_bytes} bytes", field="body"
            )
        body = bytearray()
        try:
            async with asyncio.timeout(cfg.body_timeout):
                async for chunk in request.content.iter_chunked(65_536):
                    body += chunk
                    if len(body) > cfg.max_body_bytes:
                        return _error(
                            "body_too_large",
                            f"request body over {cfg.max_body_bytes} bytes",
                            field="body",
                        )
        except TimeoutError:
            return _error(
                "body_timeout",
                f"request body not received within {cfg.body_timeout:g} s",
                field="body",
            )
        raw = bytes(body)
        try:
            batch = decode_batch(raw, max_bytes=cfg.max_body_bytes)
        except IngestError as exc:
            return _from_ingest(exc)
        if not batch.events:
            return _error("empty_batch", "events must hold at least one event", field="events")
        if len(batch.events) > cfg.max_events:
            return _error(
                "batch_too_large",
                f"{len(batch.events)} events in one batch (at most {cfg.max_events})",
                field="events",
            )
        key = request.headers.get("Idempotency-Key")
        if key is not None and batch.idempotency_key is not None and key != batch.idempotency_key:
            return _error(
                "bad_idempotency_key",
                "the Idempotency-Key header and idempotency_key differ",
                field="idempotency_key",
            )
        key = key if key is not None else batch.idempotency_key
        if key is not None and not (0 < len(key) <= 128 and key.isprintable()):
            return _error(
                "bad_idempotency_key",
                "idempotency key must be 1 to 128 printable characters",
                field="idempotency_key",
            )
        try:
            ops = to_ops(gateway, batch.events)
        except IngestError as exc:
            return _from_ingest(exc)
        digest = hashlib.sha256(raw).digest()
        async with lock:
            if key is not None:
                seen = keys.get(key)
                if seen is not None:
                    same = hmac.compare_digest(seen[0], digest)
                    return _error(
                        "duplicate_idempotency_key",
                        "this idempotency key was already used"
                        + (
                            " for this batch: it was applied once and not again"
                            if same
                            else " for a different batch: nothing was applied"
                        ),
                        field="idempotency_key",
                        applied=seen[1] if same else None,
                    )
            try:
                pubs = await gateway.publish_ops(ops)
            except IngestError as exc:
                if exc.index is None and len(ops) == 1:
                    exc.index = 0
                return _from_ingest(exc)
            except EngineError as exc:
                log.warning("publish by %s failed in the engine: %s", publisher, exc)
                return _error(exc.code, "the engine is unavailable: nothing was published; retry")
            result = {"accepted": len(ops), "published": len(pubs)}
            if key is not None:
                keys.put(key, digest, result)
        return web.json_response(result)

    async def book(request: web.Request) -> web.Response:
        market = request.match_info["market"]
        text = request.query.get("depth")
        depth = cfg.default_depth
        if text is not None:
            if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= cfg.max_depth:
                return _error(
                    "bad_depth",
                    f"depth must be an integer from 1 to {cfg.max_depth}",
                    field="depth",
                )
            depth = int(text)
        try:
            view = await gateway.book_view(market, depth)
        except IngestError as exc:
            return _error(exc.code, exc.message, field="market", status=404)
        return web.Response(body=_encode(view), content_type="application/json")

    app.router.add_post("/api/v1/publish", publish)
    app.router.add_get("/api/v1/book/{market}", book)
    return auth


def add_registry_route(app: web.Application, registry: MarketRegistry) -> None:
    """Add ``GET /api/v1/markets``: the markets (id, base, quote, increments), the
    sentiment tickers and the candle intervals this gateway serves (the dashboard's
    pickers). The registry does not change while the server runs: encoded once."""
    body = _encode(
        {
            "markets": [
                {
                    "id": m.id,
                    "base": m.base,
                    "quote": m.quote,
                    "price_increment": m.price_increment.text,
                    "size_increment": m.size_increment.text,
                }
                for m in registry.markets
            ],
            "tickers": sorted(registry.sentiment_tickers),
            "candle_intervals": list(CANDLE_INTERVALS),
        }
    )

    async def markets(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app.router.add_get("/api/v1/markets", markets)


def install_market_data(
    app: web.Application,
    config: Config,
    node: Node,
    *,
    publisher_keys: Callable[[str], Awaitable[Principal]] | None = None,
    limiter: RateLimiter | None = None,
) -> Gateway:
    """Build the gateway from ``config``, add the data routes, and register the
    background duties with ``node``: sentiment period closing, and the demo market
    when ``config.demo`` is set. Publishers authenticate with ``config.publish_token``
    or a key-store ``publisher`` key (``publisher_keys``: ``verify_secret``)."""
    registry = build_registry(config.markets, config.tickers, config.market_specs)
    settings = GatewaySettings(
        book_max_levels=config.book_max_levels,
        book_snapshot_depth=config.book_snapshot_depth,
        # history must reach back to the last snapshot for new subscribers
        book_snapshot_every=max(1, min(config.book_snapshot_every, config.history_size - 1)),
        book_snapshot_bytes=config.book_snapshot_bytes,
        sentiment=SentimentSettings(**config.sentiment_windows),
    )
    gateway = Gateway(node.engine, registry, settings)
    checks = [static_token_check(config.publish_token)] if config.publish_token else []
    if publisher_keys is not None:
        checks.append(secret_check(publisher_keys))
    check = first_of(*checks) if checks else None
    publish = PublishSettings(
        max_events=config.publish_max_events,
        max_body_bytes=config.publish_max_bytes,
        max_depth=config.book_max_levels,
        body_timeout=config.body_timeout,
    )
    add_data_routes(app, gateway, check_publisher=check, settings=publish, limiter=limiter)
    add_registry_route(app, registry)
    node.background.append(gateway.run)
    if config.demo:
        demo = DemoMarket(gateway, seed=config.seed, rate=config.demo_rate)
        node.background.append(demo.run)
    return gateway

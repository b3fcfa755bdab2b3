"""``GET /real-time/<name>?ticker=…``: Market Prophit's live REST endpoints.

Each answers ``{params, path, results, timestamp}`` from the engine (the latest point of
its view, read from the channel's history or snapshot), with the same rendering the
Socket.IO stream uses (:func:`tickwire.dialects.prophit.result`). Authenticated with a
``POST /jwt`` token (``Authorization: Bearer`` or ``?token=``); errors are
``{"error": {"type", "code", "message", "status"}}`` with that HTTP status.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import web

from tickwire.auth import AuthError, Principal
from tickwire.dialects.prophit import (
    ENDPOINTS,
    PREFIX,
    EndpointError,
    Request,
    entitle,
    resolve,
    response,
    result,
)
from tickwire.engine.base import Engine
from tickwire.model.publication import Position, now_ms
from tickwire.server.node import Node

log = logging.getLogger(__name__)

_MINUTE_MS = 60_000
#: History windows tried, largest first, to find a view's latest point.
_WINDOWS = (1000, 100, 10, 1)


def error_response(exc: EndpointError) -> web.Response:
    return web.json_response({"error": exc.body()}, status=exc.status)


async def latest_rows(engine: Engine, req: Request, now: int, history: int) -> list[dict[str, Any]]:
    """The endpoint's current results: the latest point of its view (for
    ``user-sentiment-last-minute``: every message of the last minute), oldest first."""
    endpoint = req.endpoint
    name = req.channel.name
    if req.channel.stateful:
        snap = await engine.snapshot(name)
        if snap is None:
            return []
        row = result(endpoint, req.ticker, msgspec.json.decode(snap.data))
        return [] if row is None else [row]
    pos = await engine.position(name)
    for window in (min(history, w) for w in _WINDOWS):
        back = min(pos.seq, window)
        res = await engine.history(name, Position(pos.epoch, pos.seq - back))
        if res.recovered:
            break
    else:
        return []
    rows: list[dict[str, Any]] = []
    for pub in reversed(res.publications):
        data = msgspec.json.decode(pub.data)
        if not isinstance(data, dict):
            continue
        if endpoint.last_minute:
            ts = data.get("ts")
            if not isinstance(ts, int) or ts < now - _MINUTE_MS:
                if isinstance(ts, int):
                    break
                continue
        row = result(endpoint, req.ticker, data)
        if row is None:
            continue
        rows.append(row)
        if not endpoint.last_minute:
            break
    rows.reverse()
    return rows


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token")


def _accepts_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept")
    if not accept:
        return True
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return any(k in ("*/*", "application/*", "application/json") for k in kinds)


def add_realtime_routes(app: web.Application, node: Node) -> None:
    """Add ``GET /real-time/<name>`` for every endpoint of the prophit dialect."""

    async def principal_of(request: web.Request) -> Principal:
        token = bearer_token(request)
        if token is None:
            raise EndpointError(
                401,
                "unauthorized",
                "a token is required: Authorization: Bearer <token from POST /jwt> or ?token=",
            )
        if node.verify_token is None:
            raise EndpointError(401, "unauthorized", "this server does not accept tokens")
        try:
            return await node.verify_token(token)
        except AuthError as exc:
            raise EndpointError(401, exc.code, exc.message) from None

    async def get_realtime(request: web.Request) -> web.Response:
        try:
            if not _accepts_json(request):
                raise EndpointError(
                    406, "not_acceptable", "this endpoint answers application/json only"
                )
            principal = await principal_of(request)
            params = {k: v for k, v in request.query.items() if k != "token"}
            req = resolve(PREFIX + request.match_info["name"], params, node.channel_exists)
            entitle(principal, req, streaming=False)
            now = now_ms()
            try:
                rows = await latest_rows(node.engine, req, now, node.config.history_size)
            except Exception:
                log.exception("GET %s failed", req.endpoint.path)
                raise EndpointError(
                    500, "unavailable", "the data store is unreachable; retry", type="api_error"
                ) from None
        except EndpointError as exc:
            return error_response(exc)
        return web.json_response(response(req, rows, now))

    names = "|".join(sorted(ENDPOINTS, key=len, reverse=True))
    app.router.add_get(PREFIX + "{name:" + names + "}", get_realtime)

    async def unknown(request: web.Request) -> web.Response:
        shown = request.match_info["name"][:80]
        return error_response(
            EndpointError(
                404,
                "unknown_path",
                f"unknown path {PREFIX + shown!r}: expected one of {', '.join(ENDPOINTS)}",
            )
        )

    app.router.add_get(PREFIX + "{name:.*}", unknown)

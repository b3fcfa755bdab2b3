"""HTTP routes that hand out credentials, and the wiring of the auth layer into the app.

- ``POST /jwt`` (Market Prophit): HTTP Basic with the API secret as user name and an empty
  password → ``{"token": "…"}``.
- ``POST /login`` (InstaMrkt): ``{"id", "password"}`` or ``{"secret"}`` (JSON or form)
  → ``{"id", "session_key", "expires_at"}``.

Errors have Market Prophit's REST shape, with our stable code added:
``{"error": {"type": "invalid_request_error", "code": "unauthorized", "message": "…"}}``.
Both routes are rate limited per client address (failures count; 429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tickwire.auth import (
    Authenticator,
    AuthError,
    SettingsError,
    codes,
    open_key_store,
)
from tickwire.auth.nonces import SharedNonces
from tickwire.auth.ratelimit import RateLimited
from tickwire.auth.redis_state import RedisNonces, RedisRateLimit
from tickwire.engine.urls import engine_urls, is_engine_url
from tickwire.model import boundedjson
from tickwire.server import logredact
from tickwire.server.config import Config, setting_error
from tickwire.server.logredact import CREDENTIAL_PARAMS, redact_credentials

log = logging.getLogger(__name__)

#: Where the application keeps its authenticator.
AUTH_KEY: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)
MAX_LOGIN_BODY = 4096
_NO_STORE = {"Cache-Control": "no-store"}


__all__ = [
    "AUTH_KEY",
    "CREDENTIAL_PARAMS",
    "add_auth_routes",
    "basic_user",
    "error_response",
    "install_auth",
    "parse_login_body",
    "redact_credentials",
]


def error_response(
    code: str, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    """A Market Prophit-shaped error with the status that fits ``code``."""
    status = codes.http_status(code)
    kind = "api_error" if status >= 500 else "invalid_request_error"
    return web.json_response(
        {"error": {"type": kind, "code": code, "message": message}},
        status=status,
        headers={**_NO_STORE, **(headers or {})},
    )


def _refusal(exc: AuthError) -> web.Response:
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    elif codes.http_status(exc.code) == 401:
        headers["WWW-Authenticate"] = 'Basic realm="tickwire"'
    return error_response(exc.code, exc.message, headers=headers)


def _client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def basic_user(header: str) -> str:
    """The user name of an HTTP Basic ``Authorization`` header whose password is empty
    (sans-I/O, for the fuzz tests)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise AuthError(
            codes.UNAUTHORIZED,
            "Authorization: expected HTTP Basic with the secret key as user name",
        )
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:  # binascii.Error, or not ASCII at all
        raise AuthError(codes.UNAUTHORIZED, "Authorization: not valid base64") from exc
    user, sep, password = decoded.partition(":")
    if not sep or password:
        raise AuthError(
            codes.UNAUTHORIZED, "Authorization: user name is the secret key, password is empty"
        )
    return user


_LOGIN_SHAPE = "body: expected a JSON object {id, password} or {secret}"


def parse_login_body(raw: bytes, content_type: str) -> dict[str, Any]:
    """The fields of a ``POST /login`` body (JSON, or a form); ``bad_request`` otherwise.

    Sans-I/O, so that the fuzz tests reach it with any bytes."""
    if len(raw) > MAX_LOGIN_BODY:
        raise AuthError(codes.BAD_REQUEST, f"body: larger than {MAX_LOGIN_BODY} bytes")
    if content_type == "application/x-www-form-urlencoded":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise AuthError(codes.BAD_REQUEST, "body: not UTF-8") from None
        try:
            return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=16))
        except ValueError:
            raise AuthError(codes.BAD_REQUEST, "body: more than 16 form fields") from None
    try:
        body = boundedjson.decode(raw, max_bytes=MAX_LOGIN_BODY)
    except boundedjson.JSONLimitError as exc:
        raise AuthError(codes.BAD_REQUEST, f"{_LOGIN_SHAPE}: {exc.message}") from None
    if not isinstance(body, dict):
        raise AuthError(codes.BAD_REQUEST, _LOGIN_SHAPE)
    return body


async def _login_fields(request: web.Request, timeout: float) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_LOGIN_BODY:
        raise AuthError(codes.BAD_REQUEST, f"body: larger than {MAX_LOGIN_BODY} bytes")
    try:
        async with asyncio.timeout(timeout):
            raw = await request.content.read(MAX_LOGIN_BODY + 1)
    except TimeoutError:
        raise AuthError(codes.BAD_REQUEST, f"body: not received within {timeout:g} s") from None
    return parse_login_body(raw, request.content_type)


def add_auth_routes(
    app: web.Application, auth: Authenticator, *, body_timeout: float = 30.0
) -> None:
    """Add ``POST /jwt`` and ``POST /login`` to ``app``, served by ``auth``; a login body
    not received within ``body_timeout`` seconds is refused."""

    async def post_jwt(request: web.Request) -> web.Response:
        address = _client_address(request)
        try:
            await auth.rate_limiter.take(address)
            token = await auth.exchange_secret(basic_user(request.headers.get("Authorization", "")))
        except AuthError as exc:
            return _refusal(exc)
        await auth.rate_limiter.give_back(address)
        return web.json_response({"token": token}, headers=_NO_STORE)

    async def post_login(request: web.Request) -> web.Response:
        address = _client_address(request)
        try:
            await auth.rate_limiter.take(address)
            fields = await _login_fields(request, body_timeout)
            if fields.get("secret") is not None:
                result = await auth.login(secret=fields.get("secret"))
            else:
                result = await auth.login(user_id=fields.get("id"), password=fields.get("password"))
        except AuthError as exc:
            return _refusal(exc)
        await auth.rate_limiter.give_back(address)
        return web.json_response(
            {
                "id": result.user_id,
                "session_key": result.session_key,
                "expires_at": int(result.expires_at),  # integer seconds, as documented
            },
            headers=_NO_STORE,
        )

    app.router.add_post("/jwt", post_jwt)
    app.router.add_post("/login", post_login)


def shared_nonces(config: Config) -> SharedNonces | None:
    """With a Redis engine, the record of used nonces every node shares (in the same Redis
    and namespace as the engine); None with the memory engine (one process, its memory)."""
    if not is_engine_url(config.engine):
        return None
    from tickwire.engine.redis import home_shard, parse_engine_url

    urls = engine_urls(config.engine)
    try:
        # several shards: the one the key ``auth`` places on holds them
        target = parse_engine_url(home_shard(urls) if len(urls) > 1 else urls[0])
    except ValueError as exc:
        raise setting_error(f"engine: {exc}") from None
    if target.sentinels:
        log.warning(
            "auth: nonces are remembered per node with a Sentinel engine URL "
            "(a client-signed credential may be replayed once on another node)"
        )
        return None
    return RedisNonces.from_url(target.url, target.prefix or "tickwire")


def install_auth(app: web.Application, config: Config) -> Authenticator:
    """Build the authenticator for ``config``, add its routes, open and close its key store
    with the app, and return it (the caller hands ``verify_token`` to the native dialect)."""
    settings = config.auth
    try:
        auth = Authenticator(open_key_store(settings.key_store), settings)
    except (SettingsError, OSError, ValueError) as exc:
        raise setting_error(str(exc)) from None
    app[AUTH_KEY] = auth
    auth.shared_nonces = shared_nonces(config)
    if isinstance(auth.shared_nonces, RedisNonces):  # the same Redis keeps the rate limits
        s = auth.settings
        auth.rate_limiter.shared = RedisRateLimit(
            auth.shared_nonces.client,
            s.auth_rate_burst,
            s.auth_rate_per_minute,
            auth.shared_nonces.prefix,
        )
    add_auth_routes(app, auth, body_timeout=config.body_timeout)
    logredact.install()  # tokens and digests travel in query strings

    async def store_lifecycle(app: web.Application) -> AsyncIterator[None]:
        await auth.store.open()
        yield
        await auth.close()

    app.cleanup_ctx.append(store_lifecycle)
    return auth

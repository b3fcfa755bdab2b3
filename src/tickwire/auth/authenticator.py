"""The one object the dialects and routes call: credentials in, :class:`Principal` out.

=====================  ==========================================  =======================
style                  obtain                                      verify
=====================  ==========================================  =======================
Market Prophit         :meth:`exchange_secret` (``POST /jwt``)     :meth:`verify_gateway_token`
native                 same token                                  :meth:`verify_token`
Coinbase               signed by the client                        :meth:`verify_coinbase_jwt`
InstaMrkt              :meth:`login` (``POST /login``)             :meth:`verify_digest`
Peatio / Barong        issued by the identity provider             :meth:`verify_bearer`
publish API            an API secret of kind ``publisher``         :meth:`verify_secret`
=====================  ==========================================  =======================

Every method raises :class:`AuthError` with a code from :mod:`tickwire.auth.codes`. Failures
are logged with their code and the key name (never a secret, token or digest).
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import jwt

from tickwire.auth import codes
from tickwire.auth.bearer import BearerVerifier
from tickwire.auth.coinbase import CoinbaseVerifier
from tickwire.auth.digest import (
    check_digest_params,
    derive_session_key,
    timestamp_of,
    verify_digest_value,
)
from tickwire.auth.gateway import GatewayTokens, load_ed25519_private_key
from tickwire.auth.jwtcheck import MAX_TOKEN_LENGTH, check_segments
from tickwire.auth.keys import (
    SECRET_KINDS,
    KeyKind,
    KeyRecord,
    KeyStore,
    Session,
    hash_password,
    hash_secret,
    validate_user_id,
    verify_password_async,
)
from tickwire.auth.nonces import NonceCache, SharedNonces
from tickwire.auth.principal import AuthError, Principal
from tickwire.auth.ratelimit import RateLimiter
from tickwire.auth.settings import AuthSettings
from tickwire.auth.store import open_key_store

log = logging.getLogger("tickwire.auth")

MAX_SECRET_LENGTH = 256


@functools.cache
def _dummy_password_hash() -> str:
    """Compared against when a user has no password, so that a miss costs as much as a hit."""
    return hash_password(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A new InstaMrkt session: the user id and the session key (shown to the client only)."""

    user_id: str
    session_key: str
    expires_at: float

    def __repr__(self) -> str:
        return (
            f"LoginResult(user_id={self.user_id!r}, session_key=<hidden>, "
            f"expires_at={self.expires_at})"
        )


class Authenticator:
    """Verifies every credential style against one key store and one set of settings."""

    def __init__(
        self,
        store: KeyStore,
        settings: AuthSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = s = settings or AuthSettings()
        self.store = store
        self._clock = clock
        if s.auth_secret:
            master = s.auth_secret.encode("utf-8")
        else:
            master = secrets.token_bytes(32)
            log.warning(
                "auth: no secret configured (TICKWIRE_AUTH_SECRET): using a random one; "
                "tokens and session keys end when this process does and work on this node only"
            )
        self._master = master
        self.tokens = GatewayTokens(
            algorithm=s.token_algorithm,
            secret=master,
            private_key=(
                load_ed25519_private_key(s.token_private_key) if s.token_private_key else None
            ),
            ttl=s.token_ttl,
            leeway=s.auth_leeway,
            clock=clock,
        )
        self.nonces = NonceCache(s.nonce_cache_size, s.nonce_cache_per_key, clock=clock)
        self.coinbase = CoinbaseVerifier(
            store,
            self.nonces,
            max_lifetime=s.coinbase_max_lifetime,
            issuers=s.coinbase_issuers,
            leeway=s.auth_leeway,
            clock=clock,
        )
        self.bearer = BearerVerifier.from_settings(
            public_key=s.bearer_public_key,
            jwks=s.bearer_jwks,
            algorithms=s.bearer_algorithms,
            issuer=s.bearer_issuer,
            audience=s.bearer_audience,
            leeway=s.auth_leeway,
            clock=clock,
        )
        self.rate_limiter = RateLimiter(s.auth_rate_burst, s.auth_rate_per_minute, clock=clock)

    @property
    def shared_nonces(self) -> SharedNonces | None:
        """The cluster's record of used nonces (None: this node's memory only)."""
        return self.coinbase.shared

    @shared_nonces.setter
    def shared_nonces(self, shared: SharedNonces | None) -> None:
        self.coinbase.shared = shared

    def __repr__(self) -> str:
        return f"Authenticator(store={self.store!r}, tokens={self.tokens!r})"

    @classmethod
    async def open(
        cls, settings: AuthSettings | None = None, *, clock: Callable[[], float] = time.time
    ) -> Authenticator:
        """An authenticator over the store named by ``settings.key_store``, opened."""
        settings = settings or AuthSettings()
        store = open_key_store(settings.key_store)
        auth = cls(store, settings, clock=clock)
        await store.open()
        return auth

    async def close(self) -> None:
        """Close the key store (and the shared nonce record, if any)."""
        if self.shared_nonces is not None:
            await self.shared_nonces.close()
        await self.store.close()

    def now(self) -> float:
        """The authenticator's clock (UNIX seconds)."""
        return self._clock()

    # --- issuing ---------------------------------------------------------------------------

    async def exchange_secret(self, secret: object) -> str:
        """A gateway token for an API secret of kind ``secret`` (Market Prophit ``POST /jwt``)."""
        record = await self._secret_record(secret, {KeyKind.SECRET}, "token exchange")
        token = self.tokens.issue(record)
        log.info("auth: issued token for key %s (user %s)", record.name, record.user_id)
        return token

    async def login(
        self,
        *,
        user_id: object = None,
        password: object = None,
        secret: object = None,
    ) -> LoginResult:
        """Start a new InstaMrkt session with a user id + password, or an API secret."""
        if secret is not None:
            record = await self._secret_record(secret, {KeyKind.SECRET}, "login")
        else:
            if not isinstance(user_id, str) or not isinstance(password, str) or not password:
                raise AuthError(codes.UNAUTHORIZED, "login: give id and password, or secret")
            try:
                validate_user_id(user_id)
            except ValueError as exc:
                raise AuthError(codes.UNAUTHORIZED, "id: not a user id") from exc
            if len(password) > 1024:
                raise AuthError(codes.UNAUTHORIZED, "password: longer than 1024 characters")
            found = await self.store.find_password(user_id)
            stored = found.secret_hash if found is not None and found.secret_hash else None
            ok = await verify_password_async(password, stored or _dummy_password_hash())
            if found is None or not ok:
                log.info("auth: login refused for user %s: wrong id or password", user_id)
                raise AuthError(codes.UNAUTHORIZED, "login: wrong id or password")
            record = found
        now = self._clock()
        session = Session(
            user_id=record.user_id,
            salt=secrets.token_urlsafe(16),
            key_name=record.name,
            expires_at=now + self.settings.session_ttl,
        )
        await self.store.put_session(session)
        log.info("auth: new session for user %s (key %s)", record.user_id, record.name)
        key = derive_session_key(self._master, session.user_id, session.salt)
        return LoginResult(session.user_id, key, session.expires_at)

    async def _secret_record(
        self, secret: object, kinds: Collection[KeyKind], what: str
    ) -> KeyRecord:
        if not isinstance(secret, str) or not secret:
            raise AuthError(codes.UNAUTHORIZED, f"{what}: secret key missing")
        if len(secret) > MAX_SECRET_LENGTH:
            raise AuthError(codes.UNAUTHORIZED, f"{what}: secret key too long")
        record = await self.store.find_by_secret_hash(hash_secret(secret))
        if record is None or record.kind not in kinds or record.kind not in SECRET_KINDS:
            log.info("auth: %s refused: unknown secret", what)
            raise AuthError(codes.UNAUTHORIZED, f"{what}: invalid secret key")
        if not record.active:
            log.info("auth: %s refused: key %s is revoked", what, record.name)
            raise AuthError(codes.KEY_REVOKED, f"{what}: key {record.name!r} is revoked")
        return record

    # --- verifying -------------------------------------------------------------------------

    async def verify_gateway_token(self, token: object) -> Principal:
        """The principal of a token from :meth:`exchange_secret` (its key must be active)."""
        try:
            claims = self.tokens.verify(token)
            record = await self.store.get(claims.key_name)
            if record is None or record.user_id != claims.user_id:
                raise AuthError(codes.UNKNOWN_KEY, "token: its key no longer exists")
            if not record.active:
                raise AuthError(codes.KEY_REVOKED, f"token: key {record.name!r} is revoked")
        except AuthError as exc:
            log.info("auth: gateway token refused: %s", exc.code)
            raise
        return Principal(
            user_id=claims.user_id,
            entitlements=claims.entitlements,
            expires_at=claims.expires_at,
            key_name=claims.key_name,
        )

    async def verify_coinbase_jwt(self, token: object) -> Principal:
        """The principal of a client-signed (Coinbase-style) JWT.

        ``expires_at`` is the JWT's ``exp`` (at most two minutes away). Coinbase keeps a
        subscription made with a valid JWT after it expires, so a dialect should check each
        subscribe's JWT rather than close the connection at ``expires_at``.
        """
        try:
            return await self.coinbase.verify(token)
        except AuthError as exc:
            log.info("auth: client-signed JWT refused: %s", exc.code)
            raise

    async def verify_bearer(
        self, token: object, *, subject: str | None = None, require_jti: bool = False
    ) -> Principal:
        """The principal of an identity-provider (Barong) JWT; ``unauthorized`` if none is
        configured. A leading ``Bearer `` is accepted and removed. ``subject`` and
        ``require_jti`` as :meth:`BearerVerifier.verify`."""
        if isinstance(token, str) and token[:7].lower() == "bearer ":
            token = token[7:].strip()
        if self.bearer is None:
            raise AuthError(codes.UNAUTHORIZED, "token: no identity provider is configured")
        try:
            return self.bearer.verify(token, subject=subject, require_jti=require_jti)
        except AuthError as exc:
            log.info("auth: bearer token refused: %s", exc.code)
            raise

    async def verify_token(self, token: object) -> Principal:
        """A gateway token, a client-signed (Coinbase-style) JWT, or else (when configured)
        an identity-provider token.

        This is what the native dialect accepts. The provider is tried only when the token is
        not a gateway token at all (wrong algorithm or signature), so a gateway token's own
        refusal (expired, revoked…) is reported as such. When both refuse, the refusal that
        names the token's actual problem wins: a tampered gateway token is ``bad_signature``
        (not the provider's ``alg_not_allowed`` for HS256), whatever else is configured.
        """
        if _client_signed(token):
            return await self.verify_coinbase_jwt(token)
        try:
            return await self.verify_gateway_token(token)
        except AuthError as exc:
            if self.bearer is None or exc.code not in (codes.ALG_NOT_ALLOWED, codes.BAD_SIGNATURE):
                raise
            gateway_refusal = exc
        try:
            return await self.verify_bearer(token)
        except AuthError as exc:
            # Only the gateway accepts this alg: its refusal is the one about this token.
            if exc.code == codes.ALG_NOT_ALLOWED and gateway_refusal.code != codes.ALG_NOT_ALLOWED:
                raise gateway_refusal from None
            raise

    async def verify_digest(self, user_id: object, nonce: object, h: object) -> Principal:
        """The principal of an InstaMrkt ``?id=&n=&h=`` connection."""
        try:
            uid, n, hexdigest = check_digest_params(user_id, nonce, h)
            session = await self.store.get_session(uid)
            if session is None:
                raise AuthError(codes.UNAUTHORIZED, "id: no session for this user: log in first")
            key = derive_session_key(self._master, uid, session.salt)
            verify_digest_value(uid, n, hexdigest, key)
            now = self._clock()
            if now >= session.expires_at:
                raise AuthError(codes.TOKEN_EXPIRED, "session key expired: log in again")
            window = self.settings.digest_nonce_window
            ts = timestamp_of(n)
            if ts is not None and abs(now - ts) > window:
                raise AuthError(
                    codes.NONCE_STALE, f"n: timestamp nonce is more than {window:.0f} s from now"
                )
            remember_until = ts + window if ts is not None else session.expires_at
            self.nonces.use(f"digest:{uid}", n, remember_until)
            if self.shared_nonces is not None:
                await self.shared_nonces.use(f"digest:{uid}", n, remember_until, now)
            record = await self.store.get(session.key_name)
            if record is None or not record.active:
                raise AuthError(codes.KEY_REVOKED, "the key this session logged in with is revoked")
        except AuthError as exc:
            log.info("auth: digest refused: %s", exc.code)
            raise
        return Principal(
            user_id=uid,
            entitlements=record.entitlements,
            expires_at=session.expires_at,
            key_name=record.name,
        )

    async def verify_secret(
        self, secret: object, kinds: Collection[KeyKind] = (KeyKind.PUBLISHER,)
    ) -> Principal:
        """The principal of a raw API secret of one of ``kinds`` (the publish API)."""
        record = await self._secret_record(secret, kinds, "secret")
        return Principal(
            user_id=record.user_id, entitlements=record.entitlements, key_name=record.name
        )


def _client_signed(token: object) -> bool:
    """Whether ``token`` looks like a client-signed JWT: a header with ``kid`` and ``nonce``
    (only a routing hint: the verifier that gets it checks everything)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        return False
    try:
        check_segments(token)
        header = jwt.get_unverified_header(token)
    except (jwt.PyJWTError, AuthError):
        return False
    return "kid" in header and "nonce" in header

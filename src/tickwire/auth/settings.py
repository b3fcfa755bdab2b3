"""Authentication settings: one schema, with the environment variable for each field.

The server's configuration reads these (flags > env > file > defaults); :data:`ENV_VARS`
names the environment variable of every field, and :meth:`AuthSettings.from_env` is the
reference reading of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the setting."""


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """How tickwire authenticates clients. Durations are seconds."""

    #: SQLite file path, or ``postgresql://…[?schema=NAME]``.
    key_store: str = "tickwire-keys.sqlite3"
    #: Master secret (≥ 32 bytes): signs HS256 gateway tokens and derives session keys.
    #: None → a random one per process (tokens and sessions die with it; one node only).
    secret: str | None = None
    #: Gateway token algorithm: ``HS256`` (with ``secret``) or ``EdDSA`` (with the key below).
    token_algorithm: str = "HS256"
    #: Ed25519 private key (PEM text or a path to a PEM file) for EdDSA gateway tokens.
    token_private_key: str | None = None
    #: Lifetime of tokens issued by ``POST /jwt``.
    token_ttl: float = 5 * 3600
    #: Clock skew tolerated on exp / nbf / iat.
    leeway: float = 5.0
    #: Longest accepted lifetime (exp - nbf) of a client-signed Coinbase JWT.
    coinbase_max_lifetime: float = 120.0
    #: Accepted ``iss`` of Coinbase JWTs (current SDKs send "cdp"; older ones "coinbase-cloud").
    coinbase_issuers: tuple[str, ...] = ("cdp", "coinbase-cloud")
    #: Lifetime of an InstaMrkt session key; each login starts a new one.
    session_ttl: float = 24 * 3600
    #: A timestamp nonce (UNIX seconds or milliseconds) must lie within this of now.
    digest_nonce_window: float = 300.0
    #: Outstanding nonces remembered at most (all keys), and per key or user.
    nonce_cache_size: int = 100_000
    nonce_cache_per_key: int = 1_000
    #: ``POST /jwt`` and ``POST /login``: failed attempts allowed per client address in a burst,
    #: and refilled per minute.
    auth_rate_burst: int = 10
    auth_rate_per_minute: float = 10.0
    #: Native dialect: seconds a connection whose token expired may still send ``refresh``.
    token_expiry_grace: float = 10.0
    #: External identity provider (Peatio/Barong): public key as PEM, base64 of a PEM, or a path.
    bearer_public_key: str | None = None
    #: … or a JWKS file (path) holding several keys, chosen by ``kid``.
    bearer_jwks: str | None = None
    #: Algorithms accepted from the provider (each still pinned to its key type).
    bearer_algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    #: Required ``iss`` / ``aud`` of provider tokens (None: not checked).
    bearer_issuer: str | None = None
    bearer_audience: str | None = None

    def __repr__(self) -> str:  # the secret never reaches a log line
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.secret:
            shown["secret"] = "<hidden>"
        fields = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"AuthSettings({fields})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AuthSettings:
        """Settings from ``TICKWIRE_*`` variables (see :data:`ENV_VARS`); others default."""
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            var = ENV_VARS[f.name]
            if var not in environ:
                continue
            raw = environ[var]
            try:
                values[f.name] = _convert(f.name, raw)
            except ValueError as exc:
                raise SettingsError(f"{var}: {exc}") from exc
        return cls(**values)  # type: ignore[arg-type]


_TUPLES = {"coinbase_issuers", "bearer_algorithms"}
_INTS = {"nonce_cache_size", "nonce_cache_per_key", "auth_rate_burst"}
_FLOATS = {
    "token_ttl",
    "leeway",
    "coinbase_max_lifetime",
    "session_ttl",
    "digest_nonce_window",
    "auth_rate_per_minute",
    "token_expiry_grace",
}


def _convert(name: str, raw: str) -> object:
    if name in _TUPLES:
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    if name in _INTS:
        return int(raw)
    if name in _FLOATS:
        return float(raw)
    if name in ("key_store", "token_algorithm"):
        return raw
    return raw or None  # optional text: empty means unset


#: Environment variable of every field.
ENV_VARS: dict[str, str] = {
    "key_store": "TICKWIRE_KEY_STORE",
    "secret": "TICKWIRE_AUTH_SECRET",
    "token_algorithm": "TICKWIRE_TOKEN_ALGORITHM",
    "token_private_key": "TICKWIRE_TOKEN_PRIVATE_KEY",
    "token_ttl": "TICKWIRE_TOKEN_TTL",
    "leeway": "TICKWIRE_AUTH_LEEWAY",
    "coinbase_max_lifetime": "TICKWIRE_COINBASE_MAX_LIFETIME",
    "coinbase_issuers": "TICKWIRE_COINBASE_ISSUERS",
    "session_ttl": "TICKWIRE_SESSION_TTL",
    "digest_nonce_window": "TICKWIRE_DIGEST_NONCE_WINDOW",
    "nonce_cache_size": "TICKWIRE_NONCE_CACHE_SIZE",
    "nonce_cache_per_key": "TICKWIRE_NONCE_CACHE_PER_KEY",
    "auth_rate_burst": "TICKWIRE_AUTH_RATE_BURST",
    "auth_rate_per_minute": "TICKWIRE_AUTH_RATE_PER_MINUTE",
    "token_expiry_grace": "TICKWIRE_TOKEN_EXPIRY_GRACE",
    "bearer_public_key": "TICKWIRE_BEARER_PUBLIC_KEY",
    "bearer_jwks": "TICKWIRE_BEARER_JWKS",
    "bearer_algorithms": "TICKWIRE_BEARER_ALGORITHMS",
    "bearer_issuer": "TICKWIRE_BEARER_ISSUER",
    "bearer_audience": "TICKWIRE_BEARER_AUDIENCE",
}

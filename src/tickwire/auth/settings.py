"""The auth layer's parameters.

The server's configuration (``tickwire.server.config.Config``) holds one of these as its
``auth`` field; each setting is read there by its own name from flags, ``TICKWIRE_<NAME>``
or the config file (flat, or in an ``[auth]`` table), so it is declared here only.
"""

from __future__ import annotations

import dataclasses
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
    auth_secret: str | None = None
    #: Gateway token algorithm: ``HS256`` (with ``secret``) or ``EdDSA`` (with the key below).
    token_algorithm: str = "HS256"
    #: Ed25519 private key (PEM text or a path to a PEM file) for EdDSA gateway tokens.
    token_private_key: str | None = None
    #: Lifetime of tokens issued by ``POST /jwt``.
    token_ttl: float = 18_000.0
    #: Clock skew tolerated on exp / nbf / iat.
    auth_leeway: float = 5.0
    #: Longest accepted lifetime (exp - nbf) of a client-signed Coinbase JWT.
    coinbase_max_lifetime: float = 120.0
    #: Accepted ``iss`` of Coinbase JWTs (current SDKs send "cdp"; older ones "coinbase-cloud").
    coinbase_issuers: tuple[str, ...] = ("cdp", "coinbase-cloud")
    #: Lifetime of an InstaMrkt session key; each login starts a new one.
    session_ttl: float = 86_400.0
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

    def __repr__(self) -> str:  # the secret and the private key never reach a log line
        shown = {f.name: repr(getattr(self, f.name)) for f in dataclasses.fields(self)}
        for name in ("auth_secret", "token_private_key"):
            if getattr(self, name):
                shown[name] = "***"
        fields = ", ".join(f"{k}={v}" for k, v in shown.items())
        return f"AuthSettings({fields})"

"""Tokens the gateway issues itself (Market Prophit ``POST /jwt``, the native dialect).

Claims are exactly ``sub`` (user id), ``iat``, ``exp``, ``jti`` and ``entitlements``: no
secret, no hash, nothing about the user beyond what authorization needs. ``jti`` is
``<random>.<key name>`` so that revoking the key also ends the tokens it produced.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tickwire.auth import codes
from tickwire.auth.jwtcheck import (
    check_times,
    decode_verified,
    number_claim,
    require_alg,
    string_claim,
    unverified_header,
)
from tickwire.auth.keys import (
    KeyRecord,
    KeyStoreError,
    entitlements_from_json,
    entitlements_to_json,
)
from tickwire.auth.principal import AuthError, Entitlements
from tickwire.auth.settings import SettingsError

GATEWAY_ALGORITHMS = ("HS256", "EdDSA")
MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class GatewayClaims:
    """The verified claims of a gateway token."""

    user_id: str
    issued_at: float
    expires_at: float
    jti: str
    key_name: str
    entitlements: Entitlements


def load_ed25519_private_key(value: str) -> ed25519.Ed25519PrivateKey:
    """An Ed25519 private key from PEM text or the path of a PEM file."""
    text = value if value.lstrip().startswith("-----BEGIN") else Path(value).read_text("ascii")
    key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SettingsError("token_private_key: expected an Ed25519 private key")
    return key


class GatewayTokens:
    """Issues and verifies gateway tokens with one pinned algorithm."""

    def __init__(
        self,
        *,
        algorithm: str,
        secret: bytes | None,
        private_key: ed25519.Ed25519PrivateKey | None,
        ttl: float,
        leeway: float,
        clock: Callable[[], float],
    ) -> None:
        if algorithm not in GATEWAY_ALGORITHMS:
            raise SettingsError(
                f"token_algorithm: {algorithm!r} (expected one of {', '.join(GATEWAY_ALGORITHMS)})"
            )
        self.algorithm = algorithm
        self._sign_key: Any
        self._verify_key: Any
        if algorithm == "HS256":
            if secret is None or len(secret) < MIN_SECRET_BYTES:
                raise SettingsError(f"secret: HS256 needs at least {MIN_SECRET_BYTES} bytes")
            self._sign_key = self._verify_key = secret
        else:
            if private_key is None:
                raise SettingsError("token_private_key: EdDSA needs an Ed25519 private key")
            self._sign_key, self._verify_key = private_key, private_key.public_key()
        if ttl <= 0:
            raise SettingsError("token_ttl: must be positive")
        self.ttl = ttl
        self.leeway = leeway
        self._clock = clock

    def __repr__(self) -> str:
        return f"GatewayTokens(algorithm={self.algorithm!r}, ttl={self.ttl})"

    def issue(self, record: KeyRecord) -> str:
        """A token for ``record``'s user with ``record``'s entitlements."""
        now = int(self._clock())
        claims = {
            "sub": record.user_id,
            "iat": now,
            "exp": now + int(self.ttl),
            "jti": f"{secrets.token_urlsafe(12)}.{record.name}",
            "entitlements": entitlements_to_json(record.entitlements),
        }
        return jwt.encode(claims, self._sign_key, algorithm=self.algorithm)

    def verify(self, token: object) -> GatewayClaims:
        """Verified claims of ``token``; :class:`AuthError` otherwise (key state not checked)."""
        header = unverified_header(token)
        alg = require_alg(header, self.algorithm, "gateway tokens")
        assert isinstance(token, str)
        claims = decode_verified(token, self._verify_key, alg)
        exp = number_claim(claims, "exp", required=True)
        iat = number_claim(claims, "iat", required=True)
        check_times(now=self._clock(), leeway=self.leeway, exp=exp, iat=iat)
        sub = string_claim(claims, "sub", max_length=64)
        jti = string_claim(claims, "jti")
        _, dot, key_name = jti.partition(".")
        if not dot or not key_name:
            raise AuthError(codes.INVALID_CLAIMS, "token: claim 'jti' is malformed")
        try:
            ents = entitlements_from_json(claims.get("entitlements"))
        except KeyStoreError as exc:
            raise AuthError(codes.INVALID_CLAIMS, f"token: {exc.message}") from exc
        assert exp is not None and iat is not None
        return GatewayClaims(sub, iat, exp, jti, key_name, ents)

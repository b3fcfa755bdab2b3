"""Bearer JWTs from an external identity provider (Peatio's Barong, or any OIDC-style issuer).

The provider's public keys are configured: one key (PEM, base64 of a PEM as Peatio's
``JWT_PUBLIC_KEY``, or a file path) or a JWKS file. Each key admits exactly the algorithm
its type implies (RSA → RS256, P-256 → ES256, Ed25519 → EdDSA), intersected with the
configured list; symmetric keys are refused at load time, so a public key can never
become an HMAC secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tickwire.auth import codes
from tickwire.auth.jwtcheck import (
    check_times,
    decode_verified,
    number_claim,
    require_alg,
    unverified_header,
)
from tickwire.auth.principal import AuthError, Entitlements, Principal
from tickwire.auth.settings import SettingsError

_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def algorithm_for(key: object) -> str:
    """The one JWS algorithm a public key of this type verifies."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name == "secp256r1":
            return "ES256"
        if key.curve.name == "secp384r1":
            return "ES384"
        raise SettingsError(f"bearer key: unsupported curve {key.curve.name}")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise SettingsError(f"bearer key: unsupported key type {type(key).__name__}")


@dataclass(frozen=True, slots=True)
class BearerKey:
    """One verification key of the provider, its ``kid`` (if any) and its pinned algorithm."""

    kid: str | None
    key: Any
    algorithm: str


def load_public_key(value: str) -> PublicKey:
    """A public key from PEM text, base64 of PEM text, or a path to a PEM file."""
    text = value.strip()
    pem: bytes | None = None
    if text.startswith("-----BEGIN"):
        pem = text.encode("ascii")
    else:
        try:
            decoded = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if decoded.lstrip().startswith(b"-----BEGIN"):
            pem = decoded
        elif Path(text).is_file():
            pem = Path(text).read_bytes()
    if pem is None:
        raise SettingsError("bearer_public_key: neither PEM, base64 PEM, nor a readable file")
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise SettingsError("bearer_public_key: not a PEM public key") from exc
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise SettingsError(f"bearer_public_key: unsupported key type {type(key).__name__}")
    return key


def load_jwks(path: str) -> list[BearerKey]:
    """The asymmetric keys of a JWKS file; a symmetric (``oct``) key is an error."""
    try:
        doc = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"bearer_jwks: cannot read {path}: {exc}") from exc
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SettingsError("bearer_jwks: expected an object with a non-empty 'keys' list")
    out: list[BearerKey] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            raise SettingsError(f"bearer_jwks: keys[{i}]: only RSA, EC and OKP keys are accepted")
        if any(p in entry for p in ("d", "p", "q", "k")):
            raise SettingsError(f"bearer_jwks: keys[{i}] holds private material")
        try:
            jwk = jwt.PyJWK.from_dict(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError) as exc:
            raise SettingsError(f"bearer_jwks: keys[{i}]: {exc}") from exc
        alg = algorithm_for(jwk.key)
        declared = entry.get("alg")
        if declared is not None and declared != alg:
            raise SettingsError(f"bearer_jwks: keys[{i}]: alg {declared!r} does not fit its key")
        kid = entry.get("kid")
        out.append(BearerKey(kid if isinstance(kid, str) else None, jwk.key, alg))
    return out


class BearerVerifier:
    """Verifies provider tokens: signature (pinned alg), exp/nbf/iat, iss and aud."""

    def __init__(
        self,
        keys: Iterable[BearerKey],
        *,
        algorithms: Iterable[str],
        issuer: str | None,
        audience: str | None,
        leeway: float,
        clock: Callable[[], float],
    ) -> None:
        allowed = frozenset(algorithms)
        self.keys = [k for k in keys if k.algorithm in allowed]
        if not self.keys:
            raise SettingsError(
                "bearer_algorithms: none of the configured keys uses an allowed algorithm"
            )
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._clock = clock

    @classmethod
    def from_settings(
        cls,
        *,
        public_key: str | None,
        jwks: str | None,
        algorithms: Iterable[str],
        issuer: str | None,
        audience: str | None,
        leeway: float,
        clock: Callable[[], float],
    ) -> BearerVerifier | None:
        """A verifier for the configured keys, or None when none is configured."""
        keys: list[BearerKey] = []
        if public_key:
            key = load_public_key(public_key)
            keys.append(BearerKey(None, key, algorithm_for(key)))
        if jwks:
            keys.extend(load_jwks(jwks))
        if not keys:
            return None
        return cls(
            keys,
            algorithms=algorithms,
            issuer=issuer,
            audience=audience,
            leeway=leeway,
            clock=clock,
        )

    def verify(
        self, token: object, *, subject: str | None = None, require_jti: bool = False
    ) -> Principal:
        """The principal of a provider token (``uid`` or ``sub``; ``role``). ``subject``:
        the ``sub`` the token must carry (Barong's session tokens: ``"session"``);
        ``require_jti``: the token must carry a ``jti`` (as rango checks)."""
        header = unverified_header(token)
        assert isinstance(token, str)
        kid = header.get("kid")
        candidates = self.keys
        if isinstance(kid, str) and any(k.kid is not None for k in self.keys):
            candidates = [k for k in self.keys if k.kid == kid]
            if not candidates:
                raise AuthError(codes.UNKNOWN_KEY, f"token: no provider key with kid {kid!r}")
        alg = require_alg(
            header, frozenset(k.algorithm for k in candidates), "identity-provider tokens"
        )
        claims: dict[str, Any] | None = None
        last: AuthError | None = None
        for k in candidates:
            if k.algorithm != alg:
                continue
            try:
                claims = decode_verified(token, k.key, alg, audience=self.audience)
                break
            except AuthError as exc:
                last = exc
                if exc.code != codes.BAD_SIGNATURE:
                    raise
        if claims is None:
            raise last or AuthError(codes.BAD_SIGNATURE, "token: signature does not verify")
        exp = number_claim(claims, "exp", required=True)
        nbf = number_claim(claims, "nbf", required=False)
        iat = number_claim(claims, "iat", required=False)
        check_times(now=self._clock(), leeway=self.leeway, exp=exp, nbf=nbf, iat=iat)
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise AuthError(codes.INVALID_CLAIMS, f"token: iss must be {self.issuer!r}")
        if subject is not None and claims.get("sub") != subject:
            raise AuthError(codes.INVALID_CLAIMS, f"token: sub must be {subject!r}")
        jti = claims.get("jti")
        if require_jti and (not isinstance(jti, str) or not jti):
            raise AuthError(codes.INVALID_CLAIMS, "token: claim 'jti' is missing")
        user = claims.get("uid") or claims.get("sub")
        if not isinstance(user, str) or not _USER_ID.match(user):
            raise AuthError(codes.INVALID_CLAIMS, "token: claim 'uid' (or 'sub') is not a user id")
        role = claims.get("role")
        return Principal(
            user_id=user,
            entitlements=Entitlements(),
            expires_at=exp,
            key_name=None,
            role=role if isinstance(role, str) else None,
        )

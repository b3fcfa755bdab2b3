"""Helpers for the auth tests: a settable clock, forged tokens, client-side credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

SECRET = "test-master-secret-0123456789abcdef0123456789"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def forge_hmac(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """A token HMAC-SHA256-signed with ``key``, whatever ``header`` claims (PyJWT refuses
    to sign HS256 with a PEM key, which is exactly the confusion attack we need)."""
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def alg_none(claims: dict[str, Any], **header: Any) -> str:
    return f"{b64url_json({'alg': 'none', 'typ': 'JWT', **header})}.{b64url_json(claims)}."


def tamper(token: str, **changes: Any) -> str:
    """``token`` with claims changed and the original signature kept."""
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{head}.{b64url_json(claims)}.{sig}"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    out: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return out


def load_private(secret: str) -> Any:
    """A private key from what ``tickwire keys create`` printed (PEM or Coinbase base64)."""
    if secret.lstrip().startswith("-----BEGIN"):
        return serialization.load_pem_private_key(secret.encode(), password=None)
    return ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(secret)[:32])


def coinbase_jwt(
    key_name: str,
    private: Any,
    *,
    now: float,
    lifetime: int = 120,
    nbf_offset: int = 0,
    nonce: str | None = None,
    iss: str = "cdp",
    alg: str | None = None,
) -> str:
    """What coinbase-advanced-py's jwt_generator builds for a WebSocket."""
    if alg is None:
        alg = "EdDSA" if isinstance(private, ed25519.Ed25519PrivateKey) else "ES256"
    nbf = int(now) + nbf_offset
    return jwt.encode(
        {"sub": key_name, "iss": iss, "nbf": nbf, "exp": nbf + lifetime},
        private,
        algorithm=alg,
        headers={"kid": key_name, "nonce": nonce or secrets.token_hex()},
    )


def digest(user_id: str, nonce: str, session_key: str) -> str:
    """InstaMrkt's client-side digest, fed in three updates as its docs show."""
    sha = hashlib.sha256()
    sha.update(user_id.encode())
    sha.update(nonce.encode())
    sha.update(session_key.encode())
    return sha.hexdigest()


def new_ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(private: Any) -> str:
    pem: bytes = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()

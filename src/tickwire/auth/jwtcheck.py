"""JWT verification shared by every verifier, with one rule: the algorithm is pinned.

The caller decides the one algorithm its key may use (from the key's kind, never from the
token). A token whose header names any other algorithm is refused before any cryptography
runs; this is what defeats ``alg: none`` and the RS256 → HS256 public-key confusion.
Times are checked here against an injectable clock, so every refusal has a stable code.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import jwt

from tickwire.auth import codes
from tickwire.auth.principal import AuthError
from tickwire.model import boundedjson

#: Longest token accepted (characters): bounds the work an attacker can ask for.
MAX_TOKEN_LENGTH = 8192


def unverified_header(token: object) -> dict[str, Any]:
    """The token's header, for choosing a key; nothing in it is trusted yet."""
    if not isinstance(token, str) or not token:
        raise AuthError(codes.UNAUTHORIZED, "token: missing")
    if len(token) > MAX_TOKEN_LENGTH:
        raise AuthError(codes.MALFORMED_TOKEN, f"token: longer than {MAX_TOKEN_LENGTH} characters")
    check_segments(token)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise AuthError(codes.MALFORMED_TOKEN, "token: not a JWT (header does not decode)") from exc
    if not isinstance(header, dict):
        raise AuthError(codes.MALFORMED_TOKEN, "token: header is not a JSON object")
    return header


def check_segments(token: str) -> None:
    """``malformed_token`` if the header or the claims nest deeper than JSON input may
    (:mod:`tickwire.model.boundedjson`): PyJWT decodes them with the standard library, whose
    ``RecursionError`` it does not catch for the claims. Other defects are PyJWT's to find."""
    for name, segment in zip(("header", "claims"), token.split(".")[:2], strict=False):
        try:
            raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        except (binascii.Error, ValueError):
            continue
        try:
            boundedjson.check(raw, max_bytes=MAX_TOKEN_LENGTH)
        except boundedjson.JSONLimitError as exc:
            raise AuthError(codes.MALFORMED_TOKEN, f"token: {name} is {exc.message}") from None


def require_alg(header: dict[str, Any], allowed: str | frozenset[str], what: str) -> str:
    """The header's ``alg`` if it is the pinned one (or one of them), else ``alg_not_allowed``."""
    alg = header.get("alg")
    permitted = frozenset({allowed}) if isinstance(allowed, str) else allowed
    if not isinstance(alg, str) or alg not in permitted:
        raise AuthError(
            codes.ALG_NOT_ALLOWED,
            f"token: alg {alg!r} is not allowed for {what} "
            f"(expected {', '.join(sorted(permitted))})",
        )
    return alg


def decode_verified(
    token: str, key: Any, alg: str, *, audience: str | None = None
) -> dict[str, Any]:
    """The claims of ``token`` after verifying its signature with ``key`` under ``alg`` only.

    Times are not checked here (see :func:`check_times`); ``aud`` is checked when given.
    """
    options: Any = {
        "verify_signature": True,
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
        "verify_aud": audience is not None,
        "verify_iss": False,
    }
    try:
        claims = jwt.decode(token, key, algorithms=[alg], options=options, audience=audience)
    except jwt.InvalidSignatureError as exc:
        raise AuthError(codes.BAD_SIGNATURE, "token: signature does not verify") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise AuthError(codes.ALG_NOT_ALLOWED, f"token: alg not allowed (expected {alg})") from exc
    except jwt.InvalidAudienceError as exc:
        raise AuthError(codes.INVALID_CLAIMS, f"token: aud must include {audience!r}") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(codes.INVALID_CLAIMS, f"token: claim {exc.claim!r} is missing") from exc
    except jwt.InvalidKeyError as exc:
        raise AuthError(codes.ALG_NOT_ALLOWED, f"token: key cannot verify {alg}") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError(codes.MALFORMED_TOKEN, "token: does not decode") from exc
    if not isinstance(claims, dict):
        raise AuthError(codes.MALFORMED_TOKEN, "token: claims are not a JSON object")
    return claims


def number_claim(claims: dict[str, Any], name: str, *, required: bool) -> float | None:
    """A NumericDate claim as a float; ``invalid_claims`` when missing (if required) or bad."""
    value = claims.get(name)
    if value is None:
        if required:
            raise AuthError(codes.INVALID_CLAIMS, f"token: claim {name!r} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError(codes.INVALID_CLAIMS, f"token: claim {name!r} must be a number")
    return float(value)


def check_times(
    *,
    now: float,
    leeway: float,
    exp: float | None,
    nbf: float | None = None,
    iat: float | None = None,
) -> None:
    """``token_expired`` when ``exp`` has passed; ``token_not_yet_valid`` for a future
    ``nbf`` or ``iat`` (each with ``leeway`` of clock skew)."""
    if exp is not None and now >= exp + leeway:
        raise AuthError(codes.TOKEN_EXPIRED, "token: expired")
    if nbf is not None and now < nbf - leeway:
        raise AuthError(codes.TOKEN_NOT_YET_VALID, "token: nbf is in the future")
    if iat is not None and now < iat - leeway:
        raise AuthError(codes.TOKEN_NOT_YET_VALID, "token: iat is in the future")


def string_claim(claims: dict[str, Any], name: str, *, max_length: int = 256) -> str:
    """A required non-empty string claim."""
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise AuthError(codes.INVALID_CLAIMS, f"token: claim {name!r} must be a non-empty string")
    return value

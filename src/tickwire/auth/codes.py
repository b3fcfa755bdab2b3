"""Stable error codes of :class:`~tickwire.auth.AuthError`.

Every refusal carries one of these codes; clients and dialects may rely on them. The
messages beside them name what was wrong and never contain a secret.
"""

from __future__ import annotations

#: No credential, a malformed one, or one that matches nothing (wrong secret or password).
UNAUTHORIZED = "unauthorized"
#: The credential is valid but may not read the channel (another user's, or not entitled).
FORBIDDEN = "forbidden"
#: The token could not be decoded at all (not three base64url segments, not JSON).
MALFORMED_TOKEN = "malformed_token"
#: A required claim or header field is missing or has the wrong type or value.
INVALID_CLAIMS = "invalid_claims"
#: ``exp`` (or a session's lifetime) has passed.
TOKEN_EXPIRED = "token_expired"
#: ``nbf`` (or ``iat``) lies in the future.
TOKEN_NOT_YET_VALID = "token_not_yet_valid"
#: The signature or digest does not verify (including tampered claims).
BAD_SIGNATURE = "bad_signature"
#: The token's ``alg`` is not the one pinned for its key (``none``, HS256 on a public key…).
ALG_NOT_ALLOWED = "alg_not_allowed"
#: No key by that name (``kid``), or it is not a key of the kind this credential needs.
UNKNOWN_KEY = "unknown_key"
#: The key exists but was revoked.
KEY_REVOKED = "key_revoked"
#: This nonce was already used within its validity.
NONCE_REUSED = "nonce_reused"
#: A timestamp nonce lies outside the accepted window.
NONCE_STALE = "nonce_stale"
#: Too many nonces are outstanding for this key; retry once some have expired.
NONCE_CACHE_FULL = "nonce_cache_full"
#: ``exp - nbf`` of a client-signed token exceeds the configured maximum.
LIFETIME_TOO_LONG = "lifetime_too_long"
#: Too many attempts from this client address; retry after the advertised delay.
RATE_LIMITED = "rate_limited"
#: The request itself is malformed (missing field, wrong content type).
BAD_REQUEST = "bad_request"
#: A shared record (the cluster's nonces in Redis) cannot be consulted; retry.
UNAVAILABLE = "unavailable"

ALL_CODES: frozenset[str] = frozenset(
    {
        UNAUTHORIZED,
        FORBIDDEN,
        MALFORMED_TOKEN,
        INVALID_CLAIMS,
        TOKEN_EXPIRED,
        TOKEN_NOT_YET_VALID,
        BAD_SIGNATURE,
        ALG_NOT_ALLOWED,
        UNKNOWN_KEY,
        KEY_REVOKED,
        NONCE_REUSED,
        NONCE_STALE,
        NONCE_CACHE_FULL,
        LIFETIME_TOO_LONG,
        RATE_LIMITED,
        BAD_REQUEST,
        UNAVAILABLE,
    }
)

#: HTTP status for each code, used by the HTTP routes.
HTTP_STATUS: dict[str, int] = {
    BAD_REQUEST: 400,
    FORBIDDEN: 403,
    RATE_LIMITED: 429,
    NONCE_CACHE_FULL: 503,
    UNAVAILABLE: 503,
}


def http_status(code: str) -> int:
    """The HTTP status to answer with for ``code`` (401 unless listed otherwise)."""
    return HTTP_STATUS.get(code, 401)

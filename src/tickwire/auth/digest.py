"""InstaMrkt-style login sessions and the ``?id=&n=&h=`` nonce digest.

``h = sha256(id + n + session_key)`` in hex. The digest needs the server to know the
session key, so the key is not stored at all: it is derived on demand as
``HMAC-SHA256(master secret, "tickwire-session-v1\\0" + id + "\\0" + salt)``, and the store
holds only the salt, the key name that logged in and the expiry. Reading the store is not
enough to connect; each login draws a new salt, which ends the previous session key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from tickwire.auth import codes
from tickwire.auth.principal import AuthError

_NONCE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_LABEL = b"tickwire-session-v1\x00"


def derive_session_key(master: bytes, user_id: str, salt: str) -> str:
    """The session key of ``user_id`` for ``salt`` (43 base64url characters)."""
    mac = hmac.new(master, _LABEL + user_id.encode() + b"\x00" + salt.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def digest(user_id: str, nonce: str, session_key: str) -> str:
    """``sha256(user_id + nonce + session_key)`` in lowercase hex, as clients compute it."""
    return hashlib.sha256((user_id + nonce + session_key).encode("utf-8")).hexdigest()


def timestamp_of(nonce: str) -> float | None:
    """UNIX seconds if ``nonce`` is a timestamp (10 digits: seconds, 13: milliseconds)."""
    if nonce.isdigit() and nonce.isascii():
        if len(nonce) == 10:
            return float(nonce)
        if len(nonce) == 13:
            return int(nonce) / 1000.0
    return None


def check_digest_params(user_id: object, nonce: object, h: object) -> tuple[str, str, str]:
    """Validated ``(id, n, h)``; ``unauthorized`` naming the first bad field."""
    if not isinstance(user_id, str) or not _USER_ID.match(user_id):
        raise AuthError(codes.UNAUTHORIZED, "id: missing or not a user id")
    if not isinstance(nonce, str) or not _NONCE.match(nonce):
        raise AuthError(codes.UNAUTHORIZED, "n: missing or not 1 to 64 of [A-Za-z0-9._:-]")
    if not isinstance(h, str) or not _HEX64.match(h):
        raise AuthError(codes.UNAUTHORIZED, "h: missing or not 64 hex digits")
    return user_id, nonce, h.lower()


def verify_digest_value(user_id: str, nonce: str, h: str, session_key: str) -> None:
    """``bad_signature`` unless ``h`` is the digest (compared in constant time)."""
    if not hmac.compare_digest(digest(user_id, nonce, session_key), h):
        raise AuthError(codes.BAD_SIGNATURE, "h: digest does not match")

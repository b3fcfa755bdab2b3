"""Client-signed JWTs in the style of Coinbase Advanced Trade.

The client signs ``{"sub": <key name>, "iss": "cdp", "nbf", "exp"}`` with header
``{"alg": "ES256"|"EdDSA", "kid": <key name>, "nonce": <random>}``. The gateway looks the
public key up by ``kid``; the key's kind fixes the algorithm (``ec`` → ES256,
``ed25519`` → EdDSA). The lifetime ``exp - nbf`` is capped, and each nonce is accepted once
within the token's lifetime.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from cryptography.hazmat.primitives import serialization

from tickwire.auth import codes
from tickwire.auth.jwtcheck import (
    check_times,
    decode_verified,
    number_claim,
    require_alg,
    unverified_header,
)
from tickwire.auth.keys import KeyKind, KeyStore
from tickwire.auth.nonces import NonceCache, SharedNonces
from tickwire.auth.principal import AuthError, Principal

#: The one algorithm each public-key kind may sign with.
PINNED_ALGORITHM: dict[KeyKind, str] = {KeyKind.EC: "ES256", KeyKind.ED25519: "EdDSA"}
MAX_NONCE_LENGTH = 128


class CoinbaseVerifier:
    """Verifies client-signed JWTs against the key store."""

    def __init__(
        self,
        store: KeyStore,
        nonces: NonceCache,
        *,
        max_lifetime: float,
        issuers: Iterable[str],
        leeway: float,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._nonces = nonces
        #: the cluster's record of used nonces (Redis), consulted after the local cache
        self.shared: SharedNonces | None = None
        self.max_lifetime = max_lifetime
        self.issuers = frozenset(issuers)
        self.leeway = leeway
        self._clock = clock
        self._parsed: OrderedDict[str, Any] = OrderedDict()  # PEM -> key object (LRU, 1024)

    def _public_key(self, pem: str) -> Any:
        key = self._parsed.get(pem)
        if key is None:
            key = serialization.load_pem_public_key(pem.encode("ascii"))
            self._parsed[pem] = key
            if len(self._parsed) > 1024:
                self._parsed.popitem(last=False)
        else:
            self._parsed.move_to_end(pem)
        return key

    async def verify(self, token: object) -> Principal:
        """The principal of the key that signed ``token``."""
        header = unverified_header(token)
        assert isinstance(token, str)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 128:
            raise AuthError(codes.INVALID_CLAIMS, "token: header 'kid' must name the key")
        nonce = header.get("nonce")
        if not isinstance(nonce, str) or not 8 <= len(nonce) <= MAX_NONCE_LENGTH:
            raise AuthError(
                codes.INVALID_CLAIMS,
                f"token: header 'nonce' must be a string of 8 to {MAX_NONCE_LENGTH} characters",
            )
        record = await self._store.get(kid)
        if record is None or record.kind not in PINNED_ALGORITHM or record.public_key is None:
            raise AuthError(codes.UNKNOWN_KEY, f"token: no public key named {kid!r}")
        alg = require_alg(header, PINNED_ALGORITHM[record.kind], f"{record.kind.value} keys")
        claims = decode_verified(token, self._public_key(record.public_key), alg)
        if not record.active:
            raise AuthError(codes.KEY_REVOKED, f"token: key {kid!r} is revoked")
        if claims.get("sub") != kid:
            raise AuthError(codes.INVALID_CLAIMS, "token: claim 'sub' must equal the header 'kid'")
        if claims.get("iss") not in self.issuers:
            raise AuthError(
                codes.INVALID_CLAIMS, f"token: claim 'iss' must be one of {sorted(self.issuers)}"
            )
        nbf = number_claim(claims, "nbf", required=True)
        exp = number_claim(claims, "exp", required=True)
        assert nbf is not None and exp is not None
        if exp - nbf > self.max_lifetime:
            raise AuthError(
                codes.LIFETIME_TOO_LONG,
                f"token: lifetime exp - nbf = {exp - nbf:.0f} s exceeds {self.max_lifetime:.0f} s",
            )
        check_times(now=self._clock(), leeway=self.leeway, exp=exp, nbf=nbf)
        self._nonces.use(f"cb:{kid}", nonce, exp + self.leeway)
        if self.shared is not None:
            await self.shared.use(f"cb:{kid}", nonce, exp + self.leeway, self._clock())
        return Principal(
            user_id=record.user_id,
            entitlements=record.entitlements,
            expires_at=exp,
            key_name=record.name,
        )

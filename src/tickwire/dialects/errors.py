"""Errors a client can see. Every one has a stable code and a message naming the field."""

from __future__ import annotations

from tickwire.model.errors import TickwireError


class ProtocolError(TickwireError):
    """A client request that cannot be served. ``request_id`` echoes the request's id."""

    def __init__(self, code: str, message: str, request_id: object = None) -> None:
        super().__init__(code, message)
        self.request_id = request_id


#: Stable error codes, documented in docs/protocol.md.
ERROR_CODES: dict[str, str] = {
    "bad_json": "the frame is not valid JSON",
    "bad_request": "the message is not an object of the documented shape",
    "unknown_op": "the op is not one this protocol knows",
    "bad_channel": "a channel name is malformed",
    "unknown_channel": "a channel names a kind, market, interval or stream that does not exist",
    "bad_since": "a since position is malformed",
    "too_many_channels": "the subscription would exceed the per-connection channel limit",
    "frame_too_large": "the frame exceeds the size limit",
    "binary_not_supported": "binary frames are not part of this protocol",
    "rate_limited": "too many requests on this connection",
    "unauthorized": "the request needs valid credentials",
    "forbidden": "the credentials do not entitle this",
    "token_expired": "the credentials expired",
    "malformed_token": "the token cannot be decoded",
    "invalid_claims": "a required claim or header field is missing or wrong",
    "token_not_yet_valid": "the token's nbf or iat lies in the future",
    "bad_signature": "the signature or digest does not verify",
    "alg_not_allowed": "the token's alg is not the one pinned for its key",
    "unknown_key": "no key by that name, or not of the needed kind",
    "key_revoked": "the key was revoked",
    "nonce_reused": "the nonce was already used",
    "nonce_stale": "a timestamp nonce is outside the accepted window",
    "lifetime_too_long": "a client-signed token lives longer than allowed",
    "unavailable": "the data store is unreachable; retry",
    "internal": "the server failed to serve the request",
}

"""Authentication: credentials in, :class:`Principal` out; entitlements decide reads."""

from tickwire.auth.principal import ANONYMOUS, AuthError, Entitlements, Principal, authorize

__all__ = ["ANONYMOUS", "AuthError", "Entitlements", "Principal", "authorize"]

"""Authentication: credentials in, :class:`Principal` out; entitlements decide reads.

:class:`Authenticator` is the facade every dialect and route calls; :mod:`.codes` lists the
stable error codes; :class:`KeyStore` (SQLite or PostgreSQL) holds the keys.
"""

from tickwire.auth.authenticator import Authenticator, LoginResult
from tickwire.auth.keys import (
    CreatedKey,
    KeyKind,
    KeyRecord,
    KeyState,
    KeyStore,
    KeyStoreError,
    create_key,
    parse_entitlements_spec,
)
from tickwire.auth.principal import ANONYMOUS, AuthError, Entitlements, Principal, authorize
from tickwire.auth.ratelimit import RateLimited
from tickwire.auth.settings import AuthSettings, SettingsError
from tickwire.auth.store import open_key_store

__all__ = [
    "ANONYMOUS",
    "AuthError",
    "AuthSettings",
    "Authenticator",
    "CreatedKey",
    "Entitlements",
    "KeyKind",
    "KeyRecord",
    "KeyState",
    "KeyStore",
    "KeyStoreError",
    "LoginResult",
    "Principal",
    "RateLimited",
    "SettingsError",
    "authorize",
    "create_key",
    "open_key_store",
    "parse_entitlements_spec",
]

"""The suite-wide log check (issue 10): no secret or token the suite used reaches a log line.

:func:`start` (from ``conftest.py``, before any test module is imported) does two things:

- it wraps every function that makes a credential - key secrets, password hashing,
  ``jwt.encode``, login session keys, digests (server and client side), the config's
  ``auth_secret`` and ``publish_token`` - so that each value made is remembered;
- it attaches one handler to the root logger at DEBUG that keeps every line any logger
  produces during the run (access log, error log, tracebacks included).

At the end of the session :func:`leaks` lists the log lines that hold a remembered value;
``conftest.py`` fails the run if there is any.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: Values shorter than this are not credentials the suite made (and would match anywhere).
MIN_LENGTH = 12

_secrets: set[str] = set()


def remember(value: object) -> None:
    """Remember ``value`` (a string credential) as one no log line may hold."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return
    if value.lstrip().startswith("-----BEGIN"):  # a PEM: every base64 line is secret
        for line in value.splitlines():
            if not line.startswith("-----") and len(line) >= MIN_LENGTH:
                _secrets.add(line.strip())
        return
    if len(value) >= MIN_LENGTH:
        _secrets.add(value)


def remembered() -> frozenset[str]:
    return frozenset(_secrets)


class LineKeeper(logging.Handler):
    """Keeps every formatted line (message and traceback) logged during the run."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.add(self.format(record))
        except Exception:  # pragma: no cover - a record that cannot format
            self.lines.add(f"{record.name}: {record.msg!r} {record.args!r}")


def leaks(lines: set[str], secrets: frozenset[str]) -> list[tuple[str, str]]:
    """(secret, line) for every line that holds a secret (or its first 24 characters,
    which is what a truncated log line would keep)."""
    if not lines or not secrets:
        return []
    blob = "\n".join(sorted(lines))
    found: list[tuple[str, str]] = []
    for secret in secrets:
        probe = secret[:24]
        at = blob.find(probe)
        if at < 0:
            continue
        start = blob.rfind("\n", 0, at) + 1
        end = blob.find("\n", at)
        found.append((secret, blob[start : end if end >= 0 else len(blob)]))
    return found


def _returns(fn: F, pick: Callable[[Any], object] = lambda v: v) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        value = fn(*args, **kwargs)
        remember(pick(value))
        return value

    return wrapper  # type: ignore[return-value]


def _first_arg(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if args:
            remember(args[0])
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _async_returns(fn: F, pick: Callable[[Any], object]) -> F:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        value = await fn(*args, **kwargs)
        remember(pick(value))
        return value

    return wrapper  # type: ignore[return-value]


KEEPER = LineKeeper()


def start() -> None:
    """Wrap the credential makers and start keeping log lines (idempotent)."""
    if KEEPER in logging.getLogger().handlers:
        return
    import jwt

    from tickwire.auth import authenticator, digest, keys
    from tickwire.server import config

    from . import authkit

    jwt.encode = _returns(jwt.encode)
    keys.generate_secret = _returns(keys.generate_secret)
    keys.hash_password = _first_arg(keys.hash_password)
    keys._generate_key_pair = _returns(keys._generate_key_pair, lambda pair: pair[1])
    digest.digest = _returns(digest.digest)
    digest.derive_session_key = _returns(digest.derive_session_key)
    authenticator.derive_session_key = digest.derive_session_key  # type: ignore[attr-defined]
    authenticator.Authenticator.login = _async_returns(  # type: ignore[method-assign]
        authenticator.Authenticator.login, lambda result: result.session_key
    )

    def config_secrets(cfg: Any) -> object:
        for value in (cfg.auth.auth_secret, cfg.publish_token, cfg.auth.token_private_key):
            remember(value)
        return None

    config.load_config = _returns(config.load_config, config_secrets)
    for name in ("digest", "forge_hmac", "alg_none", "coinbase_jwt"):
        setattr(authkit, name, _returns(getattr(authkit, name)))
    remember(authkit.SECRET)

    root = logging.getLogger()
    root.addHandler(KEEPER)
    if root.level > logging.DEBUG or root.level == logging.NOTSET:
        root.setLevel(logging.DEBUG)
    for noisy in ("asyncio", "hypothesis", "aiosqlite", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.INFO)

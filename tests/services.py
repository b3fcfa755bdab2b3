"""Real services the tests use. In CI (CI=true) a missing service fails the test; outside
CI it is skipped with the reason printed."""

from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(name: str, host: str, port: int) -> None:
    """Fail (in CI) or skip (elsewhere) when ``name`` is not listening on host:port."""
    if reachable(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service fails the run)")
    pytest.skip(f"{reason}; start it as .ci/run does (outside CI only)")


REDIS_URL = os.environ.get("TICKWIRE_TEST_REDIS", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("TICKWIRE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get("TICKWIRE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")

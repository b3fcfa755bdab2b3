"""What the client commands share: the server URL and token from flags or environment."""

from __future__ import annotations

import argparse
import os
from urllib.parse import urlsplit, urlunsplit

#: Environment variables the client commands read.
ENV_URL = "TICKWIRE_URL"
ENV_TOKEN = "TICKWIRE_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8080"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Bad command-line input; the message names the option."""


def add_url(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get(ENV_URL),
        help=f"the server: http://HOST:PORT or ws://HOST:PORT/ws (env {ENV_URL}; "
        f"default {DEFAULT_URL})",
    )


def add_token(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--token",
        default=os.environ.get(ENV_TOKEN),
        help=f"{what} (env {ENV_TOKEN}; prefer the environment: arguments show in ps)",
    )


def _parts(url: str | None) -> tuple[str, str, str]:
    text = url or DEFAULT_URL
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise UsageError(
            f"--url {text!r}: expected http://HOST:PORT, https://…, ws://HOST:PORT/ws or wss://…"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise UsageError(f"--url {text!r}: {exc}") from None
    secure = parts.scheme in ("https", "wss")
    path = parts.path.rstrip("/")
    return ("https" if secure else "http"), parts.netloc, path


def http_base(url: str | None) -> str:
    """``http(s)://HOST:PORT`` (with any path prefix, less a trailing ``/ws``)."""
    scheme, netloc, path = _parts(url)
    return urlunsplit((scheme, netloc, path.removesuffix("/ws"), "", ""))


def ws_url(url: str | None) -> str:
    """``ws(s)://HOST:PORT/ws`` for a server given either way."""
    scheme, netloc, path = _parts(url)
    path = path if path.endswith("/ws") else path + "/ws"
    return urlunsplit(("wss" if scheme == "https" else "ws", netloc, path, "", ""))

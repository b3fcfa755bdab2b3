"""The settings of one load-generator run, shared by the coordinator and its workers."""

from __future__ import annotations

import ipaddress
import random
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class BenchConfigError(ValueError):
    """A setting is invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect: a loopback host, a port and the request path."""

    host: str
    port: int
    path: str


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """One run. Times in seconds."""

    target: Target
    dialect: str = "native"
    connections: int = 100
    channels: tuple[str, ...] = ("trades:BENCH",)
    workers: int = 1
    warmup: float = 2.0
    duration: float = 10.0
    connect_timeout: float = 30.0
    connect_concurrency: int = 64
    max_messages: int = 0
    sample_every: int = 4
    seed: int = 1
    cpus: tuple[int, ...] = field(default_factory=tuple)
    #: ``USER:PASSWORD`` to ``POST /login`` with before connecting (the opcode dialect)
    login: str | None = None
    #: (user id, session key) the login returned; set by :func:`run_bench`
    credentials: tuple[str, str] | None = None

    def __repr__(self) -> str:  # never print the password or the session key
        return f"BenchConfig(target={self.target!r}, dialect={self.dialect!r}, ...)"


def parse_target(url: str, default_path: str) -> Target:
    """``ws://host:port[/path]`` → :class:`Target`; the host must be loopback."""
    parts = urlsplit(url)
    if parts.scheme != "ws":
        raise BenchConfigError(f"url: only ws:// is supported, got {url!r}")
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise BenchConfigError(f"url: bad port in {url!r}") from exc
    check_loopback(host)
    path = parts.path or ""
    if parts.query:
        path += "?" + parts.query
    return Target(host, port, path if path not in ("", "/") else default_path)


def check_loopback(host: str) -> None:
    """Refuse any host that is not on this machine's loopback."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise BenchConfigError(f"url: cannot resolve host {host!r}: {exc}") from exc
    for info in infos:
        if not ipaddress.ip_address(info[4][0]).is_loopback:
            raise BenchConfigError(f"url: host {host!r} is not loopback; load stays local")


_PLACEHOLDER = re.compile(r"\{(conn|mod:\d+|zipf:\d+)\}")


def channels_for(patterns: tuple[str, ...], index: int, seed: int) -> list[str]:
    """The channels connection ``index`` subscribes to.

    Placeholders: ``{conn}`` the connection's index (a channel of its own),
    ``{mod:N}`` index mod N (spread evenly), ``{zipf:N}`` one of N picked with weight
    1/(k+1) (popular markets get most subscribers); deterministic for a given seed.
    """
    rng: random.Random | None = None
    out = []
    for pattern in patterns:

        def sub(m: re.Match[str]) -> str:
            nonlocal rng
            what = m.group(1)
            if what == "conn":
                return str(index)
            kind, n = what.split(":")
            count = int(n)
            if kind == "mod":
                return str(index % count)
            if rng is None:
                rng = random.Random(seed * 1_000_003 + index)
            weights = [1.0 / (k + 1) for k in range(count)]
            return str(rng.choices(range(count), weights)[0])

        out.append(_PLACEHOLDER.sub(sub, pattern))
    return out

"""The one configuration schema, read in one place.

Precedence: command-line flags > environment (``TICKWIRE_<FIELD>``, plus the Peatio
seed's ``WEBSOCKET_HOST``/``WEBSOCKET_PORT``) > a TOML config file (``--config`` or
``TICKWIRE_CONFIG``) > the defaults below. ``docs/config.md`` lists every field.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec


class ConfigError(ValueError):
    """A config value that does not fit the schema; the message names the field."""


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Every setting of a tickwire node. Field docs are the reference (docs/config.md)."""

    #: Address to listen on.
    host: str = "0.0.0.0"
    #: Port to listen on.
    port: int = 8080
    #: ``memory`` (embedded, one process) or a ``redis://`` URL (many nodes).
    engine: str = "memory"
    #: Publications of history kept per channel.
    history_size: int = 1000
    #: Seconds of history kept per channel.
    history_ttl: float = 300.0
    #: Largest gap (in publications) a resubscribe recovers from history.
    max_recover: int = 10_000
    #: Bytes queued for one client (ours plus the socket's) before it is cut as slow.
    max_queue_bytes: int = 1_048_576
    #: Largest inbound frame answered with an error (bytes); larger ones are refused.
    max_frame_bytes: int = 65_536
    #: Inbound frames over this size close the connection (1009).
    max_frame_hard_bytes: int = 1_048_576
    #: Channels one connection may hold.
    max_channels: int = 1000
    #: Requests per second one connection may send (burst: twice this).
    max_requests_per_second: float = 100.0
    #: Seconds between server heartbeats on native connections.
    heartbeat_interval: float = 15.0
    #: Seconds a closing connection may take to flush before it is aborted.
    drain_timeout: float = 5.0
    #: Markets served (trades, book, ticker, candles channels).
    markets: list[str] = msgspec.field(default_factory=lambda: ["BTC-USD", "ETH-USD", "SOL-USD"])
    #: Equity tickers served (sentiment channels).
    tickers: list[str] = msgspec.field(
        default_factory=lambda: ["AAPL", "TSLA", "MSFT", "NVDA", "AMZN"]
    )
    #: Run the simulated demo market.
    demo: bool = False
    #: Seed of the demo market (deterministic when set).
    seed: int | None = None
    #: Speed factor of the demo market's event rates.
    demo_rate: float = 1.0
    #: Log level.
    log_level: str = "info"

    def __post_init__(self) -> None:
        checks = [
            ("port", 0 <= self.port <= 65535),
            ("history_size", self.history_size >= 1),
            ("history_ttl", self.history_ttl > 0),
            ("max_recover", self.max_recover >= 0),
            ("max_queue_bytes", self.max_queue_bytes >= 4096),
            ("max_frame_bytes", self.max_frame_bytes >= 256),
            ("max_frame_hard_bytes", self.max_frame_hard_bytes >= self.max_frame_bytes),
            ("max_channels", self.max_channels >= 1),
            ("max_requests_per_second", self.max_requests_per_second > 0),
            ("heartbeat_interval", self.heartbeat_interval > 0),
            ("drain_timeout", self.drain_timeout >= 0),
            ("demo_rate", self.demo_rate > 0),
        ]
        for name, ok in checks:
            if not ok:
                raise ConfigError(f"config field {name!r} is out of range: {getattr(self, name)!r}")


FIELDS: tuple[str, ...] = Config.__struct_fields__
ENV_PREFIX = "TICKWIRE_"
#: Environment names kept from the Peatio seed.
ENV_ALIASES: dict[str, str] = {"WEBSOCKET_HOST": "host", "WEBSOCKET_PORT": "port"}


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for alias, field in ENV_ALIASES.items():
        if alias in env:
            out[field] = env[alias]
    for field in FIELDS:
        key = ENV_PREFIX + field.upper()
        if key in env:
            out[field] = env[key]
    for field in ("markets", "tickers"):
        if isinstance(out.get(field), str):
            out[field] = [s.strip() for s in out[field].split(",") if s.strip()]
    return out


def load_config(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    file: str | Path | None = None,
) -> Config:
    """Merge flags > env > file > defaults into a validated :class:`Config`."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    path = file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {str(path)!r}: {exc}") from None
        merged.update(data.get("tickwire", data))
    merged.update(_from_env(env))
    merged.update({k: v for k, v in (flags or {}).items() if v is not None})
    try:
        return msgspec.convert(merged, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid config: {exc}") from None
    except ConfigError:
        raise

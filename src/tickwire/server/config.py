"""The one configuration schema, read in one place.

Precedence: command-line flags > environment (``TICKWIRE_<FIELD>``, plus the Peatio
seed's ``WEBSOCKET_HOST``/``WEBSOCKET_PORT`` and Peatio's ``RABBITMQ_*``) > a TOML config
file (``--config`` or ``TICKWIRE_CONFIG``) > the defaults below. ``docs/config.md`` lists
every field.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from tickwire.auth.settings import AuthSettings
from tickwire.model.markets import MarketConfig, MarketError, build_registry
from tickwire.model.sentiment import SentimentSettings


class ConfigError(ValueError):
    """A config value that does not fit the schema. Every message has one style:
    ``config field 'NAME' (SOURCE): expected WHAT, got VALUE`` — the field, where its value
    came from (a flag, an environment variable or the file) when known, what it must be."""


def field_error(name: str, expected: str, got: object) -> ConfigError:
    """``config field 'name': expected <expected>, got <got>`` (the value hidden for secrets)."""
    shown = "***" if _secret(name) else repr(got)
    return ConfigError(f"config field {name!r}: expected {expected}, got {shown}")


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Every setting of a tickwire node. Field docs are the reference (docs/config.md)."""

    #: Address to listen on.
    host: str = "0.0.0.0"
    #: Port to listen on.
    port: int = 8080
    #: ``memory`` (embedded, one process), a ``redis://`` URL (many nodes), or several
    #: Redis URLs separated by spaces, or a TOML list of them: a sharded engine.
    engine: str = "memory"
    #: Worker processes ``tickwire serve`` runs on the same port (``SO_REUSEPORT``),
    #: sharing channels through the engine (docs/scaling.md, Workers). 0: one per CPU
    #: this process may run on when the engine spans processes (Redis), else 1. More
    #: than 1 needs such an engine: the memory engine is one process.
    workers: int = 1
    #: Publications of history kept per channel.
    history_size: int = 1000
    #: Seconds of history kept per channel.
    history_ttl: float = 300.0
    #: Largest gap (in publications) a resubscribe recovers from history.
    max_recover: int = 10_000
    #: Bytes held for one client (queued in the hub plus unsent in its transport's
    #: buffer) before it is cut as slow (close 3008). The kernel's socket buffers hold
    #: more besides: see ``send_buffer_bytes``.
    max_queue_bytes: int = 1_048_576
    #: Seconds the hub may hold its writes when writing saturates the process, so that
    #: each write carries more frames (adaptive: an idle node adds nothing); 0: never.
    max_write_delay: float = 0.005
    #: ``SO_SNDBUF`` of every accepted connection (bytes; Linux doubles it for its own
    #: bookkeeping). 0: the kernel's autotuning, which grows a socket's send buffer up to
    #: ``net.ipv4.tcp_wmem``'s maximum (4 MiB by default), held for a client that does not
    #: read on top of ``max_queue_bytes``. Set it to bound that memory too (docs/protocol.md).
    send_buffer_bytes: int = 0
    #: Largest inbound frame answered with an error (bytes); larger ones are refused.
    max_frame_bytes: int = 65_536
    #: Inbound frames over this size close the connection (1009).
    max_frame_hard_bytes: int = 1_048_576
    #: Channels one connection may hold.
    max_channels: int = 1000
    #: Requests per second one connection may send (burst: twice this).
    max_requests_per_second: float = 100.0
    #: Paths the native protocol is served on.
    native_paths: list[str] = msgspec.field(default_factory=lambda: ["/ws"])
    #: Paths the Coinbase Advanced Trade feed is served on (docs/dialects.md).
    coinbase_paths: list[str] = msgspec.field(default_factory=lambda: ["/ws/coinbase"])
    #: Accept permessage-deflate on the Coinbase feed when the client offers it (the
    #: official SDK does); frames are still compressed once per publication.
    coinbase_compression: bool = True
    #: Most product ids in one Coinbase subscribe or unsubscribe message.
    coinbase_max_product_ids: int = 100
    #: Seconds between server heartbeats on native connections.
    heartbeat_interval: float = 15.0
    #: Paths Socket.IO (the Market Prophit dialect, Engine.IO 3 and 4) is served on.
    prophit_paths: list[str] = msgspec.field(default_factory=lambda: ["/socket.io/"])
    #: How results are pushed: ``data`` (v1), ``res`` (v2) or ``both``.
    prophit_events: str = "both"
    #: Seconds a dropped Socket.IO session is kept for connection-state recovery
    #: (socket.io-client >= 4.6); 0: no recovery, and events carry no offset.
    prophit_recovery: float = 120.0
    #: Seconds between Engine.IO pings.
    prophit_ping_interval: float = 25.0
    #: Seconds an Engine.IO ping may go unanswered before the session is closed.
    prophit_ping_timeout: float = 20.0
    #: Largest Engine.IO polling body or WebSocket message accepted (bytes).
    prophit_max_payload: int = 100_000
    #: Seconds a Socket.IO session has to connect its namespace before it is closed.
    prophit_connect_timeout: float = 45.0
    #: Offer permessage-deflate to clients that ask. Off by default: compressing costs CPU
    #: (once per publication and window size, shared by every client that negotiated it).
    compression: bool = False
    #: Seconds a closing connection may take to flush before it is aborted.
    drain_timeout: float = 5.0
    #: Seconds a client has, from connecting, to send its request headers (the WebSocket
    #: handshake included); slower connections are closed. Also the longest idle time of a
    #: keep-alive HTTP connection between requests (docs/security.md).
    header_timeout: float = 10.0
    #: Seconds a client has to send the body of ``POST /login`` or ``/api/v1/publish``.
    body_timeout: float = 30.0
    #: Open connections (HTTP and WebSocket) accepted from one client address; further
    #: ones are closed at once. 0: no cap. Behind a proxy every client has its address.
    max_connections_per_address: int = 256
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
    #: Benchmark publisher spec, e.g. ``channel=trades:BENCH,rate=1000,batch=10,size=150``
    #: (docs/benchmarks.md); its channels' symbols are served too.
    synthetic: str | None = None

    # --- authentication (docs/auth.md) ---
    #: The auth layer's settings (:class:`tickwire.auth.AuthSettings`, documented there and
    #: in docs/config.md), given by their own names: flat (``auth_secret = …``,
    #: ``TICKWIRE_AUTH_SECRET``, ``--auth-secret``) or in a TOML ``[auth]`` table.
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)

    # --- the InstaMrkt opcode dialect (docs/dialects.md) ---
    #: Paths the opcode dialect is served on.
    opcode_paths: list[str] = msgspec.field(default_factory=lambda: ["/ws/opcode"])
    #: Also serve the opcode dialect at ``/`` of this port, as the seed's
    #: ``wss://host:9999?id=…`` does (0: any free port, printed at start); unset: no port.
    opcode_port: int | None = None
    #: Seconds after a user's last logged-on connection closed during which a new
    #: connection of theirs is logged on automatically (the seed's 15 minutes).
    opcode_relogon_window: float = 900.0
    #: Users who logged off remembered for that at most (the oldest is forgotten first).
    opcode_relogon_max_users: int = 100_000

    # --- market data and ingest (docs/market-data.md) ---
    #: Definitions (id, base, quote, price_increment, size_increment, aliases) of markets
    #: beyond the built-in BTC-USD, ETH-USD and SOL-USD; TOML ``[[market_specs]]`` tables.
    market_specs: list[MarketConfig] = msgspec.field(default_factory=list)
    #: A bearer token ``POST /api/v1/publish`` accepts besides key-store ``publisher`` keys
    #: (those work whether or not this is set; unset: only they do).
    publish_token: str | None = None
    #: Most events in one ``POST /api/v1/publish`` batch.
    publish_max_events: int = 1000
    #: Largest ``POST /api/v1/publish`` body in bytes.
    publish_max_bytes: int = 1_048_576
    #: Most price levels a book holds per side (deeper updates are refused).
    book_max_levels: int = 10_000
    #: Levels per side in the book snapshot new subscribers start from.
    book_snapshot_depth: int = 1000
    #: Book publications between stored snapshots (at most ``history_size - 1`` apply).
    book_snapshot_every: int = 100
    #: ...or fewer, once the updates since the last snapshot add up to these bytes.
    book_snapshot_bytes: int = 65_536
    #: Sentiment window lengths by name (``crowd_ma_window = 15``, ...; TOML only).
    sentiment_windows: dict[str, int] = msgspec.field(default_factory=dict)

    # --- the ranger dialect (Peatio; docs/dialects.md) ---
    #: Paths the ranger dialect's public endpoint is served on (each also without its
    #: trailing slash).
    ranger_public_paths: list[str] = msgspec.field(
        default_factory=lambda: ["/api/v2/ranger/public/"]
    )
    #: Paths of the ranger private endpoint: the upgrade needs ``Authorization: Bearer``.
    ranger_private_paths: list[str] = msgspec.field(
        default_factory=lambda: ["/api/v2/ranger/private/"]
    )
    #: Send the Peatio seed's ``{"challenge": …}`` frame when a ranger client connects.
    ranger_challenge: bool = True
    #: ``sub`` a ranger client's identity-provider token must carry (empty: any).
    ranger_jwt_subject: str = "session"
    #: A ranger client's token must carry a ``jti``.
    ranger_require_jti: bool = True
    #: rango's role-gated streams: ``<prefix>=<role>,<role>;<prefix>=…``. A token whose
    #: ``role`` is listed for a prefix may read ``<prefix>.<stream>.<event>`` (channel
    #: ``scoped:<prefix>:<stream>.<event>``), which RabbitMQ routing keys
    #: ``<prefix>.<stream>.<event>`` feed. Also from rango's ``RANGO_RBAC_<PREFIX>=<roles>``.
    ranger_rbac: str = ""

    # --- RabbitMQ ingest (Peatio's peatio.events.ranger exchange; docs/ingest.md) ---
    #: AMQP URL to consume Peatio's events from (``amqp://user:pass@host:5672/vhost``);
    #: unset, the ingest runs only when ``rabbitmq_host`` is set.
    amqp: str | None = None
    #: RabbitMQ host (Peatio's ``RABBITMQ_HOST``); used when ``amqp`` is unset.
    rabbitmq_host: str | None = None
    #: RabbitMQ port (``RABBITMQ_PORT``).
    rabbitmq_port: int = 5672
    #: RabbitMQ user (``RABBITMQ_USER``).
    rabbitmq_user: str = "guest"
    #: RabbitMQ password (``RABBITMQ_PASSWORD``).
    rabbitmq_password: str = "guest"
    #: RabbitMQ virtual host (``RABBITMQ_VHOST``).
    rabbitmq_vhost: str = "/"
    #: Name of this node's queue on the exchange (unset: ``tickwire.ranger.<random>`` per
    #: process). It survives reconnects, so events published meanwhile are not lost.
    amqp_queue: str | None = None
    #: Seconds the broker keeps the queue after this node disconnected (``x-expires``).
    amqp_queue_ttl: float = 300.0
    #: Most messages the queue holds while this node is away (``x-max-length``).
    amqp_queue_max: int = 100_000
    #: Unacknowledged messages in flight to this node (prefetch).
    amqp_prefetch: int = 256

    def __repr__(self) -> str:
        """Like the default, with secrets and private keys shown as ``'***'``."""
        shown = ", ".join(
            f"{f}={'***' if _secret(f) and getattr(self, f) else repr(getattr(self, f))}"
            for f in self.__struct_fields__
        )
        return f"Config({shown})"

    def value(self, name: str) -> Any:
        """The setting of that (flat) name: a field of this class or of ``auth``."""
        return getattr(self.auth if name in AUTH_FIELDS else self, name)

    def __post_init__(self) -> None:
        positive, non_negative = "a number > 0", "a number >= 0"
        paths = "a non-empty list of distinct paths, each starting with '/'"
        checks: list[tuple[str, bool, str]] = [
            ("port", 0 <= self.port <= 65535, "an integer from 0 to 65535"),
            ("workers", self.workers >= 0, "an integer >= 0 (0: one per CPU)"),
            (
                "workers",
                self.workers <= 1 or spans_processes(self.engine),
                "0 or 1 with the memory engine, which is one process (a redis:// engine "
                "shares channels between workers)",
            ),
            ("history_size", self.history_size >= 1, "an integer >= 1"),
            ("history_ttl", self.history_ttl > 0, positive),
            ("max_recover", self.max_recover >= 0, "an integer >= 0"),
            ("max_queue_bytes", self.max_queue_bytes >= 4096, "an integer >= 4096"),
            (
                "max_write_delay",
                0 <= self.max_write_delay <= 1,
                "a number of seconds from 0 to 1",
            ),
            (
                "send_buffer_bytes",
                self.send_buffer_bytes == 0 or self.send_buffer_bytes >= 4096,
                "0 (the kernel's) or an integer >= 4096",
            ),
            ("max_frame_bytes", self.max_frame_bytes >= 256, "an integer >= 256"),
            (
                "max_frame_hard_bytes",
                self.max_frame_hard_bytes >= self.max_frame_bytes,
                f"an integer >= max_frame_bytes ({self.max_frame_bytes})",
            ),
            ("max_channels", self.max_channels >= 1, "an integer >= 1"),
            ("max_requests_per_second", self.max_requests_per_second > 0, positive),
            ("native_paths", _paths_ok(self.native_paths), paths),
            ("opcode_paths", _paths_ok(self.opcode_paths), paths),
            (
                "opcode_port",
                self.opcode_port is None or 0 <= self.opcode_port <= 65535,
                "an integer from 0 to 65535, or unset",
            ),
            ("opcode_relogon_window", self.opcode_relogon_window >= 0, non_negative),
            ("opcode_relogon_max_users", self.opcode_relogon_max_users >= 0, "an integer >= 0"),
            ("coinbase_paths", _paths_ok(self.coinbase_paths), paths),
            ("coinbase_max_product_ids", self.coinbase_max_product_ids >= 1, "an integer >= 1"),
            ("heartbeat_interval", self.heartbeat_interval > 0, positive),
            ("prophit_paths", _paths_ok(self.prophit_paths), paths),
            (
                "prophit_events",
                self.prophit_events in ("data", "res", "both"),
                "one of 'data', 'res', 'both'",
            ),
            ("prophit_recovery", self.prophit_recovery >= 0, non_negative),
            ("prophit_ping_interval", self.prophit_ping_interval > 0, positive),
            ("prophit_ping_timeout", self.prophit_ping_timeout > 0, positive),
            ("prophit_max_payload", self.prophit_max_payload >= 1024, "an integer >= 1024"),
            ("prophit_connect_timeout", self.prophit_connect_timeout > 0, positive),
            ("drain_timeout", self.drain_timeout >= 0, non_negative),
            ("header_timeout", self.header_timeout > 0, positive),
            ("body_timeout", self.body_timeout > 0, positive),
            (
                "max_connections_per_address",
                self.max_connections_per_address >= 0,
                "an integer >= 0",
            ),
            ("demo_rate", self.demo_rate > 0, positive),
            ("token_ttl", self.auth.token_ttl > 0, positive),
            ("auth_leeway", self.auth.auth_leeway >= 0, non_negative),
            ("coinbase_max_lifetime", self.auth.coinbase_max_lifetime > 0, positive),
            ("session_ttl", self.auth.session_ttl > 0, positive),
            ("digest_nonce_window", self.auth.digest_nonce_window > 0, positive),
            ("nonce_cache_size", self.auth.nonce_cache_size >= 1, "an integer >= 1"),
            ("nonce_cache_per_key", self.auth.nonce_cache_per_key >= 1, "an integer >= 1"),
            ("auth_rate_burst", self.auth.auth_rate_burst >= 1, "an integer >= 1"),
            ("auth_rate_per_minute", self.auth.auth_rate_per_minute > 0, positive),
            ("token_expiry_grace", self.auth.token_expiry_grace >= 0, non_negative),
            ("publish_max_events", self.publish_max_events >= 1, "an integer >= 1"),
            ("publish_max_bytes", self.publish_max_bytes >= 1024, "an integer >= 1024"),
            ("book_max_levels", self.book_max_levels >= 1, "an integer >= 1"),
            ("book_snapshot_depth", self.book_snapshot_depth >= 10, "an integer >= 10"),
            ("ranger_public_paths", _paths_ok(self.ranger_public_paths), paths),
            ("ranger_private_paths", _paths_ok(self.ranger_private_paths), paths),
            ("rabbitmq_port", 0 < self.rabbitmq_port <= 65535, "an integer from 1 to 65535"),
            ("amqp_queue_ttl", self.amqp_queue_ttl >= 1, "a number >= 1"),
            ("amqp_queue_max", self.amqp_queue_max >= 1, "an integer >= 1"),
            ("amqp_prefetch", 1 <= self.amqp_prefetch <= 65535, "an integer from 1 to 65535"),
            ("book_snapshot_every", self.book_snapshot_every >= 1, "an integer >= 1"),
            ("book_snapshot_bytes", self.book_snapshot_bytes >= 1, "an integer >= 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise field_error(name, expected, self.value(name))
        try:
            parse_rbac(self.ranger_rbac)
        except ValueError as exc:
            raise field_error("ranger_rbac", str(exc), self.ranger_rbac) from None
        try:
            build_registry(self.markets, self.tickers, self.market_specs)
        except MarketError as exc:
            raise ConfigError(f"config field 'markets': {exc.message}") from None
        windows = SentimentSettings.__slots__
        for window in self.sentiment_windows:
            if window not in windows:
                raise field_error("sentiment_windows", f"names among {', '.join(windows)}", window)
        try:
            SentimentSettings(**self.sentiment_windows)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config field 'sentiment_windows': {exc}") from None
        if self.amqp is not None and not self.amqp.startswith(("amqp://", "amqps://")):
            raise ConfigError("config field 'amqp': expected an amqp:// or amqps:// URL")
        if self.synthetic:
            from tickwire.ingest.synthetic import SyntheticSpecError, parse_synthetic

            try:
                parse_synthetic(self.synthetic)
            except SyntheticSpecError as exc:
                detail = str(exc).removeprefix("synthetic: ")
                raise ConfigError(f"config field 'synthetic': {detail}") from None


#: The auth layer's settings, each also a flat name of the schema (``auth_secret``, …).
AUTH_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(AuthSettings))
#: Every setting's flat name: a flag, ``TICKWIRE_<NAME>``, a top-level key of the file.
FIELDS: tuple[str, ...] = (
    *(f for f in Config.__struct_fields__ if f != "auth"),
    *AUTH_FIELDS,
)


def spans_processes(engine: str) -> bool:
    """Whether an engine URL names an engine several processes share (every engine but
    the embedded ``memory`` one)."""
    return engine != "memory"


def worker_count(config: Config) -> int:
    """How many worker processes ``tickwire serve`` runs for ``config``: ``workers``, or
    for 0 one per CPU this process may run on when the engine spans processes, else 1."""
    if config.workers:
        return config.workers
    if not spans_processes(config.engine):
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: Names the auth layer's messages start with, where they differ from the field's.
_SETTING_FIELDS = {"secret": "auth_secret", "bearer key": "bearer_public_key"}


def setting_error(text: str) -> ConfigError:
    """A lower layer's ``"name: problem"`` message about a setting, in the one style."""
    name, sep, rest = text.partition(": ")
    name = _SETTING_FIELDS.get(name, name)
    if sep and name in FIELDS:
        return ConfigError(f"config field {name!r}: {rest}")
    return ConfigError(f"config: {text}")


def _paths_ok(paths: list[str]) -> bool:
    """A dialect's paths: at least one, each absolute, none twice."""
    return bool(paths) and len(set(paths)) == len(paths) and all(p.startswith("/") for p in paths)


def _secret(field: str) -> bool:
    return (
        "secret" in field
        or "private_key" in field
        or "password" in field
        or field == "amqp"  # a URL that may hold a password
        or "token" == field[-5:]
    )


ENV_PREFIX = "TICKWIRE_"
#: rango's role-gated prefixes: ``RANGO_RBAC_ADMIN=admin,superadmin`` (``ranger_rbac``)
RANGO_RBAC = "RANGO_RBAC_"
#: Environment names kept from the Peatio seed.
ENV_ALIASES: dict[str, str] = {
    "WEBSOCKET_HOST": "host",
    "WEBSOCKET_PORT": "port",
    "RABBITMQ_HOST": "rabbitmq_host",
    "RABBITMQ_PORT": "rabbitmq_port",
    "RABBITMQ_USER": "rabbitmq_user",
    "RABBITMQ_PASSWORD": "rabbitmq_password",
    "RABBITMQ_VHOST": "rabbitmq_vhost",
}


#: Fields holding lists of strings: comma-separated in the environment.
LIST_FIELDS: tuple[str, ...] = (
    *(name for name, hint in typing.get_type_hints(Config).items() if hint == list[str]),
    *(
        name
        for name, hint in typing.get_type_hints(AuthSettings).items()
        if hint == tuple[str, ...]
    ),
)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for alias, field in ENV_ALIASES.items():
        if alias in env:
            out[field] = env[alias]
    for field in FIELDS:
        key = ENV_PREFIX + field.upper()
        if key in env:
            out[field] = env[key]
    rango = [
        f"{key[len(RANGO_RBAC) :].lower()}={value}"
        for key, value in sorted(env.items())
        if key.startswith(RANGO_RBAC) and len(key) > len(RANGO_RBAC)
    ]
    if rango and "ranger_rbac" not in out:
        out["ranger_rbac"] = ";".join(rango)
    for field in LIST_FIELDS:
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
    #: Where each top-level value came from, for the error messages.
    origin: dict[str, str] = {}
    path = file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {str(path)!r}: {exc}") from None
        table = dict(data.get("tickwire", data))
        nested = table.pop("auth", None)
        if nested is not None:  # an [auth] table: the auth settings by their names
            if not isinstance(nested, dict):
                raise field_error("auth", "a table", nested)
            unknown = sorted(set(nested) - set(AUTH_FIELDS))
            if unknown:
                raise ConfigError(
                    f"config field 'auth.{unknown[0]}' (file {str(path)!r}): unknown field "
                    "(docs/config.md lists them)"
                )
            table = {**nested, **table}  # a flat name in the same file wins
        merged.update(table)
        origin.update(dict.fromkeys(table, f"file {str(path)!r}"))
    from_env = _from_env(env)
    merged.update(from_env)
    origin.update({k: _env_name(k, env) for k in from_env})
    from_flags = {k: v for k, v in (flags or {}).items() if v is not None}
    merged.update(from_flags)
    origin.update({k: "--" + k.replace("_", "-") for k in from_flags})
    merged["auth"] = {name: merged.pop(name) for name in AUTH_FIELDS if name in merged}
    shards = merged.get("engine")
    if isinstance(shards, list) and all(isinstance(url, str) for url in shards):
        merged["engine"] = " ".join(shards)  # a TOML list of shard URLs
    try:
        return msgspec.convert(merged, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise _explain(str(exc), merged, origin) from None


def parse_rbac(text: str) -> dict[str, frozenset[str]]:
    """``ranger_rbac`` as roles by prefix; raises ValueError saying what is expected."""
    table: dict[str, set[str]] = {}
    for entry in text.split(";"):
        entry = entry.strip()
        if not entry:
            continue
        prefix, sep, roles = entry.partition("=")
        prefix = prefix.strip()
        names = {r.strip() for r in roles.split(",") if r.strip()}
        if not sep or not _RBAC_PREFIX.match(prefix) or not names:
            raise ValueError(
                "entries <prefix>=<role>[,<role>…] separated by ';' "
                "(a prefix is 1-32 lower-case letters, digits, '_' or '-')"
            )
        table.setdefault(prefix, set()).update(names)
    return {prefix: frozenset(roles) for prefix, roles in table.items()}


_RBAC_PREFIX = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def _env_name(field: str, env: Mapping[str, str]) -> str:
    key = ENV_PREFIX + field.upper()
    if key in env:
        return key
    if field == "ranger_rbac":
        return RANGO_RBAC + "*"
    return next((alias for alias, f in ENV_ALIASES.items() if f == field and alias in env), key)


#: msgspec's names of the types a field may have, in the words of the messages.
_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "array": "a list",
    "object": "a table",
    "null": "unset",
}
_WRONG_TYPE = re.compile(
    r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)` - at `\$(?P<at>[^`]*)`$"
)
_UNKNOWN = re.compile(
    r"^Object contains unknown field `(?P<name>[^`]+)`(?: - at `\$(?P<at>[^`]*)`)?$"
)
_MISSING = re.compile(
    r"^Object missing required field `(?P<name>[^`]+)`(?: - at `\$(?P<at>[^`]*)`)?$"
)
_FIELD = re.compile(r"^config field '(?P<name>[^']+)'")


def _explain(text: str, merged: Mapping[str, Any], origin: Mapping[str, str]) -> ConfigError:
    """msgspec's validation message (or our own from ``__post_init__``) in the one style."""
    if m := _WRONG_TYPE.match(text):
        name = m["at"].lstrip(".")
        values = merged
        if name.startswith("auth."):  # the auth settings are named flat, as they are given
            name, values = name.removeprefix("auth."), merged.get("auth", {})
        want = " or ".join(_TYPE_WORDS.get(t, t) for t in m["want"].split(" | "))
        if name in values:
            message = str(field_error(name, want, values[name]))
        else:  # inside a list or table: msgspec names the type it found, not the value
            got = _TYPE_WORDS.get(m["got"], m["got"])
            message = f"config field {name!r}: expected {want}, got {got}"
    elif m := _UNKNOWN.match(text):
        name = ".".join(p for p in ((m["at"] or "").lstrip("."), m["name"]) if p)
        message = f"config field {name!r}: unknown field"
        if "." not in name:
            message += " (docs/config.md lists them)"
    elif m := _MISSING.match(text):
        name = ".".join(p for p in ((m["at"] or "").lstrip("."), m["name"]) if p)
        message = f"config field {name!r}: expected a value, got none (it is required)"
    else:
        message = text.removesuffix(" - at `$`")
        if not _FIELD.match(message):
            message = f"config: {message}"
    if (m := _FIELD.match(message)) and (source := origin.get(m["name"].split("[")[0])):
        message = f"{m.group(0)} ({source}){message[m.end() :]}"
    return ConfigError(message)

"""Channel names: ``<kind>:<symbol>[:<arg>]`` and the private ``user:<uid>:<stream>``.

Examples: ``trades:BTC-USD``, ``book:BTC-USD``, ``ticker:BTC-USD``, ``candles:BTC-USD:1m``,
``ticker_batch:BTC-USD`` (the ticker at most every 5 s),
``sentiment:AAPL``, ``scoped:admin:btcusd.trades`` (a role-gated stream: readable only by
principals entitled to its prefix, rango's RBAC), ``user:42:orders``, ``user:42:trades``,
``user:42:open_orders`` (the order updates again, with the user's open orders as the
snapshot).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tickwire.model.errors import TickwireError

#: Public channel kinds and whether they take an argument.
PUBLIC_KINDS: dict[str, bool] = {
    "trades": False,
    "book": False,
    "ticker": False,
    "ticker_batch": False,
    "candles": True,
    "sentiment": False,
    "scoped": True,
}
#: Streams under ``user:<uid>:``.
PRIVATE_KINDS: frozenset[str] = frozenset({"orders", "trades", "open_orders"})
#: Private streams whose subscribers begin with a snapshot (of the user's open orders).
PRIVATE_STATE_KINDS: frozenset[str] = frozenset({"open_orders"})
#: Kinds whose subscribers begin with a snapshot of the current state.
STATE_KINDS: frozenset[str] = frozenset({"book", "ticker", "ticker_batch", "candles"})
#: Candle intervals and their length in seconds: Peatio's k-line periods (its ranger's
#: ``kline-<period>`` streams), which include Coinbase's 5-minute candles. A candle starts
#: at a multiple of its length since the UNIX epoch (UTC), as Peatio's k-lines do: days at
#: midnight UTC, weeks on Thursdays (the epoch's weekday), 3-day candles every third day.
CANDLE_INTERVALS: dict[str, int] = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "12h": 43200,
    "1d": 86400,
    "3d": 259200,
    "1w": 604800,
}

#: ``scoped:<prefix>:<stream>.<event>``: the prefix and the topic under it (rango's
#: ``<prefix>.<stream>.<event>``)
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}\.[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MAX_CHANNEL_LENGTH = 128


class ChannelError(TickwireError, ValueError):
    """A channel name that does not parse; ``code`` is stable, the message names the channel."""


@dataclass(frozen=True, slots=True)
class Channel:
    """A parsed channel name."""

    name: str
    kind: str
    symbol: str
    arg: str | None = None
    user_id: str | None = None

    @property
    def private(self) -> bool:
        """True for ``user:<uid>:*`` channels, readable only by their owner."""
        return self.user_id is not None

    @property
    def stateful(self) -> bool:
        """True when new subscribers start from a snapshot."""
        if self.user_id is None:
            return self.kind in STATE_KINDS
        return self.kind in PRIVATE_STATE_KINDS


def parse_channel(name: object) -> Channel:
    """Parse and validate a channel name; raises :class:`ChannelError` naming what is wrong."""
    if not isinstance(name, str):
        raise ChannelError("bad_channel", f"channel must be a string, got {type(name).__name__}")
    if not name or len(name) > MAX_CHANNEL_LENGTH:
        raise ChannelError(
            "bad_channel", f"channel must be 1 to {MAX_CHANNEL_LENGTH} characters long"
        )
    parts = name.split(":")
    kind = parts[0]
    if kind == "user":
        if len(parts) != 3:
            raise ChannelError("bad_channel", f"channel {name!r}: expected user:<uid>:<stream>")
        _, uid, stream = parts
        if not _USER_ID.match(uid):
            raise ChannelError("bad_channel", f"channel {name!r}: malformed user id")
        if stream not in PRIVATE_KINDS:
            raise ChannelError(
                "unknown_channel",
                f"channel {name!r}: unknown user stream {stream!r} "
                f"(expected one of {', '.join(sorted(PRIVATE_KINDS))})",
            )
        return Channel(name=name, kind=stream, symbol=uid, user_id=uid)
    if kind not in PUBLIC_KINDS:
        raise ChannelError(
            "unknown_channel",
            f"channel {name!r}: unknown kind {kind!r} "
            f"(expected one of {', '.join([*PUBLIC_KINDS, 'user'])})",
        )
    takes_arg = PUBLIC_KINDS[kind]
    expected = 3 if takes_arg else 2
    if len(parts) != expected:
        shape = f"{kind}:<symbol>:<interval>" if takes_arg else f"{kind}:<symbol>"
        if kind == "scoped":
            shape = "scoped:<prefix>:<stream>.<event>"
        raise ChannelError("bad_channel", f"channel {name!r}: expected {shape}")
    symbol = parts[1]
    if not _SYMBOL.match(symbol):
        raise ChannelError("bad_channel", f"channel {name!r}: malformed symbol {symbol!r}")
    arg = parts[2] if takes_arg else None
    if kind == "scoped" and not (_PREFIX.match(symbol) and _TOPIC.match(arg or "")):
        raise ChannelError(
            "bad_channel",
            f"channel {name!r}: expected scoped:<prefix>:<stream>.<event> "
            "(a lower-case prefix, one dot in the topic)",
        )
    if kind == "candles" and arg not in CANDLE_INTERVALS:
        raise ChannelError(
            "unknown_channel",
            f"channel {name!r}: unknown interval {arg!r} "
            f"(expected one of {', '.join(CANDLE_INTERVALS)})",
        )
    return Channel(name=name, kind=kind, symbol=symbol, arg=arg)

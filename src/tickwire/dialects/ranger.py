"""The Peatio ranger protocol (Ruby ranger, rango) on the shared connection core.

Sans-I/O. A client connects to ``/api/v2/ranger/public/`` or ``/private/`` with
``?stream=`` (repeated, or comma separated) and may send
``{"event":"subscribe"|"unsubscribe","streams":[…]}``; every message it receives is one
JSON object ``{"<topic>": payload}``. Streams map onto tickwire's core channels, so a
ranger client and a native client of the same book see the same seq:

=========================  ====================================  =============================
ranger stream              core channel(s)                       frames
=========================  ====================================  =============================
``<m>.trades``             ``trades:<M>``                        ``{"<m>.trades":{"trades":[…]}}``
``<m>.ob-inc``             ``book:<M>``                          ``<m>.ob-snap`` then ``<m>.ob-inc``
``<m>.kline-<period>``     ``candles:<M>:<period>``              ``[ts,o,h,l,c,v]``
``global.tickers``         ``ticker:<M>`` of every market        every market's ticker
``order`` / ``trade``      ``user:<uid>:orders`` / ``:trades``   the authenticated user's only
=========================  ====================================  =============================

``sequence`` of ``ob-snap``/``ob-inc`` is the ``book:<M>`` channel's seq. A book
publication changes any number of levels: a side with one changed level is sent as
Peatio's ``["price","amount"]``, several as ``[["price","amount"],…]`` (the openware front
end reads both); either way one frame per publication, so ``sequence`` rises by 1 per
frame. When the core resets a book stream (history lost), the client first gets an
``ob-inc`` with ``sequence`` 0 — never the successor of any sequence it holds, so a
client that checks sequences resubscribes — then a new ``ob-snap``. docs/dialects.md has
the details and every difference from the seed, the Ruby ranger and rango.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

import msgspec

from tickwire.dialects.base import (
    Authenticate,
    Authenticated,
    Bearer,
    Command,
    Credential,
    Dialect,
    Event,
    Expiring,
    Handshake,
    Reply,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
)
from tickwire.dialects.errors import ProtocolError
from tickwire.model.channels import CANDLE_INTERVALS, Channel, parse_channel
from tickwire.model.markets import MarketRegistry
from tickwire.model.payloads import (
    BookData,
    CandleData,
    OrderData,
    TickerData,
    TradeData,
    UserTradeData,
)
from tickwire.model.publication import Position, Publication, Snapshot

#: Kline periods of the Peatio ecosystem (peatio, rango, the openware front end).
PEATIO_PERIODS = ("1m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "3d", "1w")
#: The periods served: those tickwire aggregates candles for.
PERIODS = tuple(p for p in PEATIO_PERIODS if p in CANDLE_INTERVALS)

#: The seed's challenge-flow answers, exactly.
AUTHENTICATED = "Authenticated."
AUTHENTICATION_FAILED = "Authentication failed."
TOKEN_TYPE_INVALID = "Token type is not provided or invalid."
HANDLING_ERROR = "Error while handling message."

MAX_STREAMS = 1000
MAX_STREAM_LENGTH = 64
MAX_TOKEN_LENGTH = 8192

#: Request ids of the core commands this dialect issues itself.
_JWT = "ranger:jwt"  # the seed's {"jwt": "Bearer …"} message
_AUTO = "ranger:auto"  # the authenticated user's order and trade streams

_encode = msgspec.json.Encoder().encode
_decode_trade = msgspec.json.Decoder(TradeData).decode
_decode_book = msgspec.json.Decoder(BookData).decode
_decode_ticker = msgspec.json.Decoder(TickerData).decode
_decode_candle = msgspec.json.Decoder(CandleData).decode
_decode_order = msgspec.json.Decoder(OrderData).decode
_decode_user_trade = msgspec.json.Decoder(UserTradeData).decode
_DECIMAL = re.compile(rb"^-?[0-9]{1,40}(\.[0-9]{1,40})?$")
_STREAM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

#: Peatio order states by tickwire order state.
ORDER_STATES = {
    "pending": "pending",
    "open": "wait",
    "filled": "done",
    "cancelled": "cancel",
    "expired": "cancel",
    "rejected": "reject",
}


def ranger_alias(market_id: str) -> str:
    """The ranger name of a market that has no registry alias (``BENCH-X`` → ``benchx``)."""
    return market_id.replace("-", "").lower()


# -- outbound: publications -------------------------------------------------------------


def _number(text: str) -> bytes:
    """A decimal string as the JSON number with exactly its digits (Peatio's kline)."""
    raw = text.encode()
    return raw if _DECIMAL.match(raw) else _encode(text)


def _levels(rows: Sequence[tuple[str, str]]) -> Any:
    """One level as Peatio's ``[p, a]``, several as ``[[p, a], …]``."""
    return list(rows[0]) if len(rows) == 1 else [list(r) for r in rows]


@dataclass(slots=True)
class _Ticker:
    ts: int
    body: bytes


class RangerFormat:
    """The hub's encoder for ranger connections of one server (one per mount: it knows the
    server's markets, and keeps the latest ticker of each for ``global.tickers``)."""

    name = "ranger"
    compressed = False

    def __init__(self, aliases: dict[str, str]) -> None:
        #: ranger name by market id
        self.aliases = aliases
        self._tickers: dict[str, _Ticker] = {}

    @property
    def base(self) -> RangerFormat:
        return self

    def alias(self, market_id: str) -> str:
        return self.aliases.get(market_id) or ranger_alias(market_id)

    def pub(self, pub: Publication) -> bytes:
        return self._render(pub.channel, pub.seq, pub.data, snapshot=False)

    def snapshot(self, snap: Snapshot) -> bytes:
        return self._render(snap.channel, snap.seq, snap.data, snapshot=True)

    def reset(self, channel: str, position: Position) -> bytes:
        ch = parse_channel(channel)
        if ch.kind == "book" and not ch.private:
            # 0 follows no sequence a client can hold (snapshots start at 1): a client
            # that checks sequences rebuilds; the new ob-snap follows
            return b'{"%s.ob-inc":{"sequence":0}}' % self.alias(ch.symbol).encode()
        stream = stream_of(ch, self.alias)
        return _encode({"error": f"stream {stream} restarted: events may have been missed"})

    def _render(self, channel: str, seq: int, data: bytes, *, snapshot: bool) -> bytes:
        try:
            ch = parse_channel(channel)
            return self._frame(ch, seq, data, snapshot)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            # data outside the channel contract (a raw publisher): as it is, under the topic
            try:
                topic = stream_of(parse_channel(channel), self.alias)
            except ValueError:
                topic = channel
            return b"{%s:%s}" % (_encode(topic), data)

    def _frame(self, ch: Channel, seq: int, data: bytes, snapshot: bool) -> bytes:
        if ch.private:
            if ch.kind == "orders":
                return b'{"order":%s}' % _encode(self._order(_decode_order(data)))
            t = _decode_user_trade(data)
            taker = t.side if t.liquidity == "taker" else ("sell" if t.side == "buy" else "buy")
            body = {
                "id": t.id,
                "price": t.price,
                "amount": t.size,
                "total": t.total,
                "market": self.alias(t.market),
                "side": t.side,
                "taker_type": taker,
                "order_id": _order_id(t.order_id),
                "created_at": t.ts // 1000,
            }
            return b'{"trade":%s}' % _encode(body)
        if ch.kind == "scoped":  # as published, under the topic without its prefix (rango)
            msgspec.json.decode(data)
            return b"{%s:%s}" % (_encode(ch.arg), data)
        alias = self.alias(ch.symbol)
        if ch.kind == "trades":
            tr = _decode_trade(data)
            trade = {
                "tid": tr.id,
                "taker_type": tr.side,
                "date": tr.ts // 1000,
                "price": tr.price,
                "amount": tr.size,
            }
            return b'{"%s.trades":%s}' % (alias.encode(), _encode({"trades": [trade]}))
        if ch.kind == "book":
            book = _decode_book(data)
            if snapshot:
                body = {
                    "asks": [list(r) for r in book.asks],
                    "bids": [list(r) for r in book.bids],
                    "sequence": seq,
                }
                return b'{"%s.ob-snap":%s}' % (alias.encode(), _encode(body))
            inc: dict[str, Any] = {}
            if book.asks:
                inc["asks"] = _levels(book.asks)
            if book.bids:
                inc["bids"] = _levels(book.bids)
            inc["sequence"] = seq
            return b'{"%s.ob-inc":%s}' % (alias.encode(), _encode(inc))
        if ch.kind == "candles":
            c = _decode_candle(data)
            values = b",".join(_number(v) for v in (c.open, c.high, c.low, c.close, c.volume))
            return b'{"%s.kline-%s":[%d,%s]}' % (
                alias.encode(),
                (ch.arg or "").encode(),
                c.start // 1000,
                values,
            )
        if ch.kind == "ticker":
            return self._tickers_frame(alias, _decode_ticker(data))
        raise ValueError(f"no ranger stream for {ch.name}")

    def _order(self, o: OrderData) -> dict[str, Any]:
        return {
            "id": _order_id(o.id),
            "market": self.alias(o.market),
            "kind": "bid" if o.side == "buy" else "ask",
            "side": o.side,
            "ord_type": o.type,
            "price": o.price,
            "avg_price": o.avg_price or "0.0",
            "state": ORDER_STATES.get(o.state, o.state),
            "origin_volume": o.size,
            "remaining_volume": o.remaining,
            "executed_volume": o.filled,
            "trades_count": o.trades_count,
            "at": o.created_at // 1000,
            "created_at": o.created_at // 1000,
            "updated_at": o.updated_at // 1000,
        }

    def _tickers_frame(self, alias: str, t: TickerData) -> bytes:
        """``global.tickers`` with every market's latest ticker (the openware front end
        replaces its whole ticker table with each frame)."""
        held = self._tickers.get(alias)
        if held is None or t.ts >= held.ts:
            self._tickers[alias] = _Ticker(t.ts, _encode(peatio_ticker(t)))
        parts = [b"%s:%s" % (_encode(a), tk.body) for a, tk in sorted(self._tickers.items())]
        return b'{"global.tickers":{%s}}' % b",".join(parts)


def _order_id(value: str) -> int | str:
    """Peatio ids are integers: a numeric id travels as one."""
    return int(value) if value.isdigit() and len(value) < 19 else value


def peatio_ticker(t: TickerData) -> dict[str, str | int]:
    """A tickwire ticker as Peatio's: every value a string, ``price_change_percent``
    ``"+x.xx%"``; as in Peatio's ticker, ``volume`` is the quote volume (sum of price *
    amount), ``amount`` the base volume, ``avg_price`` their ratio (VWAP)."""
    zero = "0.0"
    pct = t.change_pct_24h or "0.00"
    avg = zero
    if t.last is not None:
        base = Decimal(t.volume_24h)
        if base:
            places = len(t.last.partition(".")[2])
            avg = str((Decimal(t.quote_volume_24h) / base).quantize(Decimal(1).scaleb(-places)))
    return {
        "at": t.ts // 1000,
        "avg_price": avg,
        "high": t.high_24h or zero,
        "last": t.last or zero,
        "low": t.low_24h or zero,
        "open": t.open_24h or zero,
        "price_change_percent": (pct if pct.startswith("-") else "+" + pct) + "%",
        "volume": t.quote_volume_24h,
        "amount": t.volume_24h,
    }


def stream_of(ch: Channel, alias: Any) -> str:
    """The ranger stream name of a core channel (``book:BTC-USD`` → ``btcusd.ob-inc``)."""
    if ch.private:
        return "order" if ch.kind == "orders" else "trade"
    if ch.kind == "ticker":
        return "global.tickers"
    if ch.kind == "scoped":
        return f"{ch.symbol}.{ch.arg}"
    name = alias(ch.symbol)
    if ch.kind == "book":
        return f"{name}.ob-inc"
    if ch.kind == "candles":
        return f"{name}.kline-{ch.arg}"
    if ch.kind == "trades":
        return f"{name}.trades"
    return f"{name}.{ch.kind}"


# -- the dialect ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangerSettings:
    """The ranger dialect's settings (config fields ``ranger_*``)."""

    #: Paths whose connections need a valid ``Authorization: Bearer`` (rango's /private).
    private_paths: tuple[str, ...] = ("/api/v2/ranger/private",)
    #: Send the seed's challenge frame on connect.
    challenge: bool = True
    #: The ``sub`` identity-provider tokens must carry (Barong: ``session``); None: any.
    jwt_subject: str | None = "session"
    #: Tokens must carry a ``jti``.
    require_jti: bool = True
    #: Streams of the authenticated user subscribed on authentication (``order``, ``trade``).
    user_streams: tuple[str, ...] = field(default=("order", "trade"))
    #: rango's RBAC: the roles that may read ``<prefix>.<stream>.<event>``, by prefix.
    rbac: Mapping[str, frozenset[str]] = field(default_factory=dict)


class Ranger(Dialect):
    """Peatio's ranger protocol. Use :func:`ranger_dialect` to make the class for a server
    (it needs the server's markets)."""

    name = "ranger"
    fmt: ClassVar[RangerFormat] = RangerFormat({})
    settings: ClassVar[RangerSettings] = RangerSettings()
    #: market id by ranger name, and every market id
    by_alias: ClassVar[dict[str, str]] = {}
    market_ids: ClassVar[tuple[str, ...]] = ()

    def __init__(self, handshake: Handshake) -> None:
        super().__init__(handshake)
        self.user_id: str | None = None
        #: role-gated prefixes the principal may read (its token's role, ``rbac``)
        self.prefixes: frozenset[str] = frozenset()
        path = handshake.path.rstrip("/") or "/"
        self.private = path in self.settings.private_paths

    # -- credentials ------------------------------------------------------------------

    def credential(self) -> Credential | None:
        """``Authorization: Bearer <JWT>`` (any other scheme is refused as it stands)."""
        header = self.handshake.headers.get("authorization")
        if header is None:
            return None
        return Bearer(header.strip()[:MAX_TOKEN_LENGTH])

    def credential_required(self) -> bool:
        # /private needs one; anywhere, a credential that is presented must verify
        return self.private or "authorization" in self.handshake.headers

    def greeting(self) -> list[bytes]:
        if not self.settings.challenge:
            return []
        return [_encode({"challenge": secrets.token_urlsafe(30)})]

    def opening(self) -> list[Command]:
        streams: list[str] = []
        for value in self.handshake.query.get("stream", ()):
            streams.extend(s.strip() for s in value.split(",") if s.strip())
        if not streams:
            return []
        if len(streams) > MAX_STREAMS:
            return [Reply(_error(f"Too many streams: at most {MAX_STREAMS}"))]
        return self._streams_command(streams, subscribe=True)

    def after(self, event: Event) -> list[Command]:
        if not isinstance(event, Authenticated) or event.principal.user_id is None:
            return []
        return self._streams_command(list(self.settings.user_streams), subscribe=True, rid=_AUTO)

    # -- inbound ----------------------------------------------------------------------

    def parse(self, frame: str) -> list[Command]:
        if frame == "ping":
            return [Reply(b"pong")]
        try:
            msg = msgspec.json.decode(frame)
        except msgspec.DecodeError as exc:
            return [Reply(_error(f"Could not parse message: {exc}"))]
        if not isinstance(msg, dict):
            return [Reply(_error("Could not parse message: expected a JSON object"))]
        if "jwt" in msg and "event" not in msg:
            return self._jwt(msg["jwt"])
        event = msg.get("event")
        if event not in ("subscribe", "unsubscribe"):
            return [Reply(_error("Could not parse Type: Invalid event"))]
        streams = msg.get("streams")
        if streams is None or streams == []:
            return [Reply(_error("No streams provided"))]
        if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
            return [Reply(_error("Could not parse Streams: expected a list of strings"))]
        if len(streams) > MAX_STREAMS:
            return [Reply(_error(f"Too many streams: at most {MAX_STREAMS}"))]
        return self._streams_command(streams, subscribe=event == "subscribe")

    def _jwt(self, value: object) -> list[Command]:
        if not isinstance(value, str) or not value.startswith("Bearer "):
            return [Reply(_jwt_error(TOKEN_TYPE_INVALID))]
        token = value[7:].strip()
        if not 0 < len(token) <= MAX_TOKEN_LENGTH:
            return [Reply(_jwt_error(AUTHENTICATION_FAILED))]
        return [Authenticate(_JWT, Bearer(token))]

    def _streams_command(
        self, streams: Iterable[str], *, subscribe: bool, rid: str | None = None
    ) -> list[Command]:
        """The core command for the streams that resolve, and an error naming the rest."""
        channels: dict[str, Channel] = {}
        unknown: list[str] = []
        private: list[str] = []
        out: list[Command] = []
        for stream in dict.fromkeys(streams):
            prefix = stream.split(".", 1)[0]
            if subscribe and stream.count(".") == 2 and prefix in self.settings.rbac:
                if prefix not in self.prefixes:  # rango's answer, and the rest goes on
                    out.append(Reply(_success(f"cannot subscribe to {stream}")))
                    continue
            resolved = self.resolve(stream)
            if resolved is None:
                (private if stream in ("order", "trade") else unknown).append(stream)
                continue
            for ch in resolved:
                channels[ch.name] = ch
        if subscribe:
            if private and rid is None:
                out.append(Reply(_error(f"Authentication required for: {', '.join(private)}")))
            if unknown:
                out.append(Reply(_error(f"Unknown streams: {', '.join(unknown)[:200]}")))
        if channels:
            if subscribe:
                out.append(Subscribe(rid, [(ch, None) for ch in channels.values()]))
            else:
                out.append(Unsubscribe(rid, list(channels.values())))
        elif not subscribe:
            out.append(Unsubscribe(rid, []))
        return out

    def resolve(self, stream: str) -> list[Channel] | None:
        """The core channels of a ranger stream; None when it names nothing served."""
        if not 0 < len(stream) <= MAX_STREAM_LENGTH or not _STREAM.match(stream):
            return None
        parts = stream.split(".")
        if len(parts) == 1:  # private: the authenticated user's
            kind = {"order": "orders", "trade": "trades"}.get(stream)
            if kind is None or self.user_id is None:
                return None
            return [parse_channel(f"user:{self.user_id}:{kind}")]
        if len(parts) == 3:  # rango's role-gated <prefix>.<stream>.<event>
            if parts[0] not in self.settings.rbac:
                return None
            try:
                return [parse_channel(f"scoped:{parts[0]}:{parts[1]}.{parts[2]}")]
            except ValueError:
                return None
        if len(parts) != 2:
            return None
        name, event = parts
        if stream == "global.tickers":
            return [parse_channel(f"ticker:{m}") for m in self.market_ids]
        market = self.by_alias.get(name)
        if market is None:
            return None
        if event == "trades":
            return [parse_channel(f"trades:{market}")]
        if event == "ob-inc":
            return [parse_channel(f"book:{market}")]
        if event.startswith("kline-") and event[6:] in PERIODS:
            return [parse_channel(f"candles:{market}:{event[6:]}")]
        return None

    # -- outbound ---------------------------------------------------------------------

    def streams(self, current: Iterable[str]) -> list[str]:
        """The ranger names of the core channels ``current``."""
        return sorted({stream_of(parse_channel(c), self.fmt.alias) for c in current})

    def render(self, event: Event) -> bytes | None:
        if isinstance(event, Subscribed | Unsubscribed):
            if event.id == _AUTO:
                return None
            message = "subscribed" if isinstance(event, Subscribed) else "unsubscribed"
            return _encode(
                {"success": {"message": message, "streams": self.streams(event.current)}}
            )
        if isinstance(event, Authenticated):
            self.user_id = event.principal.user_id
            self.prefixes = event.principal.entitlements.prefixes
            if event.id == _JWT:
                return _encode({"success": {"message": AUTHENTICATED}})
            return None
        if isinstance(event, Expiring):
            return _error(
                f'Token expired: send {{"jwt":"Bearer <token>"}} within {event.grace:g} s '
                "or reconnect with a new one"
            )
        return None  # Pong: ranger answers text ping with Reply(pong)

    def render_error(self, error: ProtocolError) -> bytes:
        if error.request_id == _JWT:
            if error.code == "internal":
                return _jwt_error(HANDLING_ERROR)
            return _jwt_error(AUTHENTICATION_FAILED)
        return _error(error.message)


def _success(message: str) -> bytes:
    """rango's answer to a refused role-gated stream: a ``success`` with a message."""
    return _encode({"success": {"message": message}})


def _error(message: str) -> bytes:
    """rango's error shape: a flat string."""
    return _encode({"error": message})


def _jwt_error(message: str) -> bytes:
    """The Ruby ranger's challenge-flow error shape."""
    return _encode({"error": {"message": message}})


def ranger_dialect(
    markets: MarketRegistry,
    settings: RangerSettings | None = None,
    extra_markets: Iterable[str] = (),
) -> type[Ranger]:
    """The ranger dialect for a server serving ``markets`` (plus ``extra_markets``, named
    by :func:`ranger_alias`): a class of its own, with its own wire format."""
    aliases = {m.id: m.alias("ranger") for m in markets.markets}
    for market_id in extra_markets:
        if market_id not in aliases and ranger_alias(market_id) not in aliases.values():
            aliases[market_id] = ranger_alias(market_id)
    attrs: dict[str, Any] = {
        "fmt": RangerFormat(aliases),
        "settings": settings or RangerSettings(),
        "by_alias": {alias: market_id for market_id, alias in aliases.items()},
        "market_ids": tuple(aliases),
    }
    return type("Ranger", (Ranger,), attrs)

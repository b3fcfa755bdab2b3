"""The Coinbase Advanced Trade WebSocket feed (see docs/dialects.md, "Coinbase").

Clients send ``{"type": "subscribe"|"unsubscribe", "channel": …, "product_ids": […],
"jwt"?: …}``, one channel per message; the JWT (client-signed, ES256 or EdDSA) authorizes
that message only. Every data message is ``{"channel", "client_id", "timestamp",
"sequence_num", "events"}`` where ``sequence_num`` counts the messages of one connection
over all its channels: the hub encodes each publication once (a
:class:`~tickwire.hub.Numbered` payload) and each connection puts its own number in front.

Sans-I/O: :class:`Coinbase` parses frames into core commands and renders core events;
:class:`CoinbaseFormat` renders publications for the hub. No sockets here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec

from tickwire.dialects.base import (
    Command,
    Dialect,
    Event,
    Subscribe,
    Subscribed,
    Token,
    Unsubscribe,
    Unsubscribed,
)
from tickwire.dialects.errors import ProtocolError
from tickwire.hub import Numbered
from tickwire.model import boundedjson
from tickwire.model.channels import Channel, parse_channel
from tickwire.model.markets import Market, MarketRegistry
from tickwire.model.payloads import (
    BookData,
    CandleData,
    OpenOrdersData,
    OrderData,
    TickerData,
    TradeData,
)
from tickwire.model.publication import Position, Publication, Snapshot

#: Every channel of the feed, and the core channel kind each product rides on.
PRODUCT_KINDS: dict[str, str] = {
    "level2": "book",
    "market_trades": "trades",
    "ticker": "ticker",
    "ticker_batch": "ticker_batch",
    "candles": "candles",
}
LOCAL_CHANNELS = ("heartbeats", "status")
CHANNELS: tuple[str, ...] = (*LOCAL_CHANNELS, *PRODUCT_KINDS, "user")
#: Channels of the upstream that tickwire does not serve (no futures here).
UNSUPPORTED = ("futures_balance_summary",)
#: The upstream's candles are 5-minute buckets.
CANDLE_INTERVAL = "5m"
MAX_TOKEN_LENGTH = 8192
MAX_PRODUCT_ID_LENGTH = 64
#: Largest frame :meth:`Coinbase.parse` decodes (the core refuses larger ones first).
MAX_FRAME_BYTES = 1 << 20
#: What each connection puts before a message's shared rest.
SEQUENCE_TEMPLATE = b'{"sequence_num":%d,'

_encode = msgspec.json.Encoder().encode


# -- time formats ------------------------------------------------------------------------

_second_cache: list[Any] = [-1, ""]


def rfc3339(ns: int) -> str:
    """``2023-02-09T20:32:50.714964855Z``: UTC with nanoseconds."""
    sec, frac = divmod(ns, 1_000_000_000)
    cache = _second_cache
    if cache[0] != sec:
        cache[0] = sec
        cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{cache[1]}.{frac:09d}Z"


def rfc3339_ms(ms: int) -> str:
    return rfc3339(ms * 1_000_000)


_STARTED = time.monotonic()


def go_time(ns: int, monotonic: float) -> str:
    """Go's ``time.Time.String()`` as the upstream's heartbeats carry it:
    ``2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105``."""
    sec, frac = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
    return f"{stamp}.{frac:09d} +0000 UTC m=+{monotonic - _STARTED:.9f}"


# -- outbound: publications ---------------------------------------------------------------


class _Trade(msgspec.Struct):
    trade_id: str
    product_id: str
    price: str
    size: str
    side: str
    time: str


class _Level(msgspec.Struct):
    side: str
    event_time: str
    price_level: str
    new_quantity: str


class _Ticker(msgspec.Struct):
    type: str
    product_id: str
    price: str
    volume_24_h: str
    low_24_h: str
    high_24_h: str
    low_52_w: str
    high_52_w: str
    price_percent_chg_24_h: str
    best_bid: str
    best_bid_quantity: str
    best_ask: str
    best_ask_quantity: str


class _Candle(msgspec.Struct):
    start: str
    high: str
    low: str
    open: str
    close: str
    volume: str
    product_id: str


class _Order(msgspec.Struct):
    order_id: str
    client_order_id: str
    cumulative_quantity: str
    leaves_quantity: str
    avg_price: str
    total_fees: str
    status: str
    product_id: str
    creation_time: str
    order_side: str
    order_type: str
    limit_price: str
    number_of_fills: str
    product_type: str
    cancel_reason: str
    reject_reason: str
    time_in_force: str


#: Where a publication that is not of its channel's shape goes: (channel, event key).
PASS_THROUGH = {
    "trades": ("market_trades", "trades"),
    "book": ("l2_data", "updates"),
    "ticker": ("ticker", "tickers"),
    "ticker_batch": ("ticker_batch", "tickers"),
    "candles": ("candles", "candles"),
    "open_orders": ("user", "orders"),
}
_EMPTY_POSITIONS: dict[str, list[Any]] = {
    "perpetual_futures_positions": [],
    "expiring_futures_positions": [],
}
#: The maker's side of a trade whose taker side is given (the upstream reports the maker).
MAKER_SIDE = {"buy": "SELL", "sell": "BUY"}
ORDER_STATUS = {
    "pending": "PENDING",
    "open": "OPEN",
    "filled": "FILLED",
    "cancelled": "CANCELLED",
    "expired": "EXPIRED",
    "rejected": "FAILED",
}

_decode_trade = msgspec.json.Decoder(TradeData).decode
_decode_book = msgspec.json.Decoder(BookData).decode
_decode_ticker = msgspec.json.Decoder(TickerData).decode
_decode_candle = msgspec.json.Decoder(CandleData).decode
_decode_order = msgspec.json.Decoder(OrderData).decode
_decode_open = msgspec.json.Decoder(OpenOrdersData).decode
#: Open orders per ``snapshot`` event of the user channel, as upstream.
USER_SNAPSHOT_BATCH = 50


def _quantity(size: str) -> str:
    """A book size; a removed level is ``"0"`` as upstream."""
    return size if size.strip("0.") else "0"


def _opt(value: str | None) -> str:
    return "" if value is None else value


def envelope(channel: str, events: Any, ns: int | None = None) -> Numbered:
    """A data message after its ``sequence_num`` (each connection adds its own)."""
    ts = rfc3339(time.time_ns() if ns is None else ns)
    rest = b'"channel":"%s","client_id":"","timestamp":"%s","events":%s}' % (
        channel.encode(),
        ts.encode(),
        _encode(events),
    )
    return Numbered(rest, SEQUENCE_TEMPLATE)


class CoinbaseFormat:
    """The hub's encoder for Coinbase connections: each publication becomes one message of
    the upstream's shape, encoded once and numbered per connection."""

    name = "coinbase"
    compressed = False

    def __init__(self, markets: MarketRegistry) -> None:
        self.markets = markets
        self._products: dict[str, str] = {m.id: m.alias("coinbase") for m in markets.markets}
        renderers: dict[str, Callable[[Channel, bytes, str, int], Numbered]] = {
            "trades": self._trades,
            "book": self._book,
            "ticker": self._ticker,
            "ticker_batch": self._ticker,
            "candles": self._candles,
            "open_orders": self._orders,
        }
        self._render = renderers

    @property
    def base(self) -> CoinbaseFormat:
        return self

    def product(self, market_id: str) -> str:
        return self._products.get(market_id, market_id)

    def _message(self, channel: str, data: bytes, kind: str, ts: int) -> Numbered:
        ch = parse_channel(channel)
        render = self._render.get(ch.kind)
        if render is None:  # pragma: no cover - the dialect subscribes to nothing else
            raise ValueError(f"coinbase: no rendering for channel {channel!r}")
        try:
            return render(ch, data, kind, ts)
        except (msgspec.DecodeError, KeyError):
            # not the channel's data shape (a publisher of its own, the benchmark's
            # synthetic feed): passed through as the event's one item, unchanged
            name, key = PASS_THROUGH[ch.kind]
            return envelope(name, [{"type": kind, key: [msgspec.Raw(data)]}])

    def pub(self, pub: Publication) -> bytes:
        return self._message(pub.channel, pub.data, "update", pub.ts)

    def snapshot(self, snap: Snapshot) -> bytes:
        return self._message(snap.channel, snap.data, "snapshot", snap.ts)

    def reset(self, channel: str, position: Position) -> bytes | None:
        """State channels (level2, ticker, candles): the fresh ``snapshot`` that follows
        says it. Trades and user orders have no in-band signal upstream: None closes the
        connection with a code the SDK reconnects (and resubscribes) on."""
        return b"" if parse_channel(channel).stateful else None

    # -- one renderer per core kind --

    def _trades(self, ch: Channel, data: bytes, kind: str, ts: int) -> Numbered:
        t = _decode_trade(data)
        trade = _Trade(
            str(t.id),
            self.product(ch.symbol),
            t.price,
            t.size,
            MAKER_SIDE[t.side],
            rfc3339_ms(t.ts),
        )
        return envelope("market_trades", [{"type": kind, "trades": [trade]}])

    def _book(self, ch: Channel, data: bytes, kind: str, ts: int) -> Numbered:
        book = _decode_book(data)
        when = rfc3339_ms(ts)
        updates = [_Level("bid", when, p, _quantity(s)) for p, s in book.bids]
        updates += [_Level("offer", when, p, _quantity(s)) for p, s in book.asks]
        event = {"type": kind, "product_id": self.product(ch.symbol), "updates": updates}
        return envelope("l2_data", [event])

    def _ticker(self, ch: Channel, data: bytes, kind: str, ts: int) -> Numbered:
        t = _decode_ticker(data)
        ticker = _Ticker(
            type="ticker",
            product_id=self.product(ch.symbol),
            price=_opt(t.last),
            volume_24_h=t.volume_24h,
            low_24_h=_opt(t.low_24h),
            high_24_h=_opt(t.high_24h),
            low_52_w="",
            high_52_w="",
            price_percent_chg_24_h=_opt(t.change_pct_24h),
            best_bid=_opt(t.best_bid),
            best_bid_quantity=_opt(t.best_bid_size),
            best_ask=_opt(t.best_ask),
            best_ask_quantity=_opt(t.best_ask_size),
        )
        return envelope(ch.kind, [{"type": kind, "tickers": [ticker]}])

    def _candles(self, ch: Channel, data: bytes, kind: str, ts: int) -> Numbered:
        c = _decode_candle(data)
        candle = _Candle(
            str(c.start // 1000), c.high, c.low, c.open, c.close, c.volume, self.product(ch.symbol)
        )
        return envelope("candles", [{"type": kind, "candles": [candle]}])

    def _orders(self, ch: Channel, data: bytes, kind: str, ts: int) -> Numbered:
        if kind == "snapshot":  # the open orders, in events of at most 50
            orders = [self._order(o) for o in _decode_open(data).orders]
            return envelope("user", user_snapshot(orders))
        event: dict[str, Any] = {"type": kind, "orders": [self._order(_decode_order(data))]}
        event["positions"] = _EMPTY_POSITIONS
        return envelope("user", [event])

    def _order(self, o: OrderData) -> _Order:
        return _Order(
            order_id=o.id,
            client_order_id=_opt(o.client_id),
            cumulative_quantity=o.filled,
            leaves_quantity=o.remaining,
            avg_price=o.avg_price or "0",
            total_fees="0",
            status=ORDER_STATUS[o.state],
            product_id=self.product(o.market),
            creation_time=rfc3339_ms(o.created_at),
            order_side=o.side.upper(),
            order_type=o.type.upper(),
            limit_price=_opt(o.price),
            number_of_fills=str(o.trades_count),
            product_type="SPOT",
            cancel_reason="",
            reject_reason="",
            time_in_force="GOOD_UNTIL_CANCELLED",
        )


def user_snapshot(orders: list[Any]) -> list[dict[str, Any]]:
    """The user channel's ``snapshot`` events: the open orders in batches of 50 (one
    event, with no orders, when there are none)."""
    step = USER_SNAPSHOT_BATCH
    batches = [orders[i : i + step] for i in range(0, len(orders), step)] or [[]]
    return [{"type": "snapshot", "orders": b, "positions": _EMPTY_POSITIONS} for b in batches]


# -- the dialect ------------------------------------------------------------------------------


def render_error(error: ProtocolError) -> bytes:
    """``{"type":"error","message":…}`` as upstream, plus tickwire's stable ``code``."""
    return _encode({"type": "error", "message": error.message, "code": error.code})


def product_message(market: Market) -> dict[str, str]:
    """One product of the ``status`` channel."""
    return {
        "product_type": "SPOT",
        "id": market.alias("coinbase"),
        "base_currency": market.base,
        "quote_currency": market.quote,
        "base_increment": market.size_increment.text,
        "quote_increment": market.price_increment.text,
        "display_name": f"{market.base}/{market.quote}",
        "status": "online",
        "status_message": "",
        "min_market_funds": "0",
    }


class Coinbase(Dialect):
    """One Coinbase Advanced Trade connection on the shared core. Serve a configured
    subclass (:meth:`configure`): it carries the market registry and limits."""

    name = "coinbase"
    fmt: ClassVar[CoinbaseFormat]
    markets: ClassVar[MarketRegistry]
    #: Most product ids in one message.
    max_product_ids: ClassVar[int] = 100
    subscribe_within = 5.0
    tick_interval = 1.0

    @classmethod
    def configure(cls, markets: MarketRegistry, max_product_ids: int = 100) -> type[Coinbase]:
        """The dialect class serving ``markets``."""
        attrs = {
            "fmt": CoinbaseFormat(markets),
            "markets": markets,
            "max_product_ids": max_product_ids,
        }
        return type("ConfiguredCoinbase", (cls,), attrs)

    def __init__(self, handshake: Any) -> None:
        super().__init__(handshake)
        #: channel -> product ids shown in ``subscriptions`` -> core channel (None: local)
        self.subs: dict[str, dict[str, str | None]] = {}
        #: the user channel's core channels (one per user whose JWT subscribed it)
        self.user_channels: set[str] = set()
        self.heartbeat_counter = 0
        self._next_id = 0
        #: requests the core is executing: what to record when it succeeds
        self._pending: dict[int, tuple[str, str, list[str]]] = {}

    # -- inbound --

    def parse(self, frame: str) -> list[Command]:
        try:
            msg = boundedjson.decode(frame, max_bytes=MAX_FRAME_BYTES)
        except boundedjson.JSONLimitError as exc:
            code = "frame_too_large" if exc.reason == "too_large" else "bad_json"
            raise ProtocolError(code, f"message is {exc.message}") from None
        if not isinstance(msg, dict):
            raise ProtocolError("bad_request", "message must be a JSON object")
        typ = msg.get("type")
        if typ is None:
            raise ProtocolError("bad_request", "field 'type' is missing: subscribe or unsubscribe")
        if typ not in ("subscribe", "unsubscribe"):
            shown = typ[:32] if isinstance(typ, str) else typ
            raise ProtocolError(
                "unknown_op", f"type {shown!r} is unknown: expected subscribe or unsubscribe"
            )
        channel = msg.get("channel")
        if not isinstance(channel, str):
            raise ProtocolError(
                "bad_request", "field 'channel' must be a string naming one channel"
            )
        if channel not in CHANNELS:
            why = " (not served by tickwire)" if channel in UNSUPPORTED else ""
            raise ProtocolError(
                "unknown_channel",
                f"channel {channel[:32]!r} is unknown{why}: expected one of {', '.join(CHANNELS)}",
            )
        raw_ids = msg.get("product_ids")
        products = None if raw_ids is None else self._product_ids(raw_ids)
        token = msg.get("jwt")
        if token is not None and (
            not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH
        ):
            raise ProtocolError(
                "bad_request", f"field 'jwt' must be a string of 1 to {MAX_TOKEN_LENGTH} chars"
            )
        credential = None if token is None else Token(token)
        rid = self._next_id = self._next_id + 1
        if typ == "subscribe":
            return [self._subscribe(rid, channel, products or [], credential)]
        return [self._unsubscribe(rid, channel, products)]

    def _product_ids(self, raw: object) -> list[str]:
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            raise ProtocolError("bad_request", "field 'product_ids' must be a list of strings")
        if len(raw) > self.max_product_ids:
            raise ProtocolError(
                "bad_request",
                f"field 'product_ids' lists {len(raw)} products: at most "
                f"{self.max_product_ids} per message",
            )
        out: list[str] = []
        for pid in raw:
            if pid not in out:
                out.append(pid)
        return out

    def _market(self, pid: str) -> Market:
        market = self.markets.by_alias("coinbase", pid)
        if market is None:
            shown = pid[:MAX_PRODUCT_ID_LENGTH]
            raise ProtocolError("unknown_channel", f"product_ids: unknown product id {shown!r}")
        return market

    def _core_channel(self, channel: str, market: Market) -> Channel:
        kind = PRODUCT_KINDS[channel]
        if kind == "candles":
            return parse_channel(f"candles:{market.id}:{CANDLE_INTERVAL}")
        return parse_channel(f"{kind}:{market.id}")

    def _subscribe(
        self, rid: int, channel: str, products: list[str], credential: Token | None
    ) -> Command:
        if channel in PRODUCT_KINDS:
            if not products:
                raise ProtocolError(
                    "bad_request", f"channel {channel!r}: product_ids must name a product"
                )
            items = [(self._core_channel(channel, self._market(p)), None) for p in products]
            self._pending[rid] = ("subscribe", channel, products)
            return Subscribe(rid, items, credential)
        if channel == "status":
            for pid in products:
                self._market(pid)
        self._pending[rid] = ("subscribe", channel, products)
        own = ("open_orders",) if channel == "user" else ()
        return Subscribe(rid, [], credential, own)

    def _unsubscribe(self, rid: int, channel: str, products: list[str] | None) -> Command:
        held = self.subs.get(channel, {})
        if products is None:
            names = [n for n in held.values() if n is not None]
            if channel == "user":
                names = sorted(self.user_channels)
            shown = list(held)
        else:
            for pid in products:
                if channel in PRODUCT_KINDS or channel == "status":
                    self._market(pid)
            shown = [p for p in products if p in held]
            names = [n for p in shown if (n := held[p]) is not None]
            if channel == "user" and len(shown) == len(held):
                names = sorted(self.user_channels)
        self._pending[rid] = ("unsubscribe", channel, shown)
        return Unsubscribe(rid, [parse_channel(n) for n in names])

    # -- outbound --

    def render(self, event: Event) -> bytes | list[bytes] | None:
        if isinstance(event, Subscribed | Unsubscribed) and isinstance(event.id, int):
            pending = self._pending.pop(event.id, None)
            if pending is None:  # pragma: no cover - every request is recorded
                return None
            _op, channel, products = pending
            if isinstance(event, Subscribed):
                return self._subscribed(channel, products, event)
            self._unsubscribed(channel, products, event)
            return self.subscriptions()
        return None

    def _subscribed(self, channel: str, products: list[str], event: Subscribed) -> list[bytes]:
        held = self.subs.setdefault(channel, {})
        out: list[bytes] = [b""]
        if channel in PRODUCT_KINDS:
            names = [c.channel for c in event.channels]
            held.update(zip(products, names, strict=True))
        elif channel == "heartbeats":
            held["heartbeats"] = None
        elif channel == "user":
            for c in event.channels:
                self.user_channels.add(c.channel)
                if c.seq == 0:  # nothing published for this user yet: no open orders
                    out.append(envelope("user", user_snapshot([])))
            for pid in products or ["user"]:
                held[pid] = None
        else:  # status: the products now, as a snapshot (the registry does not change)
            markets = [self._market(p) for p in products] or self.markets.markets
            for market in markets:
                held[market.alias("coinbase")] = None
            products_msg = [product_message(m) for m in markets]
            out.append(envelope("status", [{"type": "snapshot", "products": products_msg}]))
        out[0] = self.subscriptions()
        return out

    def _unsubscribed(self, channel: str, products: list[str], event: Unsubscribed) -> None:
        held = self.subs.get(channel, {})
        for pid in products:
            held.pop(pid, None)
        if channel == "user":
            self.user_channels.difference_update(event.channels)
            if not held:
                self.user_channels.clear()
        if not held:
            self.subs.pop(channel, None)

    def subscriptions(self) -> Numbered:
        """The cumulative ``subscriptions`` message (``{}`` when nothing is left)."""
        current = {ch: list(held) for ch, held in self.subs.items() if held}
        return envelope("subscriptions", [{"subscriptions": current}])

    def render_error(self, error: ProtocolError) -> bytes:
        if isinstance(error.request_id, int):
            self._pending.pop(error.request_id, None)
        return render_error(error)

    def ticking(self) -> bool:
        return "heartbeats" in self.subs

    def tick(self) -> list[bytes]:
        """The heartbeat, every second, while ``heartbeats`` is subscribed."""
        if "heartbeats" not in self.subs:
            return []
        self.heartbeat_counter += 1
        ns = time.time_ns()
        event = {
            "current_time": go_time(ns, time.monotonic()),
            "heartbeat_counter": self.heartbeat_counter,
        }
        return [envelope("heartbeats", [event], ns)]

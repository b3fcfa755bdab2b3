"""The RabbitMQ ingest: Peatio's events, as Peatio publishes them, into the gateway.

Peatio publishes every market-data and user event to the topic exchange
``peatio.events.ranger`` (declared by Peatio as topic, **non-durable**; a declare with
other flags fails, so it is declared here exactly so), with routing keys
``public.<market>.<event>`` (``trades``, ``ob-snap``, ``ob-inc``, ``kline-<period>``),
``public.global.tickers`` and ``private.<uid>.<event>`` (``order``, ``trade``), and the
plain JSON payload as body. :class:`PeatioIngest` consumes them through a queue of its
own and maps each onto the market-data gateway (exact decimals, book checksums, candles,
tickers), so the same events reach every dialect. docs/ingest.md has the mapping, what
reconnecting keeps and what it can lose.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import aio_pika
import msgspec
from aio_pika.abc import AbstractIncomingMessage

from tickwire.ingest.gateway import Gateway, IngestError, Op
from tickwire.model.ratelimit import TokenBucket

log = logging.getLogger(__name__)

#: Peatio's exchange: the name is not configurable (Peatio's publisher hard-codes it).
EXCHANGE = "peatio.events.ranger"
#: Messages applied before their acknowledgement is sent (when more are waiting).
ACK_EVERY = 100
#: Routing keys this ingest binds its queue with.
BINDINGS = ("public.#", "private.#")

#: Peatio order states by tickwire order state.
ORDER_STATES = {
    "wait": "open",
    "pending": "pending",
    "trigger_wait": "pending",
    "done": "filled",
    "cancel": "cancelled",
    "reject": "rejected",
}


def amqp_url(
    host: str, port: int = 5672, user: str = "guest", password: str = "guest", vhost: str = "/"
) -> str:
    """The AMQP URL of Peatio-style ``RABBITMQ_HOST``/``_PORT``/``_USER``/``_PASSWORD``."""
    return (
        f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/"
        f"{quote(vhost, safe='')}"
    )


def redact_url(url: str) -> str:
    """``url`` without its password (for logs)."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


# -- Peatio's bodies -----------------------------------------------------------------------


class _Trade(msgspec.Struct):
    tid: int
    taker_type: str
    date: int
    price: str
    amount: str


class _Trades(msgspec.Struct):
    trades: list[_Trade]


class _Snap(msgspec.Struct):
    asks: list[tuple[str, str]] = []
    bids: list[tuple[str, str]] = []
    sequence: int | None = None


class _Inc(msgspec.Struct):
    asks: list[Any] | None = None
    bids: list[Any] | None = None
    sequence: int | None = None


class _Order(msgspec.Struct):
    id: int | str
    market: str
    side: str | None = None
    kind: str | None = None
    ord_type: str = "limit"
    price: str | None = None
    avg_price: str | None = None
    state: str = "wait"
    origin_volume: str = "0"
    remaining_volume: str | None = None
    executed_volume: str | None = None
    created_at: int | None = None
    updated_at: int | None = None
    trades_count: int = 0


class _UserTrade(msgspec.Struct):
    id: int
    price: str
    amount: str
    market: str
    side: str
    order_id: int | str
    taker_type: str | None = None
    total: str | None = None
    created_at: int | None = None


class Rejected(Exception):
    """A message the ingest refuses: counted under ``code``, logged with its routing key."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class IngestStats:
    """Counters read by ``/metrics``."""

    received: int = 0
    applied: int = 0
    #: messages for streams tickwire derives itself (klines, tickers) or duplicates
    ignored: int = 0
    #: refused messages by reason (``malformed``, ``unknown_routing_key``, ``crossed_book``…)
    rejected: dict[str, int] = field(default_factory=dict)
    #: Peatio ``ob-inc`` sequences that did not follow the last one of their market
    sequence_gaps: int = 0
    reconnects: int = 0
    connected: bool = False


@dataclass(frozen=True, slots=True)
class AmqpSettings:
    """Connection and queue settings (config fields ``amqp``, ``rabbitmq_*``, ``amqp_*``)."""

    url: str
    #: this node's queue; it outlives a dropped connection (``queue_ttl`` seconds)
    queue: str = field(default_factory=lambda: f"tickwire.ranger.{uuid.uuid4().hex[:12]}")
    queue_ttl: float = 300.0
    queue_max: int = 100_000
    prefetch: int = 256
    #: seconds between connection attempts
    reconnect_interval: float = 1.0
    #: AMQP connection name (``rabbitmqctl list_connections client_properties``)
    connection_name: str = "tickwire-peatio-ingest"
    #: rango's role-gated prefixes (``ranger_rbac``): ``<prefix>.<stream>.<event>`` routing
    #: keys are published as they are on ``scoped:<prefix>:<stream>.<event>``
    prefixes: frozenset[str] = frozenset()


def _side(level: object, where: str) -> list[tuple[str, str]]:
    """``["p","a"]`` (Peatio's one level) or ``[["p","a"], …]``; an empty amount is 0."""
    if not isinstance(level, list):
        raise Rejected("malformed", f"{where}: expected [price, amount]")
    rows = level if level and isinstance(level[0], list) else [level]
    out: list[tuple[str, str]] = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 2:
            raise Rejected("malformed", f"{where}: expected [price, amount]")
        price, amount = row
        if not isinstance(price, str) or not isinstance(amount, str):
            raise Rejected("malformed", f"{where}: price and amount must be strings")
        out.append((price, amount or "0"))
    return out


class PeatioIngest:
    """Maps Peatio's events onto ``gateway`` and consumes them from RabbitMQ."""

    def __init__(self, gateway: Gateway, settings: AmqpSettings) -> None:
        self.gateway = gateway
        self.settings = settings
        self.stats = IngestStats()
        #: last Peatio ob sequence per market id
        self._sequence: dict[str, int] = {}
        #: last public trade id per market id (redeliveries are not published twice)
        self._last_tid: dict[str, int] = {}
        #: recent private trade ids (uid, id), bounded
        self._user_trades: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._log_bucket = TokenBucket(10.0, 50.0, time.monotonic())
        #: set while consuming (queue declared and bound), cleared when the connection ends
        self.consuming = asyncio.Event()

    # -- one message ------------------------------------------------------------------

    async def handle(self, routing_key: str, body: bytes) -> str:
        """Apply one message; returns ``applied``, ``ignored`` or ``rejected`` (counted,
        and logged with the routing key). Never raises for a bad message."""
        self.stats.received += 1
        try:
            outcome = await self._apply(routing_key, body)
        except Rejected as exc:
            return self._reject(routing_key, exc.code, exc.message)
        except IngestError as exc:
            return self._reject(routing_key, exc.code, exc.message)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return self._reject(routing_key, "malformed", str(exc))
        except Exception:
            log.exception("amqp: %s: applying the message failed", routing_key[:200])
            return self._reject(routing_key, "internal", "the gateway failed")
        if outcome == "applied":
            self.stats.applied += 1
        else:
            self.stats.ignored += 1
        return outcome

    def _reject(self, routing_key: str, code: str, message: str) -> str:
        rejected = self.stats.rejected
        rejected[code] = rejected.get(code, 0) + 1
        if self._log_bucket.take(time.monotonic()):
            log.warning("amqp: %s rejected (%s): %s", routing_key[:200], code, message[:300])
        return "rejected"

    async def _apply(self, routing_key: str, body: bytes) -> str:
        parts = routing_key.split(".")
        if len(parts) != 3:
            raise Rejected("unknown_routing_key", "expected <public|private>.<id>.<event>")
        scope, ident, event = parts
        if scope == "public":
            if ident == "global":
                if event == "tickers":
                    msgspec.json.decode(body)  # well-formed, but derived by tickwire
                    return "ignored"
                raise Rejected("unknown_routing_key", f"unknown global event {event[:40]!r}")
            market = self.gateway.markets.by_alias("ranger", ident)
            if market is None:
                raise Rejected("unknown_market", f"no market is called {ident[:40]!r}")
            if event == "trades":
                return await self._trades(market.id, body)
            if event == "ob-snap":
                return await self._snapshot(market.id, body)
            if event == "ob-inc":
                return await self._increment(market.id, body)
            if event.startswith("kline-"):
                msgspec.json.decode(body, type=list[Any])  # derived by tickwire from trades
                return "ignored"
            raise Rejected("unknown_routing_key", f"unknown public event {event[:40]!r}")
        if scope == "private":
            if event == "order":
                return await self._order(ident, body)
            if event == "trade":
                return await self._user_trade(ident, body)
            raise Rejected("unknown_routing_key", f"unknown private event {event[:40]!r}")
        if scope in self.settings.prefixes:
            await self.gateway.publish_scoped(scope, f"{ident}.{event}", body)
            return "applied"
        raise Rejected("unknown_routing_key", f"unknown scope {scope[:40]!r}")

    async def _trades(self, market: str, body: bytes) -> str:
        trades = msgspec.json.decode(body, type=_Trades).trades
        last = self._last_tid.get(market, -1)
        fresh = [t for t in trades if t.tid > last]
        if not fresh:
            return "ignored"  # a redelivery
        gw = self.gateway
        ops: list[Op] = []
        for i, t in enumerate(fresh):
            where = f"trades[{i}]"
            ops.append(
                gw.trade_op(
                    market, t.price, t.amount, t.taker_type, id=t.tid, ts=t.date * 1000, where=where
                )
            )
        await gw.publish_ops(ops)
        self._last_tid[market] = max(t.tid for t in fresh)
        return "applied"

    async def _snapshot(self, market: str, body: bytes) -> str:
        snap = msgspec.json.decode(body, type=_Snap)
        bids = [(p, a) for p, a in snap.bids if a and a.strip("0.")]
        asks = [(p, a) for p, a in snap.asks if a and a.strip("0.")]
        await self.gateway.apply_book(market, bids, asks, reset=True)
        if snap.sequence is not None:
            self._sequence[market] = snap.sequence
        return "applied"

    async def _increment(self, market: str, body: bytes) -> str:
        inc = msgspec.json.decode(body, type=_Inc)
        if inc.asks is None and inc.bids is None:
            raise Rejected("malformed", "ob-inc: neither asks nor bids")
        last = self._sequence.get(market)
        if inc.sequence is not None and last is not None:
            if inc.sequence <= last:
                return "ignored"  # a redelivery
            if inc.sequence != last + 1:
                self.stats.sequence_gaps += 1
                log.warning(
                    "amqp: public.%s.ob-inc: sequence %d after %d: increments were lost; the "
                    "book is repaired by the next ob-snap",
                    market,
                    inc.sequence,
                    last,
                )
        bids = _side(inc.bids, "bids") if inc.bids is not None else []
        asks = _side(inc.asks, "asks") if inc.asks is not None else []
        await self.gateway.apply_book(market, bids, asks)
        if inc.sequence is not None:
            self._sequence[market] = inc.sequence
        return "applied"

    def _market_id(self, alias: str) -> str:
        market = self.gateway.markets.by_alias("ranger", alias)
        if market is None:
            raise Rejected("unknown_market", f"no market is called {alias[:40]!r}")
        return market.id

    async def _order(self, uid: str, body: bytes) -> str:
        o = msgspec.json.decode(body, type=_Order)
        side = o.side or {"bid": "buy", "ask": "sell"}.get(o.kind or "", "")
        state = ORDER_STATES.get(o.state)
        if state is None:
            raise Rejected("bad_value", f"order.state: unknown Peatio state {o.state[:20]!r}")
        avg = o.avg_price if o.avg_price and o.avg_price.strip("0.") else None
        filled = o.executed_volume
        if filled is None and o.remaining_volume is not None:
            filled = format(_decimal(o.origin_volume) - _decimal(o.remaining_volume), "f")
        await self.gateway.publish_order(
            uid,
            id=str(o.id),
            market=self._market_id(o.market),
            side=side,
            state=state,
            size=o.origin_volume,
            type=o.ord_type,
            price=o.price,
            filled=filled,
            avg_price=avg,
            trades_count=o.trades_count,
            created_at=None if o.created_at is None else o.created_at * 1000,
            updated_at=None if o.updated_at is None else o.updated_at * 1000,
        )
        return "applied"

    async def _user_trade(self, uid: str, body: bytes) -> str:
        t = msgspec.json.decode(body, type=_UserTrade)
        key = (uid, t.id)
        if key in self._user_trades:
            return "ignored"  # a redelivery
        liquidity = "taker" if t.taker_type is None or t.taker_type == t.side else "maker"
        await self.gateway.publish_user_trade(
            uid,
            id=t.id,
            order_id=str(t.order_id),
            market=self._market_id(t.market),
            side=t.side,
            price=t.price,
            size=t.amount,
            liquidity=liquidity,
            ts=None if t.created_at is None else t.created_at * 1000,
        )
        self._user_trades[key] = None
        if len(self._user_trades) > 10_000:
            self._user_trades.popitem(last=False)
        return "applied"

    # -- the consumer -----------------------------------------------------------------

    async def run(self) -> None:
        """Consume until cancelled; reconnect (every ``reconnect_interval`` s) whenever the
        connection fails or the broker restarts."""
        interval = self.settings.reconnect_interval
        first = True
        while True:
            if not first:
                self.stats.reconnects += 1
            first = False
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "amqp: %s: %s; reconnecting in %g s",
                    redact_url(self.settings.url),
                    exc or type(exc).__name__,
                    interval,
                )
            self.stats.connected = False
            await asyncio.sleep(interval)

    async def _session(self) -> None:
        """One connection: declare, bind, consume in order until the connection ends."""
        s = self.settings
        loop = asyncio.get_running_loop()
        conn = await aio_pika.connect(
            s.url, timeout=10, client_properties={"connection_name": s.connection_name}
        )
        closed: asyncio.Future[None] = loop.create_future()

        def on_close(*_: object) -> None:
            if not closed.done():
                closed.set_result(None)

        conn.close_callbacks.add(on_close)
        worker: asyncio.Task[None] | None = None
        try:
            channel = await conn.channel()
            channel.close_callbacks.add(on_close)
            await channel.set_qos(prefetch_count=s.prefetch)
            exchange = await channel.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=False, auto_delete=False
            )
            queue = await channel.declare_queue(
                s.queue,
                durable=False,
                exclusive=False,
                auto_delete=False,
                arguments={"x-expires": int(s.queue_ttl * 1000), "x-max-length": s.queue_max},
            )
            for key in BINDINGS:
                await queue.bind(exchange, key)
            inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

            async def deliver(message: AbstractIncomingMessage) -> None:
                inbox.put_nowait(message)

            await queue.consume(deliver)
            self.stats.connected = True
            self.consuming.set()
            log.info("amqp: consuming %s from %s", EXCHANGE, redact_url(s.url))
            worker = asyncio.create_task(self._work(inbox))
            await asyncio.wait({closed, worker}, return_when=asyncio.FIRST_COMPLETED)
            if worker.done():
                worker.result()  # re-raise what stopped it
            raise ConnectionError("the connection to the broker closed")
        finally:
            self.consuming.clear()
            self.stats.connected = False
            if worker is not None:
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
            if not conn.is_closed:
                await conn.close()

    async def _work(self, inbox: asyncio.Queue[AbstractIncomingMessage]) -> None:
        """Apply messages one at a time, in delivery order. Acknowledged after they were
        applied: the last of a run with ``multiple`` (every ``ACK_EVERY`` messages, and
        whenever the inbox is empty), so a burst costs a few ack frames, not one each."""
        pending: AbstractIncomingMessage | None = None
        count = 0
        while True:
            if pending is not None and (inbox.empty() or count >= ACK_EVERY):
                try:
                    await pending.ack(multiple=True)
                except Exception:
                    # the channel closed meanwhile: the broker redelivers them (skipped
                    # as duplicates where they were applied)
                    return
                pending, count = None, 0
            message = await inbox.get()
            await self.handle(message.routing_key or "", message.body)
            pending = message
            count += 1


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise Rejected("not_a_number", f"{text[:40]!r} is not a decimal") from None

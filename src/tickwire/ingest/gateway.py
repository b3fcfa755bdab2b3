"""The ingest gateway: the one way market data gets into tickwire.

Every source (the Python API below, ``POST /api/v1/publish``, the demo market, feeds)
turns its input into operations (:class:`BookOp`, :class:`TradeOp`, ...), and the
gateway validates them against the market registry and the current state, updates the
books, tickers, candles and sentiment series, and publishes the resulting data through
the engine, encoded once. A batch is all or nothing: it is checked in full against the
state before anything is changed or published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal

import msgspec

from tickwire.engine.base import Engine
from tickwire.ingest.ops import (
    MAX_ID_LENGTH,
    MAX_INT_ID,
    MAX_SCOPED_BYTES,
    MIN_TS_MS,
    OPEN_STATES,
    SIDES,
    BookOp,
    BookView,
    GatewaySettings,
    IngestError,
    Op,
    OrderOp,
    SentimentOp,
    TradeOp,
    UserTradeOp,
)
from tickwire.ingest.state import (
    Item,
    MarketState,
    Undo,
    roll_back,
)
from tickwire.ingest.validation import OpBuilder
from tickwire.model.book import BookChange, BookError, Level, OrderBook
from tickwire.model.candles import CandleError
from tickwire.model.channels import ChannelError, parse_channel
from tickwire.model.decimals import format_scaled
from tickwire.model.markets import Market, MarketRegistry, default_registry
from tickwire.model.payloads import (
    BookData,
    CandleData,
    LevelRow,
    OpenOrdersData,
    OrderData,
    SentimentData,
    Side,
    TickerData,
    TradeData,
)
from tickwire.model.publication import Position, Publication, now_ms
from tickwire.model.sentiment import SentimentTracker

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_INT_ID",
    "MAX_SCOPED_BYTES",
    "MIN_TS_MS",
    "OPEN_STATES",
    "BookOp",
    "BookView",
    "Gateway",
    "GatewaySettings",
    "IngestError",
    "Op",
    "OrderOp",
    "SentimentOp",
    "TradeOp",
    "UserTradeOp",
]

_encode = msgspec.json.Encoder().encode
_decode_book = msgspec.json.Decoder(BookData).decode
_decode_open = msgspec.json.Decoder(OpenOrdersData).decode


class Gateway(OpBuilder):
    """Validates market data, keeps the derived state, publishes through ``engine``.

    One gateway should own each market: book state lives in the publishing process
    (it is reloaded from the engine's snapshot when a gateway first touches a market).
    All methods are coroutines for the event loop the engine runs on.
    """

    def __init__(
        self,
        engine: Engine,
        markets: MarketRegistry | None = None,
        settings: GatewaySettings | None = None,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.engine = engine
        self.markets = markets if markets is not None else default_registry()
        self.settings = settings or GatewaySettings()
        self.clock = clock
        self._lock = asyncio.Lock()
        self._states: dict[str, MarketState] = {}
        self._sentiment: dict[str, SentimentTracker] = {}
        self._next_batch = 0
        #: each user's open orders by id, for the ``user:<uid>:open_orders`` snapshot
        self._open_orders: dict[str, dict[str, OrderData]] = {}

    # --- building operations (static validation) -----------------------------------------

    async def apply_book(
        self,
        market: str,
        bids: Iterable[Sequence[str]] = (),
        asks: Iterable[Sequence[str]] = (),
        *,
        reset: bool = False,
    ) -> Publication | None:
        """Apply ``[price, size]`` levels (absolute sizes, ``"0"`` removes) to a book and
        publish the change; None when nothing changed. ``reset`` replaces the book."""
        pubs = await self.publish_ops([self.book_op(market, bids, asks, reset=reset)])
        return pubs[0] if pubs else None

    async def apply_book_units(
        self,
        market: str,
        bids: Iterable[Level] = (),
        asks: Iterable[Level] = (),
        *,
        reset: bool = False,
    ) -> Publication | None:
        """:meth:`apply_book` with integer units at the market's precision."""
        mk = self.market(market)
        step_p, step_s = mk.price_increment.step, mk.size_increment.step
        sides = (tuple(bids), tuple(asks))
        for name, levels in zip(("bids", "asks"), sides, strict=True):
            for i, (p, s) in enumerate(levels):
                if p % step_p or s % step_s:
                    raise IngestError(
                        "wrong_precision", "level breaks the increment", field=f"{name}[{i}]"
                    )
        pubs = await self.publish_ops([BookOp(mk, sides[0], sides[1], reset)])
        return pubs[0] if pubs else None

    async def publish_trade(
        self,
        market: str,
        price: str,
        size: str,
        side: str,
        *,
        id: int | None = None,
        ts: int | None = None,
    ) -> Publication:
        """Publish a public trade (``side`` = taker side); updates ticker and candles.
        Returns the ``trades:<market>`` publication."""
        pubs = await self.publish_ops([self.trade_op(market, price, size, side, id=id, ts=ts)])
        return pubs[0]

    async def publish_trade_units(
        self,
        market: str,
        price: int,
        size: int,
        side: Side,
        *,
        id: int | None = None,
        ts: int | None = None,
    ) -> Publication:
        """:meth:`publish_trade` with integer units at the market's precision."""
        mk = self.market(market)
        if price <= 0 or price % mk.price_increment.step:
            raise IngestError("wrong_precision", "price breaks the increment", field="price")
        if size <= 0 or size % mk.size_increment.step:
            raise IngestError("wrong_precision", "size breaks the increment", field="size")
        self._choice(side, SIDES, "side")
        op = TradeOp(mk, price, size, side, self._ts(ts, "ts"), id)
        pubs = await self.publish_ops([op])
        return pubs[0]

    async def publish_order(self, user_id: str, **order: object) -> Publication:
        """Publish an order update on ``user:<uid>:orders``; keyword arguments as
        :meth:`order_op` (id, market, side, state, size, type, price, filled, ...)."""
        op = self.order_op(user_id, **order)  # type: ignore[arg-type]
        return (await self.publish_ops([op]))[0]

    async def publish_user_trade(self, user_id: str, **trade: object) -> Publication:
        """Publish a fill on ``user:<uid>:trades``; keyword arguments as
        :meth:`user_trade_op` (id, order_id, market, side, price, size, liquidity, ts)."""
        op = self.user_trade_op(user_id, **trade)  # type: ignore[arg-type]
        return (await self.publish_ops([op]))[0]

    async def publish_sentiment(
        self,
        ticker: str,
        user_id: str,
        sentiment: float,
        user_score: float,
        *,
        ts: int | None = None,
    ) -> list[Publication]:
        """Count a scored message; publishes the series points it closed, then the
        message itself, on ``sentiment:<ticker>``."""
        return await self.publish_ops(
            [self.sentiment_op(ticker, user_id, sentiment, user_score, ts=ts)]
        )

    async def publish_scoped(self, prefix: str, topic: str, data: bytes) -> Publication:
        """Publish ``data`` (one JSON value, passed through as it is) on the role-gated
        channel ``scoped:<prefix>:<topic>`` (rango's ``<prefix>.<stream>.<event>``)."""
        try:
            channel = parse_channel(f"scoped:{prefix}:{topic}")
        except ChannelError as exc:
            raise IngestError(exc.code, exc.message, field="channel") from None
        if len(data) > MAX_SCOPED_BYTES:
            raise IngestError(
                "too_large", f"{channel.name}: at most {MAX_SCOPED_BYTES} bytes", field="data"
            )
        try:
            msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise IngestError("malformed", f"{channel.name}: {exc}", field="data") from None
        return await self.engine.publish(channel.name, data)

    async def tick(self, now: int | None = None) -> list[Publication]:
        """Close the sentiment periods that ended by ``now`` and publish their points;
        every ``ticker_batch_ms``, publish each changed ticker on ``ticker_batch:<market>``.
        :meth:`run` calls this every second."""
        now = self.clock() if now is None else now
        async with self._lock:
            undo: list[Undo] = []
            items: list[Item] = []
            try:
                for ticker in list(self._sentiment):
                    tracker = self._sentiment_tracker(ticker, now, undo)
                    items.extend(self._sentiment_items(ticker, tracker.advance(now)))
                if now >= self._next_batch:
                    next_batch = self._next_batch
                    self._next_batch = now + self.settings.ticker_batch_ms
                    batched = [
                        (st, st.ticker_unbatched)
                        for st in self._states.values()
                        if st.ticker_unbatched is not None
                    ]

                    def unbatch() -> None:
                        self._next_batch = next_batch
                        for st, raw in batched:
                            st.ticker_unbatched = raw

                    undo.append(unbatch)
                    for st, raw in batched:
                        st.ticker_unbatched = None
                        assert raw is not None
                        items.append((st.ticker_batch_channel, raw, raw))
                return await self._emit(items)
            except BaseException:
                roll_back(undo)
                raise

    async def run(self, interval: float = 1.0) -> None:
        """Call :meth:`tick` every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.tick()

    async def publish_ops(self, ops: Sequence[Op]) -> list[Publication]:
        """Apply and publish ``ops`` in order, all or nothing. Raises
        :class:`IngestError` (with ``index`` for batches) and changes nothing if any
        operation is refused; raises the engine's :class:`EngineError` (and changes
        nothing, the in-memory state rolled back) if the engine did not take them."""
        async with self._lock:
            for op in ops:
                if isinstance(op, BookOp | TradeOp):
                    await self._load(self._state(op.market))
                elif isinstance(op, OrderOp):
                    await self._load_orders(op.user_id)
            if len(ops) > 1:
                self._validate(ops)
            undo: list[Undo] = []
            items: list[Item] = []
            try:
                for i, op in enumerate(ops):
                    try:
                        items.extend(self._commit(op, undo))
                    except IngestError as exc:
                        exc.index = i if len(ops) > 1 else None
                        raise
                return await self._emit(items)
            except BaseException:
                # refused, or the engine did not take it: as if nothing had happened
                roll_back(undo)
                raise

    async def book_view(self, market_id: str, depth: int) -> BookView:
        """The book of ``market_id`` to ``depth`` levels per side and the seq of the
        ``book:<market>`` publication it corresponds to."""
        market = self.market(market_id)
        channel = f"book:{market.id}"
        async with self._lock:
            st = self._states.get(market.id)
            if st is not None and st.book_local:
                pos = await self.engine.position(channel)
                bids, asks = (
                    self._rows(st, st.book.bids(depth)),
                    self._rows(st, st.book.asks(depth)),
                )
                return BookView(market.id, pos.epoch, pos.seq, bids, asks, st.book.checksum())
        # Another process publishes this book: rebuild it from the engine's snapshot and
        # the updates after it.
        stored = await self._stored_book(st if st is not None else self._state(market))
        if stored is None:
            pos = await self.engine.position(channel)
            return BookView(market.id, pos.epoch, pos.seq, [], [], 0)
        book, pos = stored
        return BookView(
            market.id,
            pos.epoch,
            pos.seq,
            [(market.price(p), market.size(q)) for p, q in book.bids(depth)],
            [(market.price(p), market.size(q)) for p, q in book.asks(depth)],
            book.checksum(),
        )

    # --- state -------------------------------------------------------------------------------

    def _state(self, market: Market) -> MarketState:
        st = self._states.get(market.id)
        if st is None:
            st = self._states[market.id] = MarketState(market, self.settings.book_max_levels)
        return st

    async def _load(self, st: MarketState) -> None:
        """Continue the book from the engine (its snapshot plus the updates after it)
        the first time we touch it."""
        if st.book_loaded:
            return
        stored = await self._stored_book(st)
        st.book_loaded = True
        if stored is None:
            return
        book, _ = stored
        st.book.replace(book.bids(), book.asks())
        st.top = (st.book.best_bid(), st.book.best_ask())

    async def _stored_book(self, st: MarketState) -> tuple[OrderBook, Position] | None:
        """The book as the engine holds it: the last snapshot with every update after it
        applied, and the position it corresponds to. None without a readable snapshot;
        the snapshot alone when history no longer reaches back to it (the first
        publication of this gateway stores a fresh snapshot then)."""
        channel = st.book_channel
        snap = await self.engine.snapshot(channel)
        if snap is None:
            return None
        book = OrderBook(self.settings.book_max_levels)
        try:
            data = _decode_book(snap.data)
            op = self.book_op(st.market.id, data.bids, data.asks)
            book.replace(op.bids, op.asks)
        except (msgspec.DecodeError, IngestError, BookError):
            return None  # a snapshot we cannot read: start from an empty book
        position = Position(snap.epoch, snap.seq)
        res = await self.engine.history(channel, position)
        if not res.recovered:
            return book, position
        for pub in res.publications:
            try:
                delta = _decode_book(pub.data)
                op = self.book_op(st.market.id, delta.bids, delta.asks)
                book.apply(op.bids, op.asks)
            except (msgspec.DecodeError, IngestError, BookError):
                break  # not ours: the book as of the last update we could read
            position = Position(pub.epoch, pub.seq)
        return book, position

    async def _load_orders(self, user_id: str) -> None:
        """Continue a user's open orders from the engine's snapshot the first time."""
        if user_id in self._open_orders:
            return
        snap = await self.engine.snapshot(f"user:{user_id}:open_orders")
        orders: dict[str, OrderData] = {}
        if snap is not None:
            try:
                orders = {o.id: o for o in _decode_open(snap.data).orders}
            except msgspec.DecodeError:
                pass  # a snapshot we cannot read: start from none
        self._open_orders[user_id] = orders

    def _order_items(self, op: OrderOp) -> list[Item]:
        uid, order = op.user_id, op.order
        opened = self._open_orders.setdefault(uid, {})
        opened.pop(order.id, None)
        if order.state in OPEN_STATES:
            opened[order.id] = order  # newest last
            while len(opened) > self.settings.open_orders_max:
                del opened[next(iter(opened))]
        data = _encode(order)
        snap = _encode(OpenOrdersData(sorted(opened.values(), key=lambda o: o.created_at)))
        return [(f"user:{uid}:orders", data, None), (f"user:{uid}:open_orders", data, snap)]

    def _validate(self, ops: Sequence[Op]) -> None:
        """Dry-run a batch against the state: raises the first refusal, changes nothing."""
        applied: list[tuple[OrderBook, BookChange]] = []
        open_start: dict[str, int] = {}
        try:
            for i, op in enumerate(ops):
                try:
                    if isinstance(op, BookOp):
                        book = self._states[op.market.id].book
                        change = (
                            book.replace(op.bids, op.asks)
                            if op.reset
                            else book.apply(op.bids, op.asks)
                        )
                        applied.append((book, change))
                    elif isinstance(op, TradeOp):
                        # The 1m candle opened last, so it alone decides what is closed.
                        minute = self._states[op.market.id].candles[0]
                        current = minute.current
                        start = open_start.get(
                            op.market.id, -1 if current is None else current.start
                        )
                        if op.ts < start:
                            raise CandleError(
                                "trade_out_of_order",
                                f"trade time {op.ts} falls in a closed 1m candle "
                                f"(the open one started at {start})",
                            )
                        open_start[op.market.id] = max(start, minute.start_of(op.ts))
                except (BookError, CandleError) as exc:
                    raise self._refusal(op, exc, i) from None
        finally:
            for book, change in reversed(applied):
                book.revert(change)

    @staticmethod
    def _refusal(op: Op, exc: BookError | CandleError, index: int | None) -> IngestError:
        if isinstance(exc, CandleError):
            fld = "ts"
        elif exc.code == "crossed_book":
            fld = "bids" if isinstance(op, BookOp) and op.bids else "asks"
        else:
            fld = exc.side or "bids"
        # prices as the publisher wrote them: decimals at the market's precision
        book = isinstance(exc, BookError) and isinstance(op, BookOp)
        message = exc.message_at(op.market.price) if book else exc.message  # type: ignore[union-attr]
        return IngestError(exc.code, message, field=fld, index=index)

    def _commit(self, op: Op, undo: list[Undo]) -> list[Item]:
        """Apply ``op`` to the state and return what to publish; appends to ``undo``
        what puts the state back."""
        if isinstance(op, BookOp):
            return self._commit_book(op, undo)
        if isinstance(op, TradeOp):
            return self._commit_trade(op, undo)
        if isinstance(op, OrderOp):
            return self._order_items(op)
        if isinstance(op, UserTradeOp):
            return [(f"user:{op.user_id}:trades", _encode(op.trade), None)]
        tracker = self._sentiment_tracker(op.ticker, op.ts, undo)
        events = tracker.add(op.ts, op.user_id, op.sentiment, op.user_score)
        return self._sentiment_items(op.ticker, events)

    def _sentiment_tracker(self, ticker: str, ts: int, undo: list[Undo]) -> SentimentTracker:
        """``ticker``'s tracker, with a way back to its state before a message (or a
        tick) at ``ts`` in ``undo``."""
        trackers = self._sentiment
        tracker = trackers.get(ticker)
        if tracker is None:
            tracker = trackers[ticker] = SentimentTracker(ticker, self.settings.sentiment)

            def forget() -> None:
                trackers.pop(ticker, None)

            undo.append(forget)
            return tracker
        undo.append(tracker.checkpoint(ts))
        return tracker

    @staticmethod
    def _sentiment_items(ticker: str, events: Iterable[SentimentData]) -> list[Item]:
        channel = f"sentiment:{ticker}"
        return [(channel, _encode(ev), None) for ev in events]

    @staticmethod
    def _rows(st: MarketState, levels: Iterable[Level]) -> list[LevelRow]:
        price, size = st.market.price, st.market.size
        return [(price(p), size(s)) for p, s in levels]

    def _commit_book(self, op: BookOp, undo: list[Undo]) -> list[Item]:
        st = self._states[op.market.id]
        book = st.book
        try:
            change = book.replace(op.bids, op.asks) if op.reset else book.apply(op.bids, op.asks)
        except BookError as exc:
            raise self._refusal(op, exc, None) from None
        if change.empty:
            return []
        saved = (st.book_local, st.top, st.pubs_since_snapshot, st.bytes_since_snapshot)
        unbatched = st.ticker_unbatched

        def back() -> None:
            book.revert(change)
            st.book_local, st.top, st.pubs_since_snapshot, st.bytes_since_snapshot = saved
            st.ticker_unbatched = unbatched

        undo.append(back)
        st.book_local = True
        checksum = book.checksum()
        data = _encode(BookData(self._rows(st, change.bids), self._rows(st, change.asks), checksum))
        snap: bytes | None = None
        settings = self.settings
        since = st.pubs_since_snapshot
        if (
            since is None
            or op.reset
            or since + 1 >= settings.book_snapshot_every
            or st.bytes_since_snapshot + len(data) >= settings.book_snapshot_bytes
            or self.engine.snapshot_wanted(st.book_channel)
        ):
            depth = settings.book_snapshot_depth
            # BookData too, assembled from the book's cached level renderings
            snap = b"".join(
                (
                    b'{"bids":[',
                    b",".join(book.rendered(True, depth)),
                    b'],"asks":[',
                    b",".join(book.rendered(False, depth)),
                    b'],"checksum":%d}' % checksum,
                )
            )
            st.pubs_since_snapshot, st.bytes_since_snapshot = 0, 0
        else:
            st.pubs_since_snapshot = since + 1
            st.bytes_since_snapshot += len(data)
        items: list[Item] = [(st.book_channel, data, snap)]
        top = (book.best_bid(), book.best_ask())
        if top != st.top:
            st.top = top
            items.append(self._ticker_item(st))
        return items

    def _commit_trade(self, op: TradeOp, undo: list[Undo]) -> list[Item]:
        st = self._states[op.market.id]
        try:
            for series in st.candles:
                series.check(op.ts)
        except CandleError as exc:
            raise self._refusal(op, exc, None) from None
        mk = op.market
        last_trade_id, unbatched = st.last_trade_id, st.ticker_unbatched
        backs = [series.checkpoint() for series in st.candles]
        backs.append(st.stats.checkpoint(op.ts))

        def back() -> None:
            st.last_trade_id, st.ticker_unbatched = last_trade_id, unbatched
            for b in backs:
                b()

        undo.append(back)
        if op.id is None:
            st.last_trade_id += 1
            trade_id = st.last_trade_id
        else:
            trade_id = op.id
            st.last_trade_id = max(st.last_trade_id, op.id)
        price_s, size_s = mk.price(op.price), mk.size(op.size)
        trade = TradeData(trade_id, price_s, size_s, op.side, op.ts)
        items: list[Item] = [(st.trades_channel, _encode(trade), None)]
        st.stats.add(op.ts, op.price, op.size)
        items.append(self._ticker_item(st))
        # the intervals' candles share most of their prices: each is formatted once
        prices = {op.price: price_s}

        def fmt(units: int) -> str:
            text = prices.get(units)
            if text is None:
                text = prices[units] = mk.price(units)
            return text

        for channel, series in zip(st.candle_channels, st.candles, strict=True):
            c = series.add(op.ts, op.price, op.size)
            candle = CandleData(
                series.interval,
                c.start,
                fmt(c.open),
                fmt(c.high),
                fmt(c.low),
                fmt(c.close),
                mk.size(c.volume),
                c.trades,
            )
            raw = _encode(candle)
            items.append((channel, raw, raw))
        return items

    def _ticker_item(self, st: MarketState) -> Item:
        mk, stats = st.market, st.stats
        s = stats.stats()
        bid, ask = st.book.best_bid(), st.book.best_ask()
        last = stats.last_price
        change = pct = None
        if last is not None and s.open is not None:
            change = mk.price(last - s.open)
            ratio = Decimal(last - s.open) * 100 / Decimal(s.open)
            rounded = ratio.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
            pct = str(rounded) if rounded else "0.00"  # never "-0.00"

        def opt(units: int | None, fmt: Callable[[int], str]) -> str | None:
            return None if units is None else fmt(units)

        ticker = TickerData(
            last=opt(last, mk.price),
            last_size=opt(stats.last_size, mk.size),
            best_bid=None if bid is None else mk.price(bid[0]),
            best_bid_size=None if bid is None else mk.size(bid[1]),
            best_ask=None if ask is None else mk.price(ask[0]),
            best_ask_size=None if ask is None else mk.size(ask[1]),
            open_24h=opt(s.open, mk.price),
            high_24h=opt(s.high, mk.price),
            low_24h=opt(s.low, mk.price),
            volume_24h=mk.size(s.volume),
            quote_volume_24h=format_scaled(s.quote_volume, mk.price_places + mk.size_places),
            change_24h=change,
            change_pct_24h=pct,
            ts=self.clock(),
        )
        raw = _encode(ticker)
        st.ticker_unbatched = raw
        return (st.ticker_channel, raw, raw)

    async def _emit(self, items: Sequence[Item]) -> list[Publication]:
        """Everything one call produced, in one engine call (all or nothing)."""
        if not items:
            return []
        return await self.engine.publish_many(items)

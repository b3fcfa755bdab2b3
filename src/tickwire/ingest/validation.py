"""Validation: the gateway's operations built from untrusted input, each field checked
against the market registry (prices and sizes on their increments, ids, timestamps), with
an :class:`IngestError` naming the field for anything refused. Nothing here reads or
changes state."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from tickwire.ingest.ops import (
    MAX_ID_LENGTH,
    MAX_INT_ID,
    MIN_TS_MS,
    ORDER_STATES,
    ORDER_TYPES,
    SIDES,
    BookOp,
    GatewaySettings,
    IngestError,
    OrderOp,
    SentimentOp,
    TradeOp,
    UserTradeOp,
    field_path,
)
from tickwire.model.book import Level
from tickwire.model.channels import ChannelError, parse_channel
from tickwire.model.decimals import DecimalError, format_scaled
from tickwire.model.markets import Market, MarketError, MarketRegistry
from tickwire.model.payloads import (
    OrderData,
    UserTradeData,
)


class OpBuilder:
    """The gateway's static validation (a mixin of :class:`~tickwire.ingest.gateway.Gateway`)."""

    markets: MarketRegistry
    settings: GatewaySettings
    clock: Callable[[], int]

    def market(self, market_id: str, *, where: str = "") -> Market:
        """The market named ``market_id``; ``unknown_market`` otherwise."""
        try:
            return self.markets.require(market_id)
        except MarketError as exc:
            raise IngestError(exc.code, exc.message, field=field_path(where, "market")) from None

    def _price(self, market: Market, text: object, where: str) -> int:
        try:
            return market.parse_price(text)  # type: ignore[arg-type]
        except DecimalError as exc:
            raise IngestError(exc.code, f"{where}: {exc.message}", field=where) from None

    def _size(self, market: Market, text: object, where: str, *, positive: bool = False) -> int:
        try:
            units = market.parse_size(text)  # type: ignore[arg-type]
        except DecimalError as exc:
            raise IngestError(exc.code, f"{where}: {exc.message}", field=where) from None
        if positive and units == 0:
            raise IngestError("bad_size", f"{where}: size must be positive", field=where)
        return units

    def _ts(self, ts: int | None, where: str) -> int:
        now = self.clock()
        if ts is None:
            return now
        if isinstance(ts, bool) or not isinstance(ts, int) or not MIN_TS_MS <= ts <= MAX_INT_ID:
            raise IngestError(
                "bad_timestamp", f"{where}: must be UNIX milliseconds from 2000 on", field=where
            )
        if ts > now + self.settings.max_future_ms:
            raise IngestError(
                "bad_timestamp", f"{where}: {ts} lies too far in the future", field=where
            )
        return ts

    @staticmethod
    def _ident(value: object, where: str) -> str:
        if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
            raise IngestError(
                "bad_id",
                f"{where}: must be a string of 1 to {MAX_ID_LENGTH} characters",
                field=where,
            )
        return value

    @staticmethod
    def _choice(value: object, allowed: tuple[str, ...], where: str) -> str:
        if value not in allowed:
            raise IngestError(
                "bad_value", f"{where}: must be one of {', '.join(allowed)}", field=where
            )
        return value

    @staticmethod
    def _user(user_id: object, where: str) -> str:
        try:
            parse_channel(f"user:{user_id}:orders")
        except ChannelError:
            raise IngestError(
                "bad_user_id", f"{where}: malformed user id {user_id!r}", field=where
            ) from None
        return user_id  # type: ignore[return-value]

    def book_op(
        self,
        market_id: str,
        bids: Iterable[Sequence[str]] = (),
        asks: Iterable[Sequence[str]] = (),
        *,
        reset: bool = False,
        where: str = "",
    ) -> BookOp:
        """A book update from ``[price, size]`` string pairs."""
        market = self.market(market_id, where=where)
        sides: list[tuple[Level, ...]] = []
        for name, rows in (("bids", bids), ("asks", asks)):
            levels: list[Level] = []
            for i, row in enumerate(rows):
                at = field_path(where, f"{name}[{i}]")
                if len(row) != 2:
                    raise IngestError("bad_level", f"{at}: expected [price, size]", field=at)
                price = self._price(market, row[0], f"{at}[0]")
                levels.append((price, self._size(market, row[1], f"{at}[1]")))
            sides.append(tuple(levels))
        return BookOp(market, sides[0], sides[1], reset)

    def trade_op(
        self,
        market_id: str,
        price: str,
        size: str,
        side: str,
        *,
        id: int | None = None,
        ts: int | None = None,
        where: str = "",
    ) -> TradeOp:
        """A public trade from strings."""
        market = self.market(market_id, where=where)
        p = self._price(market, price, field_path(where, "price"))
        s = self._size(market, size, field_path(where, "size"), positive=True)
        sd = self._choice(side, SIDES, field_path(where, "side"))
        if id is not None and (
            isinstance(id, bool) or not isinstance(id, int) or not 0 <= id <= MAX_INT_ID
        ):
            raise IngestError(
                "bad_id", "id must be an integer from 0 to 2**63-1", field=field_path(where, "id")
            )
        return TradeOp(market, p, s, sd, self._ts(ts, field_path(where, "ts")), id)  # type: ignore[arg-type]

    def order_op(
        self,
        user_id: str,
        *,
        id: str,
        market: str,
        side: str,
        state: str,
        size: str,
        type: str = "limit",
        price: str | None = None,
        filled: str | None = None,
        avg_price: str | None = None,
        client_id: str | None = None,
        trades_count: int = 0,
        created_at: int | None = None,
        updated_at: int | None = None,
        where: str = "",
    ) -> OrderOp:
        """A private order update; ``remaining`` is computed as size - filled."""
        uid = self._user(user_id, field_path(where, "user_id"))
        mk = self.market(market, where=where)
        order_type = self._choice(type, ORDER_TYPES, field_path(where, "type"))
        if price is None and order_type == "limit":
            raise IngestError(
                "missing_field", "limit orders need a price", field=field_path(where, "price")
            )
        price_u = None if price is None else self._price(mk, price, field_path(where, "price"))
        size_u = self._size(mk, size, field_path(where, "size"), positive=True)
        filled_u = 0 if filled is None else self._size(mk, filled, field_path(where, "filled"))
        if filled_u > size_u:
            raise IngestError(
                "bad_size", "filled must not exceed size", field=field_path(where, "filled")
            )
        avg_u = (
            None
            if avg_price is None
            else self._price(mk, avg_price, field_path(where, "avg_price"))
        )
        if client_id is not None:
            self._ident(client_id, field_path(where, "client_id"))
        if isinstance(trades_count, bool) or not isinstance(trades_count, int) or trades_count < 0:
            raise IngestError(
                "bad_value",
                "trades_count must be a non-negative integer",
                field=field_path(where, "trades_count"),
            )
        created = self._ts(created_at, field_path(where, "created_at"))
        updated = self._ts(updated_at, field_path(where, "updated_at")) if updated_at else created
        order = OrderData(
            id=self._ident(id, field_path(where, "id")),
            market=mk.id,
            side=self._choice(side, SIDES, field_path(where, "side")),  # type: ignore[arg-type]
            type=order_type,  # type: ignore[arg-type]
            state=self._choice(state, ORDER_STATES, field_path(where, "state")),  # type: ignore[arg-type]
            price=None if price_u is None else mk.price(price_u),
            size=mk.size(size_u),
            filled=mk.size(filled_u),
            remaining=mk.size(size_u - filled_u),
            avg_price=None if avg_u is None else mk.price(avg_u),
            client_id=client_id,
            trades_count=trades_count,
            created_at=created,
            updated_at=updated,
        )
        return OrderOp(uid, order)

    def user_trade_op(
        self,
        user_id: str,
        *,
        id: int,
        order_id: str,
        market: str,
        side: str,
        price: str,
        size: str,
        liquidity: str,
        ts: int | None = None,
        where: str = "",
    ) -> UserTradeOp:
        """A private fill; ``total`` is computed as price * size."""
        uid = self._user(user_id, field_path(where, "user_id"))
        mk = self.market(market, where=where)
        if isinstance(id, bool) or not isinstance(id, int) or not 0 <= id <= MAX_INT_ID:
            raise IngestError(
                "bad_id", "id must be an integer from 0 to 2**63-1", field=field_path(where, "id")
            )
        p = self._price(mk, price, field_path(where, "price"))
        s = self._size(mk, size, field_path(where, "size"), positive=True)
        trade = UserTradeData(
            id=id,
            order_id=self._ident(order_id, field_path(where, "order_id")),
            market=mk.id,
            side=self._choice(side, SIDES, field_path(where, "side")),  # type: ignore[arg-type]
            price=mk.price(p),
            size=mk.size(s),
            total=format_scaled(p * s, mk.price_places + mk.size_places),
            liquidity=self._choice(  # type: ignore[arg-type]
                liquidity, ("maker", "taker"), field_path(where, "liquidity")
            ),
            ts=self._ts(ts, field_path(where, "ts")),
        )
        return UserTradeOp(uid, trade)

    def sentiment_op(
        self,
        ticker: str,
        user_id: str,
        sentiment: float,
        user_score: float,
        *,
        ts: int | None = None,
        where: str = "",
    ) -> SentimentOp:
        """A scored message: ``sentiment`` in [-1, 1], ``user_score`` >= 0."""
        try:
            self.markets.require_ticker(ticker)
        except MarketError as exc:
            raise IngestError(exc.code, exc.message, field=field_path(where, "ticker")) from None
        uid = self._ident(user_id, field_path(where, "user_id"))
        for name, value, low, high in (
            ("sentiment", sentiment, -1.0, 1.0),
            ("user_score", user_score, 0.0, math.inf),
        ):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or not low <= value <= high:
                raise IngestError(
                    "out_of_range",
                    f"{name} must be a finite number in [{low}, {high}]",
                    field=field_path(where, name),
                )
        return SentimentOp(
            ticker, uid, float(sentiment), float(user_score), self._ts(ts, field_path(where, "ts"))
        )

    # --- the Python API ---------------------------------------------------------------------

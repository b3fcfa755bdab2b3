"""The body of ``POST /api/v1/publish``: a batch of typed events, and its validation.

``{"idempotency_key": "...", "events": [{"type": "book", ...}, {"type": "trade", ...}]}``.
Prices and sizes are decimal strings; timestamps UNIX milliseconds (default: now).
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from tickwire.ingest.gateway import MAX_INT_ID, MIN_TS_MS, Gateway, IngestError, Op
from tickwire.model import boundedjson

#: Numeric ids are 64-bit: 0 to 2**63 - 1 (what a signed 64-bit column or client holds).
Id64 = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT_ID)]
#: UNIX milliseconds from 2000-01-01 on; the gateway also refuses the far future.
Millis = Annotated[int, msgspec.Meta(ge=MIN_TS_MS, le=MAX_INT_ID)]
#: Counts (``trades_count``) share the id range.
Count = Id64


class BookEvent(msgspec.Struct, tag="book", tag_field="type", forbid_unknown_fields=True):
    """Absolute level sizes (``"0"`` removes); ``reset`` makes the book exactly these."""

    market: str
    bids: list[tuple[str, str]] = []
    asks: list[tuple[str, str]] = []
    reset: bool = False


class TradeEvent(msgspec.Struct, tag="trade", tag_field="type", forbid_unknown_fields=True):
    """A public trade; ``side`` is the taker's."""

    market: str
    price: str
    size: str
    side: str
    id: Id64 | None = None
    ts: Millis | None = None


class OrderEvent(msgspec.Struct, tag="order", tag_field="type", forbid_unknown_fields=True):
    """A private order update for ``user_id`` (``user:<uid>:orders``)."""

    user_id: str
    id: str
    market: str
    side: str
    state: str
    size: str
    #: ``limit`` or ``market`` (published as the order's ``type``).
    order_type: str = "limit"
    price: str | None = None
    filled: str | None = None
    avg_price: str | None = None
    client_id: str | None = None
    trades_count: Count = 0
    created_at: Millis | None = None
    updated_at: Millis | None = None


class UserTradeEvent(
    msgspec.Struct, tag="user_trade", tag_field="type", forbid_unknown_fields=True
):
    """A private fill for ``user_id`` (``user:<uid>:trades``)."""

    user_id: str
    id: Id64
    order_id: str
    market: str
    side: str
    price: str
    size: str
    liquidity: str
    ts: int | None = None


class SentimentEvent(msgspec.Struct, tag="sentiment", tag_field="type", forbid_unknown_fields=True):
    """A scored message about ``ticker``: sentiment in [-1, 1], user_score >= 0."""

    ticker: str
    user_id: str
    sentiment: float
    user_score: float
    ts: Millis | None = None


Event = BookEvent | TradeEvent | OrderEvent | UserTradeEvent | SentimentEvent


class PublishBatch(msgspec.Struct, forbid_unknown_fields=True):
    """The request body."""

    events: list[Event]
    idempotency_key: str | None = None


#: Largest body :func:`decode_batch` decodes when the caller names no limit.
MAX_BODY_BYTES = 1 << 20
_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_INDEX = re.compile(r"^events\[(?P<index>\d+)\]")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")


def decode_batch(body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> PublishBatch:
    """Decode and type-check a body (at most ``max_bytes``, nested at most
    :data:`boundedjson.MAX_DEPTH` deep); raises :class:`IngestError` naming the field."""
    try:
        return boundedjson.decode(body, max_bytes=max_bytes, type=PublishBatch)
    except boundedjson.JSONLimitError as exc:
        if exc.reason == "too_large":
            raise IngestError(
                "body_too_large", f"request body {exc.message}", field="body"
            ) from None
        raise IngestError("bad_json", f"body is {exc.message}") from None
    except msgspec.ValidationError as exc:
        text = str(exc)
        m = _PATH.search(text)
        path = m.group("path") if m else None
        message = text[: m.start()] if m else text
        missing = _MISSING.match(message)
        if missing and path is not None:
            path = f"{path}.{missing.group('name')}" if path else missing.group("name")
        idx = _INDEX.match(path or "")
        raise IngestError(
            "invalid_field",
            f"{path}: {message}" if path else message,
            field=path or None,
            index=int(idx.group("index")) if idx else None,
        ) from None


def to_ops(gateway: Gateway, events: list[Event]) -> list[Op]:
    """Validate each event statically against the registry (markets, precision, ranges)
    and turn it into a gateway operation; errors carry ``index`` and the full field."""
    ops: list[Op] = []
    for i, ev in enumerate(events):
        where = f"events[{i}]"
        try:
            if isinstance(ev, BookEvent):
                ops.append(
                    gateway.book_op(ev.market, ev.bids, ev.asks, reset=ev.reset, where=where)
                )
            elif isinstance(ev, TradeEvent):
                ops.append(
                    gateway.trade_op(
                        ev.market, ev.price, ev.size, ev.side, id=ev.id, ts=ev.ts, where=where
                    )
                )
            elif isinstance(ev, OrderEvent):
                fields = msgspec.structs.asdict(ev)
                user_id = fields.pop("user_id")
                fields["type"] = fields.pop("order_type")
                ops.append(gateway.order_op(user_id, where=where, **fields))
            elif isinstance(ev, UserTradeEvent):
                fields = msgspec.structs.asdict(ev)
                user_id = fields.pop("user_id")
                ops.append(gateway.user_trade_op(user_id, where=where, **fields))
            else:
                ops.append(
                    gateway.sentiment_op(
                        ev.ticker, ev.user_id, ev.sentiment, ev.user_score, ts=ev.ts, where=where
                    )
                )
        except IngestError as exc:
            exc.index = i
            raise
    return ops

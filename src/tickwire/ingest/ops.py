"""The gateway's operations and their refusals: what a source asks the gateway to do
(:class:`BookOp`, :class:`TradeOp`, ...), the limits that apply (:class:`GatewaySettings`)
and the error every refusal raises (:class:`IngestError`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_args

import msgspec

from tickwire.model.book import Level
from tickwire.model.errors import TickwireError
from tickwire.model.markets import Market
from tickwire.model.payloads import (
    LevelRow,
    OrderData,
    OrderState,
    OrderType,
    Side,
    UserTradeData,
)
from tickwire.model.sentiment import SentimentSettings

#: Order states that keep an order open (in the ``user:<uid>:open_orders`` snapshot).
OPEN_STATES = ("pending", "open")

SIDES: tuple[str, ...] = get_args(Side)
ORDER_TYPES: tuple[str, ...] = get_args(OrderType)
ORDER_STATES: tuple[str, ...] = get_args(OrderState)
MAX_ID_LENGTH = 64
#: Numeric ids (trade ids) are 64-bit: 0 to 2**63 - 1.
MAX_INT_ID = 2**63 - 1
#: Earliest timestamp accepted (2000-01-01T00:00:00Z, UNIX milliseconds).
MIN_TS_MS = 946_684_800_000
#: Largest body of one role-gated (``scoped``) publication, passed through as it is.
MAX_SCOPED_BYTES = 64 * 1024


class IngestError(TickwireError, ValueError):
    """Input the gateway refuses; nothing was changed or published.

    ``code`` is stable, ``field`` names the offending field (``bids[2][0]``), ``index``
    the event in a batch.
    """

    def __init__(
        self, code: str, message: str, *, field: str | None = None, index: int | None = None
    ) -> None:
        super().__init__(code, message)
        self.field = field
        self.index = index


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Limits and windows of the gateway (config section ``[ingest]``)."""

    #: Most price levels a book may hold per side; deeper updates are refused.
    book_max_levels: int = 10_000
    #: Levels per side in the ``book:<market>`` snapshot new subscribers start from.
    book_snapshot_depth: int = 1_000
    #: Book publications between stored snapshots (keep it below the engine's history
    #: size, so that history reaches back to the last snapshot).
    book_snapshot_every: int = 100
    #: ...or fewer, once the updates since the last snapshot add up to this many bytes.
    book_snapshot_bytes: int = 65_536
    #: How far (ms) an event's ``ts`` may lie ahead of the server clock.
    max_future_ms: int = 60_000
    #: Milliseconds between ``ticker_batch:<market>`` publications (the latest ticker, when
    #: it changed); checked by :meth:`Gateway.tick`.
    ticker_batch_ms: int = 5_000
    #: Most open orders kept per user for the ``user:<uid>:open_orders`` snapshot (the
    #: oldest are left out beyond it).
    open_orders_max: int = 10_000
    sentiment: SentimentSettings = field(default_factory=SentimentSettings)


# --- operations --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BookOp:
    """Set absolute level sizes (0 removes); with ``reset`` the book becomes exactly these."""

    market: Market
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    reset: bool = False


@dataclass(frozen=True, slots=True)
class TradeOp:
    """A public trade; ``side`` is the taker's. ``id`` None = next id for the market."""

    market: Market
    price: int
    size: int
    side: Side
    ts: int
    id: int | None = None


@dataclass(frozen=True, slots=True)
class OrderOp:
    """A private order update for ``user_id``."""

    user_id: str
    order: OrderData


@dataclass(frozen=True, slots=True)
class UserTradeOp:
    """A private fill for ``user_id``."""

    user_id: str
    trade: UserTradeData


@dataclass(frozen=True, slots=True)
class SentimentOp:
    """One scored message about ``ticker``."""

    ticker: str
    user_id: str
    sentiment: float
    user_score: float
    ts: int


Op = BookOp | TradeOp | OrderOp | UserTradeOp | SentimentOp


class BookView(msgspec.Struct, frozen=True):
    """A book snapshot for ``GET /api/v1/book/<market>``: the levels as of ``seq``."""

    market: str
    epoch: str
    seq: int
    bids: list[LevelRow]
    asks: list[LevelRow]
    checksum: int


def field_path(where: str, name: str) -> str:
    if not where:
        return name
    return f"{where}{name}" if name.startswith("[") else f"{where}.{name}"

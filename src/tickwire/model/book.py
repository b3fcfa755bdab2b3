"""The level-2 order book: absolute-size level updates, a never-crossed state, checksums.

Prices and sizes are integer units at the market's precision (see
:mod:`tickwire.model.decimals`); the book knows nothing of strings until it is rendered.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tickwire.model.errors import TickwireError

#: A price level: ``(price_units, size_units)``.
Level = tuple[int, int]
#: How many levels per side the checksum covers.
CHECKSUM_DEPTH = 10


class BookError(TickwireError, ValueError):
    """An update the book refuses; the book is unchanged. ``code`` is stable."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        side: str | None = None,
        template: str | None = None,
        prices: tuple[int, ...] = (),
    ) -> None:
        super().__init__(code, message)
        self.side = side
        #: ``message`` with ``{}`` where each of ``prices`` (integer units) goes
        self.template = template
        self.prices = prices

    def message_at(self, format_price: Callable[[int], str]) -> str:
        """The message with its prices as decimals (``format_price``: the market's), for
        publishers, who never see integer units."""
        if self.template is None:
            return self.message
        return self.template.format(*(format_price(p) for p in self.prices))


@dataclass(frozen=True, slots=True)
class BookChange:
    """What one :meth:`OrderBook.apply` changed.

    ``bids`` / ``asks`` are the levels whose size differs from before, with their new
    absolute size (0 = removed), bids best (highest) first, asks best (lowest) first.
    ``undo`` restores the previous state (see :meth:`OrderBook.revert`).
    """

    bids: list[Level]
    asks: list[Level]
    undo: list[tuple[bool, int, int]]

    @property
    def empty(self) -> bool:
        """True when the update changed nothing."""
        return not self.bids and not self.asks


class _Side:
    """One side of the book: sizes by price and the prices kept sorted best first, with
    (when the book has a ``render``) each level's rendering kept in the same order."""

    __slots__ = ("keys", "render", "rows", "sign", "sizes")

    def __init__(self, is_bid: bool, render: Callable[[int, int], bytes] | None) -> None:
        self.sizes: dict[int, int] = {}
        # Sorted ascending keys; bids are stored negated so index 0 is always the best.
        self.keys: list[int] = []
        self.sign = -1 if is_bid else 1
        self.render = render
        self.rows: list[bytes] = []

    def set(self, price: int, size: int) -> int:
        """Set the level's absolute size (0 removes); returns the previous size."""
        sizes = self.sizes
        old = sizes.get(price, 0)
        if size == old:
            return old
        key = price * self.sign
        keys = self.keys
        render = self.render
        if size == 0:
            del sizes[price]
            i = bisect_left(keys, key)
            del keys[i]
            if render is not None:
                del self.rows[i]
        elif old == 0:
            i = bisect_left(keys, key)
            keys.insert(i, key)
            sizes[price] = size
            if render is not None:
                self.rows.insert(i, render(price, size))
        else:
            sizes[price] = size
            if render is not None:
                self.rows[bisect_left(keys, key)] = render(price, size)
        return old

    def best(self) -> int | None:
        return self.keys[0] * self.sign if self.keys else None

    def top(self, depth: int | None) -> list[Level]:
        sign, sizes = self.sign, self.sizes
        keys = self.keys if depth is None else self.keys[:depth]
        return [(k * sign, sizes[k * sign]) for k in keys]


class OrderBook:
    """An L2 book that is always sorted and never crossed or locked.

    :meth:`apply` takes absolute sizes per level (size 0 removes the level) for both
    sides at once and either applies all of them or, if the result would be crossed,
    locked or deeper than ``max_levels`` on a side, none of them.

    With ``render(price, size) -> bytes`` the book also keeps every level's rendering,
    in book order, so :meth:`rendered` costs no formatting (only changed levels are
    rendered, when they change).
    """

    def __init__(
        self, max_levels: int = 10_000, render: Callable[[int, int], bytes] | None = None
    ) -> None:
        self.max_levels = max_levels
        self._bids = _Side(True, render)
        self._asks = _Side(False, render)

    def __len__(self) -> int:
        return len(self._bids.sizes) + len(self._asks.sizes)

    @property
    def depth(self) -> tuple[int, int]:
        """Number of (bid, ask) levels."""
        return len(self._bids.sizes), len(self._asks.sizes)

    def best_bid(self) -> Level | None:
        """The highest bid level, or None."""
        price = self._bids.best()
        return None if price is None else (price, self._bids.sizes[price])

    def best_ask(self) -> Level | None:
        """The lowest ask level, or None."""
        price = self._asks.best()
        return None if price is None else (price, self._asks.sizes[price])

    def size_at(self, is_bid: bool, price: int) -> int:
        """The size resting at ``price`` on one side (0 when there is no level)."""
        return (self._bids if is_bid else self._asks).sizes.get(price, 0)

    def bids(self, depth: int | None = None) -> list[Level]:
        """Bid levels, best (highest) first; at most ``depth`` of them."""
        return self._bids.top(depth)

    def asks(self, depth: int | None = None) -> list[Level]:
        """Ask levels, best (lowest) first; at most ``depth`` of them."""
        return self._asks.top(depth)

    def rendered(self, is_bid: bool, depth: int | None = None) -> list[bytes]:
        """The renderings of one side's levels, best first (requires ``render``)."""
        rows = (self._bids if is_bid else self._asks).rows
        return rows if depth is None else rows[:depth]

    def apply(self, bids: Iterable[Level] = (), asks: Iterable[Level] = ()) -> BookChange:
        """Apply absolute level sizes; all or nothing. Raises :class:`BookError`:
        ``negative_size`` / ``bad_price`` for bad levels, ``crossed_book`` when the result
        would be crossed or locked, ``book_too_deep`` past ``max_levels`` on a side."""
        undo: list[tuple[bool, int, int]] = []
        first: dict[tuple[bool, int], int] = {}
        try:
            for is_bid, levels in ((True, bids), (False, asks)):
                side = self._bids if is_bid else self._asks
                for price, size in levels:
                    if price <= 0:
                        raise BookError(
                            "bad_price",
                            f"price {price} must be positive",
                            template="price {} must be positive",
                            prices=(price,),
                        )
                    if size < 0:
                        raise BookError("negative_size", f"size {size} must not be negative")
                    old = side.set(price, size)
                    if old != size:
                        undo.append((is_bid, price, old))
                        first.setdefault((is_bid, price), old)
            self._check()
        except BookError:
            self._undo(undo)
            raise
        changed_bids: list[Level] = []
        changed_asks: list[Level] = []
        for (is_bid, price), old in first.items():
            if is_bid:
                size = self._bids.sizes.get(price, 0)
                if size != old:
                    changed_bids.append((price, size))
            else:
                size = self._asks.sizes.get(price, 0)
                if size != old:
                    changed_asks.append((price, size))
        changed_bids.sort(reverse=True)
        changed_asks.sort()
        return BookChange(changed_bids, changed_asks, undo)

    def _check(self) -> None:
        bid, ask = self._bids.best(), self._asks.best()
        if bid is not None and ask is not None and bid >= ask:
            what = "locked" if bid == ask else "crossed"
            raise BookError(
                "crossed_book",
                f"update leaves the book {what}: best bid {bid} >= best ask {ask}",
                template=f"update leaves the book {what}: best bid {{}} >= best ask {{}}",
                prices=(bid, ask),
            )
        for name, side in (("bids", self._bids), ("asks", self._asks)):
            if len(side.sizes) > self.max_levels:
                raise BookError(
                    "book_too_deep",
                    f"update leaves {len(side.sizes)} {name} levels (at most {self.max_levels})",
                    side=name,
                )

    def _undo(self, undo: Sequence[tuple[bool, int, int]]) -> None:
        for is_bid, price, old in reversed(undo):
            (self._bids if is_bid else self._asks).set(price, old)

    def revert(self, change: BookChange) -> None:
        """Undo ``change``, which must be the latest change still applied."""
        self._undo(change.undo)

    def replace(self, bids: Iterable[Level], asks: Iterable[Level]) -> BookChange:
        """Make the book exactly ``bids`` / ``asks`` (a feed's full snapshot); the
        change lists every level that appeared, changed or disappeared."""
        new_bids = dict(bids)
        new_asks = dict(asks)
        bid_updates = [(p, 0) for p in self._bids.sizes if p not in new_bids]
        ask_updates = [(p, 0) for p in self._asks.sizes if p not in new_asks]
        bid_updates.extend(new_bids.items())
        ask_updates.extend(new_asks.items())
        return self.apply(bid_updates, ask_updates)

    def checksum(self) -> int:
        """CRC32 of the top 10 levels, Kraken's algorithm (see :func:`checksum`)."""
        return checksum(self._bids.top(CHECKSUM_DEPTH), self._asks.top(CHECKSUM_DEPTH))


def checksum(bids: Sequence[Level], asks: Sequence[Level]) -> int:
    """Kraken's book checksum over integer units.

    Kraken concatenates, for the top 10 asks (low to high) then the top 10 bids (high to
    low), each price and size string printed at the market's fixed precision with the
    ``.`` removed and leading zeros stripped, and takes the CRC32. For positive values at
    fixed precision that string is exactly the decimal form of the integer units, so
    this needs no formatting. ``bids`` and ``asks`` are best first.
    """
    parts: list[str] = []
    for price, size in asks[:CHECKSUM_DEPTH]:
        parts.append(str(price))
        parts.append(str(size))
    for price, size in bids[:CHECKSUM_DEPTH]:
        parts.append(str(price))
        parts.append(str(size))
    return zlib.crc32("".join(parts).encode("ascii"))

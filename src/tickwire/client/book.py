"""A local copy of a ``book:<market>`` channel, with exact decimals and verified
checksums.

The client feeds it the channel's snapshot and then every update, in seq order; after
each one it compares its own checksum (Kraken's CRC32 of the top 10 levels, see
docs/market-data.md) with the server's. A mismatch marks the book out of sync and the
client resubscribes for a fresh snapshot (a :class:`~tickwire.client.Resynced` event).
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from tickwire.model.book import CHECKSUM_DEPTH
from tickwire.model.payloads import BookData


class Level(NamedTuple):
    """One price level: exact decimals."""

    price: Decimal
    size: Decimal


class BookMismatch(ValueError):
    """The local checksum differs from the server's, or a level does not parse."""


def _decimal(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        raise BookMismatch(f"{what} {text!r} is not a decimal") from None
    if not value.is_finite() or value < 0:
        raise BookMismatch(f"{what} {text!r} is not a finite non-negative decimal")
    return value


def _digits(text: str) -> str:
    """Kraken's checksum form of a price or size string: no ``.``, no leading zeros."""
    return text.replace(".", "").lstrip("0")


class _Side:
    __slots__ = ("keys", "levels", "sign")

    def __init__(self, is_bid: bool) -> None:
        self.sign = -1 if is_bid else 1
        # price -> (size, price string, size string) as the server printed them
        self.levels: dict[Decimal, tuple[Decimal, str, str]] = {}
        self.keys: list[Decimal] = []  # sorted best first (bids negated)

    def set(self, price_text: str, size_text: str) -> None:
        price = _decimal(price_text, "price")
        size = _decimal(size_text, "size")
        key = price * self.sign
        if size == 0:
            if self.levels.pop(price, None) is not None:
                del self.keys[bisect_left(self.keys, key)]
            return
        if price not in self.levels:
            self.keys.insert(bisect_left(self.keys, key), key)
        self.levels[price] = (size, price_text, size_text)

    def top(self, n: int | None) -> list[Level]:
        keys = self.keys if n is None else self.keys[:n]
        sign, levels = self.sign, self.levels
        return [Level(k * sign, levels[k * sign][0]) for k in keys]

    def strings(self, n: int | None) -> list[tuple[str, str]]:
        keys = self.keys if n is None else self.keys[:n]
        sign, levels = self.sign, self.levels
        return [(levels[k * sign][1], levels[k * sign][2]) for k in keys]

    def clear(self) -> None:
        self.levels.clear()
        self.keys.clear()


class LocalBook:
    """The order book of one ``book:<market>`` channel as of ``seq`` in ``epoch``.

    Prices and sizes are :class:`~decimal.Decimal` (exact, at the server's precision).
    ``synced`` is False before the first snapshot and between a mismatch and the next
    snapshot. ``verified`` counts the checksums that matched, ``mismatches`` the ones
    that did not.
    """

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.epoch: str | None = None
        self.seq: int | None = None
        self.synced = False
        self.verified = 0
        self.mismatches = 0
        self.resyncs = 0
        self._bids = _Side(True)
        self._asks = _Side(False)

    def __repr__(self) -> str:
        return (
            f"LocalBook({self.channel!r}, seq={self.seq}, bids={len(self._bids.keys)}, "
            f"asks={len(self._asks.keys)}, synced={self.synced})"
        )

    # -- reading ---------------------------------------------------------------------------

    @property
    def best_bid(self) -> Level | None:
        """The highest bid, or None."""
        top = self._bids.top(1)
        return top[0] if top else None

    @property
    def best_ask(self) -> Level | None:
        """The lowest ask, or None."""
        top = self._asks.top(1)
        return top[0] if top else None

    @property
    def spread(self) -> Decimal | None:
        """Best ask minus best bid, or None while a side is empty."""
        bid, ask = self.best_bid, self.best_ask
        return None if bid is None or ask is None else ask.price - bid.price

    def depth(self, n: int | None = None) -> tuple[list[Level], list[Level]]:
        """``(bids, asks)``: at most ``n`` levels a side (all when None), best first."""
        return self._bids.top(n), self._asks.top(n)

    def bids(self, n: int | None = None) -> list[Level]:
        """Bid levels, best (highest) first."""
        return self._bids.top(n)

    def asks(self, n: int | None = None) -> list[Level]:
        """Ask levels, best (lowest) first."""
        return self._asks.top(n)

    def rows(self, n: int | None = None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """``(bids, asks)`` as the server's ``[price, size]`` strings, best first (the form
        of ``GET /api/v1/book/<market>``)."""
        return self._bids.strings(n), self._asks.strings(n)

    def checksum(self) -> int:
        """Kraken's CRC32 of the top 10 asks (low to high) then the top 10 bids (high to
        low), each price and size without ``.`` and leading zeros."""
        parts: list[str] = []
        for side in (self._asks, self._bids):
            for price, size in side.strings(CHECKSUM_DEPTH):
                parts.append(_digits(price))
                parts.append(_digits(size))
        return zlib.crc32("".join(parts).encode("ascii"))

    # -- writing (the client calls these) ----------------------------------------------------

    def clear(self) -> None:
        """Forget every level; the book is out of sync until the next snapshot."""
        self._bids.clear()
        self._asks.clear()
        self.synced = False

    def load(self, data: BookData, epoch: str, seq: int) -> None:
        """Replace the book with a snapshot; raises :class:`BookMismatch` (and stays out
        of sync) when a level does not parse or the checksum differs."""
        self.clear()
        self.epoch, self.seq = epoch, seq
        self._apply(data)
        self.synced = True

    def apply(self, data: BookData, epoch: str, seq: int) -> None:
        """Apply one update (absolute sizes; 0 removes a level) and verify its checksum;
        raises :class:`BookMismatch` (the book is then out of sync) on a mismatch."""
        if not self.synced:
            raise BookMismatch(f"{self.channel}: update at seq {seq} before a snapshot")
        self.epoch, self.seq = epoch, seq
        self._apply(data)

    def _apply(self, data: BookData) -> None:
        try:
            for price, size in data.bids:
                self._bids.set(price, size)
            for price, size in data.asks:
                self._asks.set(price, size)
        except BookMismatch:
            self.synced = False
            self.mismatches += 1
            raise
        ours = self.checksum()
        if ours != data.checksum:
            self.synced = False
            self.mismatches += 1
            raise BookMismatch(
                f"{self.channel}: checksum {ours} differs from the server's {data.checksum} "
                f"at seq {self.seq}"
            )
        self.verified += 1

    def copy(self) -> LocalBook:
        """An independent copy (for another thread, or to keep a state)."""
        other = LocalBook(self.channel)
        other.epoch, other.seq, other.synced = self.epoch, self.seq, self.synced
        other.verified, other.mismatches, other.resyncs = (
            self.verified,
            self.mismatches,
            self.resyncs,
        )
        for mine, theirs in ((self._bids, other._bids), (self._asks, other._asks)):
            theirs.levels = dict(mine.levels)
            theirs.keys = list(mine.keys)
        return other

"""The level-2 order book: updates, refusals, checksums, and its invariants (hypothesis)."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickwire.model.book import BookError, Level, OrderBook, checksum
from tickwire.model.decimals import format_scaled


def kraken_reference(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> int:
    """Kraken's algorithm literally, on strings: asks low->high then bids high->low,
    '.' removed, leading zeros stripped, CRC32 as unsigned."""

    def fmt(text: str) -> str:
        return text.replace(".", "").lstrip("0")

    s = "".join(fmt(p) + fmt(q) for p, q in asks[:10])
    s += "".join(fmt(p) + fmt(q) for p, q in bids[:10])
    return zlib.crc32(s.encode()) & 0xFFFFFFFF


def rows(levels: list[Level], pp: int, sp: int) -> list[tuple[str, str]]:
    return [(format_scaled(p, pp), format_scaled(s, sp)) for p, s in levels]


def test_apply_sorts_and_removes() -> None:
    book = OrderBook()
    change = book.apply([(100, 5), (102, 1), (101, 2)], [(105, 1), (104, 3)])
    assert book.bids() == [(102, 1), (101, 2), (100, 5)]
    assert book.asks() == [(104, 3), (105, 1)]
    assert change.bids == [(102, 1), (101, 2), (100, 5)]
    assert change.asks == [(104, 3), (105, 1)]
    change = book.apply([(101, 0), (99, 0)], [(104, 7)])
    assert book.bids() == [(102, 1), (100, 5)]
    assert change.bids == [(101, 0)]  # removing an absent level is no change
    assert change.asks == [(104, 7)]
    assert book.best_bid() == (102, 1) and book.best_ask() == (104, 7)
    assert book.depth == (2, 2)
    assert book.bids(1) == [(102, 1)]
    assert book.apply([(102, 1)], []).empty


def test_duplicate_levels_last_wins() -> None:
    book = OrderBook()
    change = book.apply([(100, 5), (100, 0), (100, 3)], [])
    assert book.bids() == [(100, 3)]
    assert change.bids == [(100, 3)]
    change = book.apply([(100, 9), (100, 3)], [])
    assert change.empty


@pytest.mark.parametrize(
    ("bids", "asks", "word"),
    [([(105, 1)], [], "crossed"), ([(104, 1)], [], "locked"), ([], [(100, 1)], "locked")],
)
def test_crossed_or_locked_refused_and_unchanged(
    bids: list[Level], asks: list[Level], word: str
) -> None:
    book = OrderBook()
    book.apply([(100, 5), (99, 1)], [(104, 3)])
    before = (book.bids(), book.asks(), book.checksum())
    with pytest.raises(BookError, match=word) as info:
        book.apply(bids, asks)
    assert info.value.code == "crossed_book"
    assert (book.bids(), book.asks(), book.checksum()) == before


def test_update_that_moves_both_sides_is_checked_as_a_whole() -> None:
    book = OrderBook()
    book.apply([(100, 5)], [(101, 3)])
    # Moving up: the ask at 101 goes, a bid at 101 appears: crossed only if applied half.
    book.apply([(101, 2)], [(101, 0), (102, 1)])
    assert book.best_bid() == (101, 2) and book.best_ask() == (102, 1)


def test_bad_levels_refused() -> None:
    book = OrderBook()
    book.apply([(100, 5)], [])
    with pytest.raises(BookError) as info:
        book.apply([(99, 1), (98, -1)], [])
    assert info.value.code == "negative_size"
    with pytest.raises(BookError) as info:
        book.apply([(0, 1)], [])
    assert info.value.code == "bad_price"
    assert book.bids() == [(100, 5)]


def test_max_levels() -> None:
    book = OrderBook(max_levels=3)
    book.apply([(1, 1), (2, 1), (3, 1)], [])
    with pytest.raises(BookError) as info:
        book.apply([(4, 1)], [(10, 1)])
    assert info.value.code == "book_too_deep"
    assert book.depth == (3, 0)
    book.apply([(1, 0), (4, 1)], [])  # replacing a level stays within the limit
    assert book.bids() == [(4, 1), (3, 1), (2, 1)]


def test_replace_and_revert() -> None:
    book = OrderBook()
    book.apply([(100, 5), (99, 1)], [(104, 3)])
    change = book.replace([(100, 4), (98, 2)], [(103, 1)])
    assert book.bids() == [(100, 4), (98, 2)] and book.asks() == [(103, 1)]
    assert change.bids == [(100, 4), (99, 0), (98, 2)]
    assert change.asks == [(103, 1), (104, 0)]
    book.revert(change)
    assert book.bids() == [(100, 5), (99, 1)] and book.asks() == [(104, 3)]


def test_checksum_matches_kraken_on_strings() -> None:
    book = OrderBook()
    # BTC-like precision: prices 1 place, sizes 8 places; leading zeros must be stripped.
    book.apply([(452835, 100000), (452830, 10000000)], [(452852, 100000), (452860, 5), (452900, 1)])
    expected = kraken_reference(rows(book.bids(), 1, 8), rows(book.asks(), 1, 8))
    assert book.checksum() == expected
    # The worked string from Kraken's guide: price "45285.2", qty "0.00100000".
    assert kraken_reference([], [("45285.2", "0.00100000")]) == zlib.crc32(b"452852100000")
    assert checksum([], []) == zlib.crc32(b"")


def test_checksum_covers_only_top_ten() -> None:
    book = OrderBook()
    book.apply([(1000 - i, 1) for i in range(15)], [(2000 + i, 1) for i in range(15)])
    before = book.checksum()
    book.apply([(980, 7)], [(2020, 7)])  # 11th+ levels
    assert book.checksum() == before
    book.apply([(995, 7)], [])  # inside the top 10
    assert book.checksum() != before


# --- properties -------------------------------------------------------------------------

prices = st.integers(1, 60)
updates = st.lists(
    st.tuples(
        st.lists(st.tuples(prices, st.integers(0, 5)), max_size=4),
        st.lists(st.tuples(prices, st.integers(0, 5)), max_size=4),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(updates, st.integers(0, 8), st.integers(0, 8))
def test_any_update_sequence_keeps_book_sorted_uncrossed_and_checksum_consistent(
    seq: list[tuple[list[Level], list[Level]]], pp: int, sp: int
) -> None:
    book = OrderBook(render=lambda p, s: f"{p}:{s}".encode())
    model_bids: dict[int, int] = {}
    model_asks: dict[int, int] = {}
    for bids, asks in seq:
        new_bids, new_asks = dict(model_bids), dict(model_asks)
        for p, s in bids:
            new_bids[p] = s
        for p, s in asks:
            new_asks[p] = s
        new_bids = {p: s for p, s in new_bids.items() if s}
        new_asks = {p: s for p, s in new_asks.items() if s}
        crossed = bool(new_bids and new_asks and max(new_bids) >= min(new_asks))
        try:
            change = book.apply(bids, asks)
        except BookError as exc:
            assert crossed and exc.code == "crossed_book"
        else:
            assert not crossed
            # The published change turns the old book into the new one.
            replay = dict(model_bids)
            for p, s in change.bids:
                replay[p] = s
            assert {p: s for p, s in replay.items() if s} == new_bids
            model_bids, model_asks = new_bids, new_asks
        got_bids, got_asks = book.bids(), book.asks()
        assert got_bids == sorted(model_bids.items(), reverse=True)
        assert got_asks == sorted(model_asks.items())
        if got_bids and got_asks:
            assert got_bids[0][0] < got_asks[0][0]
        assert book.rendered(True) == [f"{p}:{s}".encode() for p, s in got_bids]
        assert book.rendered(False, 3) == [f"{p}:{s}".encode() for p, s in got_asks[:3]]
        fresh = OrderBook()
        fresh.apply(book.bids(10), book.asks(10))
        assert fresh.checksum() == book.checksum()
        assert book.checksum() == kraken_reference(rows(got_bids, pp, sp), rows(got_asks, pp, sp))

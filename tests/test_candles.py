"""Candles aggregated from trades."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickwire.model.candles import Candle, CandleError, CandleSeries
from tickwire.model.channels import CANDLE_INTERVALS

T0 = 1_699_920_000_000  # a UTC midnight


def test_open_candle_updates_then_rolls() -> None:
    s = CandleSeries("5m")
    assert s.add(T0 + 1_000, 100, 1) == Candle(T0, 100, 100, 100, 100, 1, 1, T0 + 1_000)
    s.add(T0 + 2_000, 105, 2)
    c = s.add(T0 + 3_000, 95, 3)
    assert (c.open, c.high, c.low, c.close, c.volume, c.trades) == (100, 105, 95, 95, 6, 3)
    c = s.add(T0 + 300_000, 97, 1)  # exactly the next candle's start
    assert (c.start, c.open, c.close, c.volume, c.trades) == (T0 + 300_000, 97, 97, 1, 1)
    # Gaps produce no empty candles: the next trade opens the candle it falls in.
    c = s.add(T0 + 3_600_000 + 5, 90, 1)
    assert c.start == T0 + 3_600_000


def test_late_trade_inside_open_candle_does_not_set_close() -> None:
    s = CandleSeries("1m")
    s.add(T0 + 30_000, 100, 1)
    c = s.add(T0 + 10_000, 80, 1)
    assert (c.close, c.low, c.volume, c.last_ts) == (100, 80, 2, T0 + 30_000)


def test_trade_for_closed_candle_refused() -> None:
    s = CandleSeries("1m")
    s.add(T0 + 60_000, 100, 1)
    with pytest.raises(CandleError) as info:
        s.add(T0 + 59_999, 100, 1)
    assert info.value.code == "trade_out_of_order"
    assert s.current is not None and s.current.trades == 1


def test_unknown_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        CandleSeries("2m")


@given(
    st.lists(
        st.tuples(st.integers(0, 3 * 86_400_000), st.integers(1, 1000), st.integers(1, 50)),
        min_size=1,
        max_size=80,
    )
)
def test_candles_equal_a_grouping_of_the_trades(trades: list[tuple[int, int, int]]) -> None:
    trades.sort(key=lambda t: t[0])
    for interval, seconds in CANDLE_INTERVALS.items():
        s = CandleSeries(interval)
        for ts, price, size in trades:
            c = s.add(T0 + ts, price, size)
        length = seconds * 1000
        last_start = (T0 + trades[-1][0]) // length * length
        group = [t for t in trades if (T0 + t[0]) // length * length == last_start]
        assert c.start == last_start
        assert c.open == group[0][1] and c.close == group[-1][1]
        assert c.high == max(p for _, p, _ in group) and c.low == min(p for _, p, _ in group)
        assert c.volume == sum(q for _, _, q in group) and c.trades == len(group)

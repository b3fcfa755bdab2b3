"""Rolling 24-hour ticker statistics."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tickwire.model.ticker import BUCKET_MS, WINDOW_BUCKETS, Rolling24h, Stats24h

T0 = 1_699_920_000_000


def test_empty() -> None:
    r = Rolling24h()
    assert r.stats() == Stats24h(None, None, None, 0, 0)
    assert r.last_price is None


def test_window_drops_old_minutes() -> None:
    r = Rolling24h()
    r.add(T0, 100, 1)
    r.add(T0 + 59_999, 200, 1)
    r.add(T0 + 60_000, 150, 2)
    assert r.stats() == Stats24h(100, 200, 100, 4, 100 + 200 + 300)
    r.add(T0 + 86_400_000, 120, 1)  # the first minute leaves the window
    assert r.stats() == Stats24h(150, 150, 120, 3, 300 + 120)
    assert (r.last_price, r.last_size, r.last_ts) == (120, 1, T0 + 86_400_000)


@given(
    st.lists(
        st.tuples(st.integers(0, 10), st.integers(1, 10**6), st.integers(1, 10**4)),
        min_size=1,
        max_size=60,
    ),
    st.integers(2, 6),
)
def test_matches_brute_force(steps: list[tuple[int, int, int]], window: int) -> None:
    r = Rolling24h(window_buckets=window)
    trades: list[tuple[int, int, int]] = []
    ts = T0
    for minutes, price, size in steps:
        ts += minutes * BUCKET_MS // 3
        r.add(ts, price, size)
        trades.append((ts, price, size))
        newest = ts - ts % BUCKET_MS
        inside = [t for t in trades if t[0] - t[0] % BUCKET_MS > newest - window * BUCKET_MS]
        assert r.stats() == Stats24h(
            inside[0][1],
            max(p for _, p, _ in inside),
            min(p for _, p, _ in inside),
            sum(q for _, _, q in inside),
            sum(p * q for _, p, q in inside),
        )


def test_default_window_is_a_day() -> None:
    assert WINDOW_BUCKETS * BUCKET_MS == 86_400_000

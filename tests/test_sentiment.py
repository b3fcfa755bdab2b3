"""Sentiment series: incremental tracker vs a straightforward reference computation."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickwire.model.payloads import CrowdSentiment, MarketSentiment, UserSentiment
from tickwire.model.sentiment import (
    MINUTE_MS,
    SECOND_MS,
    RollingWindow,
    SentimentSettings,
    SentimentTracker,
)

T0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS


@dataclass
class Msg:
    ts: int
    sentiment: float
    score: float


Action = tuple[str, int, float, float]  # ("msg", ts, sentiment, score) or ("advance", now, 0, 0)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def z_of(value: float | None, window: list[float], min_std: float) -> float | None:
    if value is None or len(window) < 2:
        return None
    std = statistics.stdev(window)
    return None if std < min_std else (value - statistics.fmean(window)) / std


def reference(actions: list[Action], s: SentimentSettings) -> list[dict[str, object]]:
    """Every point the tracker should have produced, computed from scratch."""
    points: list[dict[str, object]] = []
    for period, horizon, kind in (
        (MINUTE_MS, s.crowd_horizon, "crowd"),
        (SECOND_MS, s.mp_horizon, "mp"),
    ):
        open_: int | None = None
        msgs: dict[int, list[Msg]] = {}
        for action, ts, sent, score in actions:
            p = ts - ts % period
            if action == "msg":
                open_ = p if open_ is None else max(open_, p)
                msgs.setdefault(open_, []).append(Msg(ts, sent, score))
            elif open_ is not None:
                open_ = max(open_, p)
        if open_ is None:
            continue
        first = min(msgs)
        periods = list(range(first, open_, period))  # every closed period
        values: dict[int, float | None] = {}
        zs: dict[int, float | None] = {}
        last = first
        for p in periods:
            if p in msgs:
                last = p

            def in_window(w: int, p: int = p, period: int = period, first: int = first) -> range:
                return range(max(first, p - (w - 1) * period), p + 1, period)

            if kind == "crowd":
                here = msgs.get(p, [])
                values[p] = mean([m.sentiment for m in here])
                zwin = [values[q] for q in in_window(s.crowd_z_window) if values[q] is not None]
                zs[p] = z_of(values[p], zwin, s.min_std)  # type: ignore[arg-type]
                vols = [len(msgs.get(q, [])) for q in in_window(s.volume_ma_window)]
                vol_ma = sum(vols) / len(vols)
                point: dict[str, object] = {
                    "type": "crowd",
                    "ts": p,
                    "crowd_sentiment": values[p],
                    "crowd_sentiment_moving_average": mean(
                        [values[q] for q in in_window(s.crowd_ma_window) if values[q] is not None]  # type: ignore[misc]
                    ),
                    "crowd_sentiment_z_score": zs[p],
                    "crowd_sentiment_z_score_moving_average": mean(
                        [zs[q] for q in in_window(s.crowd_z_ma_window) if zs[q] is not None]  # type: ignore[misc]
                    ),
                    "volume": len(here),
                    "buzz": len(here) / vol_ma if vol_ma else None,
                }
            else:
                trailing = [m for q in in_window(s.mp_window) for m in msgs.get(q, [])]
                weighted = [m for m in trailing if m.score > 0]
                values[p] = (
                    math.fsum(m.score * m.sentiment for m in weighted)
                    / math.fsum(m.score for m in weighted)
                    if weighted
                    else None
                )
                zwin = [values[q] for q in in_window(s.mp_z_window) if values[q] is not None]
                zs[p] = z_of(values[p], zwin, s.min_std)  # type: ignore[arg-type]
                point = {
                    "type": "mp",
                    "ts": p,
                    "mp_sentiment": values[p],
                    "mp_sentiment_moving_average": mean(
                        [values[q] for q in in_window(s.mp_ma_window) if values[q] is not None]  # type: ignore[misc]
                    ),
                    "mp_sentiment_z_score": zs[p],
                    "mp_sentiment_z_score_moving_average": mean(
                        [zs[q] for q in in_window(s.mp_z_ma_window) if zs[q] is not None]  # type: ignore[misc]
                    ),
                }
            if (p - last) // period < horizon:
                points.append(point)
    return points


def run(actions: list[Action], s: SentimentSettings) -> list[dict[str, object]]:
    tracker = SentimentTracker("AAPL", s)
    out: list[dict[str, object]] = []
    for action, ts, sent, score in actions:
        events = tracker.add(ts, "u", sent, score) if action == "msg" else tracker.advance(ts)
        for ev in events:
            if isinstance(ev, UserSentiment):
                continue
            d = msgspec.structs.asdict(ev)
            d["type"] = "crowd" if isinstance(ev, CrowdSentiment) else "mp"
            del d["ticker"]
            out.append(d)
    return out


def close(a: object, b: object) -> bool:
    if a is None or b is None or isinstance(a, str):
        return a == b
    assert isinstance(a, int | float) and isinstance(b, int | float)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def assert_same(got: list[dict[str, object]], want: list[dict[str, object]]) -> None:
    key: Callable[[dict[str, object]], Any] = lambda d: (d["type"], d["ts"])  # noqa: E731
    got_sorted, want_sorted = sorted(got, key=key), sorted(want, key=key)
    assert [key(d) for d in got_sorted] == [key(d) for d in want_sorted]
    for g, w in zip(got_sorted, want_sorted, strict=True):
        for field, value in w.items():
            assert close(g[field], value), (g, w, field)


sentiments = st.one_of(st.floats(-1, 1, allow_nan=False), st.sampled_from([-1.0, 0.0, 0.5, 1.0]))
scores = st.one_of(st.floats(0, 5, allow_nan=False), st.just(0.0), st.just(1.0))
steps = st.one_of(
    st.integers(0, 1500), st.integers(0, 3 * MINUTE_MS), st.sampled_from([0, 1, 999, 60_000])
)
actions_strategy = st.lists(
    st.tuples(st.sampled_from(["msg", "msg", "msg", "advance", "late"]), steps, sentiments, scores),
    max_size=60,
)
windows = st.builds(
    SentimentSettings,
    crowd_ma_window=st.integers(1, 4),
    crowd_z_window=st.integers(1, 5),
    crowd_z_ma_window=st.integers(1, 4),
    volume_ma_window=st.integers(1, 4),
    mp_window=st.integers(1, 5),
    mp_ma_window=st.integers(1, 5),
    mp_z_window=st.integers(1, 8),
    mp_z_ma_window=st.integers(1, 4),
)


def materialize(raw: list[tuple[str, int, float, float]]) -> list[Action]:
    now = T0
    out: list[Action] = []
    for kind, step, sent, score in raw:
        if kind == "late":
            out.append(("msg", max(T0, now - step), sent, score))
        else:
            now += step
            out.append((kind, now, sent, score))
    return out


@settings(max_examples=300, deadline=None)
@given(actions_strategy, windows)
def test_tracker_equals_reference(
    raw: list[tuple[str, int, float, float]], s: SentimentSettings
) -> None:
    actions = materialize(raw)
    assert_same(run(actions, s), reference(actions, s))


def test_tracker_equals_reference_default_windows_long_run() -> None:
    import random

    rng = random.Random(5)
    s = SentimentSettings()
    now = T0
    actions: list[Action] = []
    for _ in range(3000):
        now += rng.choice([0, 50, 400, 1000, 2500])
        actions.append(("msg", now, rng.uniform(-1, 1), rng.choice([0.0, 0.3, 1.0, 2.5])))
    actions.append(("advance", now + 20 * MINUTE_MS, 0.0, 0.0))
    got = run(actions, s)
    assert_same(got, reference(actions, s))
    assert any(d["crowd_sentiment_z_score"] is not None for d in got if d["type"] == "crowd")
    assert any(d["mp_sentiment_z_score"] is not None for d in got if d["type"] == "mp")


def test_points_by_hand() -> None:
    s = SentimentSettings(crowd_ma_window=2, volume_ma_window=2, mp_window=2, mp_ma_window=2)
    tr = SentimentTracker("TSLA", s)
    assert tr.advance(T0) == []  # nothing before the first message
    ev = tr.add(T0 + 100, "a", 0.5, 1.0)
    assert [type(e) for e in ev] == [UserSentiment]
    tr.add(T0 + 200, "b", -0.5, 3.0)
    ev = tr.add(T0 + 1_100, "c", 1.0, 0.0)  # closes second 0
    assert ev[0] == MarketSentiment(T0, "TSLA", -0.25, -0.25, None, None)
    ev = tr.advance(T0 + MINUTE_MS)
    crowd = [e for e in ev if isinstance(e, CrowdSentiment)]
    mps = [e for e in ev if isinstance(e, MarketSentiment)]
    assert len(crowd) == 1 and len(mps) == 59
    assert ev[-1] is crowd[0]  # the minute closes after its last second
    assert crowd[0] == CrowdSentiment(T0, "TSLA", 1.0 / 3, 1.0 / 3, None, None, 3, 1.0)
    # Second 1 had only a zero-score message; its 2 s window still holds second 0.
    assert mps[0].mp_sentiment == -0.25
    assert mps[1].mp_sentiment is None
    ev = tr.advance(T0 + 2 * MINUTE_MS)
    crowd = [e for e in ev if isinstance(e, CrowdSentiment)]
    assert crowd == [CrowdSentiment(T0 + MINUTE_MS, "TSLA", None, 1.0 / 3, None, None, 0, 0.0)]


def test_quiet_ticker_stops_after_horizon_and_resumes() -> None:
    s = SentimentSettings(
        crowd_ma_window=2,
        crowd_z_window=2,
        crowd_z_ma_window=2,
        volume_ma_window=3,
        mp_window=1,
        mp_ma_window=1,
        mp_z_window=2,
        mp_z_ma_window=1,
    )
    tr = SentimentTracker("MSFT", s)
    tr.add(T0, "a", 0.1, 1.0)
    ev = tr.advance(T0 + 10 * MINUTE_MS)
    crowd = [e for e in ev if isinstance(e, CrowdSentiment)]
    mps = [e for e in ev if isinstance(e, MarketSentiment)]
    assert [c.ts for c in crowd] == [T0, T0 + MINUTE_MS, T0 + 2 * MINUTE_MS]
    assert len(mps) == s.mp_horizon == 3
    ev = tr.add(T0 + 20 * MINUTE_MS + 5, "a", 0.3, 1.0)
    assert [type(e) for e in ev] == [UserSentiment]
    ev = tr.advance(T0 + 21 * MINUTE_MS)
    crowd = [e for e in ev if isinstance(e, CrowdSentiment)]
    assert crowd[0].ts == T0 + 20 * MINUTE_MS and crowd[0].volume == 1
    assert crowd[0].buzz == pytest.approx(3.0)  # 1 over a 3-minute average of 1/3


def test_rolling_window_matches_statistics() -> None:
    import random

    rng = random.Random(1)
    w = RollingWindow(7)
    values: list[float | None] = []
    for _ in range(5000):
        v = None if rng.random() < 0.2 else rng.uniform(-1e3, 1e3)
        w.push(v)
        values.append(v)
        window = [x for x in values[-7:] if x is not None]
        assert w.count == len(window)
        if window:
            assert w.mean == pytest.approx(statistics.fmean(window), rel=1e-9, abs=1e-9)
        if len(window) >= 2:
            assert w.std == pytest.approx(statistics.stdev(window), rel=1e-9, abs=1e-9)
        else:
            assert w.std is None


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="mp_window"):
        SentimentSettings(mp_window=0)
    with pytest.raises(ValueError, match="min_std"):
        SentimentSettings(min_std=0.0)

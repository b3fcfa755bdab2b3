"""Sentiment analytics per ticker, computed incrementally from raw scored messages."""

from __future__ import annotations

from dataclasses import dataclass

from tickwire.model.payloads import SentimentData, UserSentiment


@dataclass(frozen=True, slots=True)
class SentimentSettings:
    """Window lengths, in points of each series (minutes for crowd, seconds for mp)."""

    crowd_ma_window: int = 10
    crowd_z_window: int = 60
    crowd_z_ma_window: int = 10
    volume_ma_window: int = 60
    mp_window: int = 60
    mp_ma_window: int = 60
    mp_z_window: int = 300
    mp_z_ma_window: int = 60
    min_std: float = 1e-6


class SentimentTracker:
    """The sentiment series of one ticker."""

    def __init__(self, ticker: str, settings: SentimentSettings | None = None) -> None:
        self.ticker = ticker
        self.settings = settings or SentimentSettings()

    def add(
        self, ts: int, user_id: str, sentiment: float, user_score: float
    ) -> list[SentimentData]:
        """Count one message; returns the points it closed and the message's own event."""
        return [UserSentiment(ts, self.ticker, user_id, sentiment, user_score)]

    def advance(self, now: int) -> list[SentimentData]:
        """Close every period that ended by ``now``; returns their points."""
        return []

"""Publications and stream positions: the unit the engine sequences and the hub fans out."""

from __future__ import annotations

import time

import msgspec


def now_ms() -> int:
    """Server wall-clock time in milliseconds since the UNIX epoch."""
    return time.time_ns() // 1_000_000


class Position(msgspec.Struct, frozen=True):
    """Where a channel's stream stands: ``seq`` within ``epoch``.

    ``seq`` rises by exactly 1 per publication; ``epoch`` changes only when history is lost.
    A channel that has never been published to stands at ``seq`` 0.
    """

    epoch: str
    seq: int


class Publication(msgspec.Struct, frozen=True, gc=False):
    """One message on one channel. ``data`` is JSON, encoded once at publish time."""

    channel: str
    seq: int
    epoch: str
    ts: int
    data: msgspec.Raw

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.seq)


class Snapshot(msgspec.Struct, frozen=True, gc=False):
    """The state of a state channel as of publication ``seq`` in ``epoch``."""

    channel: str
    seq: int
    epoch: str
    ts: int
    data: msgspec.Raw

"""What a dialect gives the hub so it can encode a publication once for all its clients."""

from __future__ import annotations

from typing import Protocol

from tickwire.model.publication import Position, Publication, Snapshot


class WireFormat(Protocol):
    """Renders core events as one dialect's message payloads (without WebSocket framing).

    The hub calls each method once per event and shares the framed bytes between every
    connection of the same format, so a format must not depend on the connection."""

    name: str

    def pub(self, pub: Publication) -> bytes:
        """A live or replayed publication."""

    def snapshot(self, snap: Snapshot) -> bytes:
        """The state of a state channel; publications continue at ``snap.seq + 1``."""

    def reset(self, channel: str, position: Position) -> bytes:
        """The stream restarted (history lost): what follows starts at ``position``."""

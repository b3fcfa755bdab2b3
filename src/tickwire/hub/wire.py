"""What a dialect gives the hub so it can encode a publication once for all its clients."""

from __future__ import annotations

from typing import Protocol

from tickwire.hub.frames import deflate_message
from tickwire.model.publication import Position, Publication, Snapshot


class WireFormat(Protocol):
    """Renders core events as one dialect's message payloads (without WebSocket framing).

    The hub calls each method once per event and shares the framed bytes between every
    connection of the same format, so a format must not depend on the connection."""

    name: str
    #: True when payloads are permessage-deflate compressed (frames get RSV1).
    compressed: bool

    @property
    def base(self) -> WireFormat:
        """The uncompressed format this one compresses (itself when not compressed)."""

    def pub(self, pub: Publication) -> bytes:
        """A live or replayed publication."""

    def snapshot(self, snap: Snapshot) -> bytes:
        """The state of a state channel; publications continue at ``snap.seq + 1``."""

    def reset(self, channel: str, position: Position) -> bytes | None:
        """The stream restarted (history lost): what follows starts at ``position``.
        ``b""``: send nothing (the snapshot that follows tells the client); None: the
        format cannot tell its clients in-band, so the hub closes their connections with
        :data:`~tickwire.hub.connection.CLOSE_STREAM_RESET` (reconnect and resubscribe)."""


class Deflated:
    """``base``'s payloads compressed with permessage-deflate: still encoded (and now
    compressed) once per publication for every connection that negotiated ``wbits``."""

    compressed = True

    def __init__(self, base: WireFormat, wbits: int) -> None:
        self.base = base
        self.wbits = wbits
        self.name = f"{base.name}+deflate{wbits}"

    def pub(self, pub: Publication) -> bytes:
        return deflate_message(self.base.pub(pub), self.wbits)

    def snapshot(self, snap: Snapshot) -> bytes:
        return deflate_message(self.base.snapshot(snap), self.wbits)

    def reset(self, channel: str, position: Position) -> bytes | None:
        payload = self.base.reset(channel, position)
        return deflate_message(payload, self.wbits) if payload else payload


_DEFLATED: dict[tuple[int, int], Deflated] = {}


def deflated(base: WireFormat, wbits: int) -> WireFormat:
    """The one shared compressed twin of ``base`` for window size ``wbits`` (9 to 15)."""
    if not 9 <= wbits <= 15:
        raise ValueError(f"wbits must be 9 to 15, got {wbits}")
    key = (id(base), wbits)
    fmt = _DEFLATED.get(key)
    if fmt is None:
        fmt = _DEFLATED[key] = Deflated(base, wbits)
    return fmt

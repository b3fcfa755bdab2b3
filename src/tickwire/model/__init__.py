"""The data model: channels, publications, order books, aggregations. Pure Python, no I/O."""

from tickwire.model.channels import (
    PRIVATE_KINDS,
    PUBLIC_KINDS,
    STATE_KINDS,
    Channel,
    ChannelError,
    parse_channel,
)
from tickwire.model.publication import Position, Publication, Snapshot, now_ms

__all__ = [
    "PRIVATE_KINDS",
    "PUBLIC_KINDS",
    "STATE_KINDS",
    "Channel",
    "ChannelError",
    "Position",
    "Publication",
    "Snapshot",
    "now_ms",
    "parse_channel",
]

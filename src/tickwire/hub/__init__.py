"""The hub: per-process subscriptions and fan-out of frames encoded once per wire format."""

from tickwire.hub.connection import (
    CLOSE_KEY_REVOKED,
    CLOSE_POLICY,
    CLOSE_REASONS,
    CLOSE_SHUTDOWN,
    CLOSE_SLOW,
    CLOSE_STREAM_RESET,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_UNAUTHORIZED,
    Connection,
    Transport,
)
from tickwire.hub.frames import Framed, Numbered, close_frame, text_frame
from tickwire.hub.hub import Catchup, Hub, HubStats
from tickwire.hub.wire import WireFormat

__all__ = [
    "CLOSE_KEY_REVOKED",
    "CLOSE_POLICY",
    "CLOSE_REASONS",
    "CLOSE_SHUTDOWN",
    "CLOSE_SLOW",
    "CLOSE_STREAM_RESET",
    "CLOSE_TOKEN_EXPIRED",
    "CLOSE_UNAUTHORIZED",
    "Catchup",
    "Connection",
    "Framed",
    "Hub",
    "HubStats",
    "Numbered",
    "Transport",
    "WireFormat",
    "close_frame",
    "text_frame",
]

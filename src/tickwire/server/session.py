"""What every dialect's connection does with the core: authorize, limit, subscribe.

A dialect shell parses its wire format into these calls and renders what they return;
the rules (channel limits, entitlements, which channels exist) live here once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from tickwire.auth import ANONYMOUS, AuthError, Principal, authorize
from tickwire.dialects.errors import ProtocolError
from tickwire.engine.base import EngineError
from tickwire.hub import Catchup, Connection, Hub
from tickwire.model.channels import Channel, parse_channel
from tickwire.model.publication import Position

log = logging.getLogger(__name__)


class RateLimiter:
    """A token bucket: ``rate`` requests per second, bursts of ``burst``."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Session:
    """One client's standing with the core: who it is and what it subscribed to."""

    def __init__(
        self,
        hub: Hub,
        conn: Connection,
        *,
        max_channels: int,
        channel_exists: Callable[[Channel], bool],
        principal: Principal = ANONYMOUS,
    ) -> None:
        self.hub = hub
        self.conn = conn
        self.max_channels = max_channels
        self.channel_exists = channel_exists
        self.principal = principal

    def check(self, channel: Channel, rid: object = None) -> None:
        """Raise :class:`ProtocolError` unless this session may read ``channel``."""
        if not channel.private and not self.channel_exists(channel):
            raise ProtocolError(
                "unknown_channel",
                f"channel {channel.name!r}: unknown symbol {channel.symbol!r}",
                rid,
            )
        denied = authorize(self.principal, channel)
        if denied is not None:
            raise ProtocolError(denied.code, denied.message, rid)

    async def subscribe(
        self, items: list[tuple[Channel, Position | None]], rid: object = None
    ) -> list[Catchup]:
        """Subscribe to every item or to none; the caller renders its reply and then calls
        :meth:`Hub.go_live` for each returned catch-up, without awaiting in between."""
        seen: dict[str, tuple[Channel, Position | None]] = {}
        for channel, since in items:
            self.check(channel, rid)
            seen[channel.name] = (channel, since)
        new = [name for name in seen if name not in self.conn.channels]
        if len(self.conn.channels) + len(new) > self.max_channels:
            raise ProtocolError(
                "too_many_channels",
                f"subscribing to {len(new)} more channels would exceed the limit of "
                f"{self.max_channels} per connection",
                rid,
            )
        try:
            return list(
                await asyncio.gather(
                    *(
                        self.hub.subscribe(self.conn, ch.name, ch.stateful, since)
                        for ch, since in seen.values()
                    )
                )
            )
        except EngineError as exc:
            for name in new:
                self.hub.unsubscribe(self.conn, name)
            # the engine's own message names internal hosts: log it, tell the client less
            log.warning("subscribe failed: %s", exc)
            raise ProtocolError(
                "unavailable", "cannot subscribe now: the data store is unreachable; retry", rid
            ) from None

    def unsubscribe(self, channels: list[Channel]) -> list[str]:
        """Unsubscribe; returns the names that were subscribed."""
        return [ch.name for ch in channels if self.hub.unsubscribe(self.conn, ch.name)]

    def reauthorize(self, principal: Principal) -> list[str]:
        """Switch to ``principal``; drops (and returns) channels it may not read."""
        self.principal = principal
        dropped = []
        for name in sorted(self.conn.channels):
            if authorize(principal, parse_channel(name)) is not None:
                self.hub.unsubscribe(self.conn, name)
                dropped.append(name)
        return dropped


def auth_error(exc: AuthError, rid: object = None) -> ProtocolError:
    return ProtocolError(exc.code, exc.message, rid)

"""Reconnect delays: exponential backoff with full jitter (AWS architecture blog,
"Exponential Backoff And Jitter"): attempt *n* waits a uniformly random time in
``[0, min(maximum, initial * factor**(n-1))]``, so many clients cut at once do not come
back at once."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """How the client retries. ``max_attempts`` None retries for ever; otherwise, after
    that many failed attempts in a row, the client raises
    :class:`~tickwire.client.ConnectError`. Delays are in seconds."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    max_attempts: int | None = None
    #: A connection that stayed up this long resets the attempt count; one that closed
    #: sooner counts as a failed attempt (a server that accepts and then cuts at once
    #: must not be hammered).
    stable_after: float = 5.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.maximum >= self.initial and self.factor >= 1):
            raise ValueError("backoff: need initial > 0, maximum >= initial, factor >= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("backoff: max_attempts must be at least 1 (or None)")

    def cap(self, attempt: int) -> float:
        """The longest wait before attempt ``attempt`` (1-based)."""
        exponent = min(attempt - 1, 64)  # no float overflow for absurd attempt counts
        return min(self.maximum, self.initial * self.factor**exponent)

    def delay(self, attempt: int) -> float:
        """A full-jitter wait before attempt ``attempt``: uniform in ``[0, cap]``."""
        return self.rng.uniform(0.0, self.cap(attempt))

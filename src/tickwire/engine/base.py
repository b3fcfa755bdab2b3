"""The engine interface every implementation satisfies."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from tickwire.model.errors import TickwireError
from tickwire.model.publication import Position, Publication, Snapshot


class EngineError(TickwireError):
    """An engine could not do what was asked; ``code`` is stable (one per class)."""

    #: the code of every error of this class
    CODE = "engine_error"

    def __init__(self, message: str) -> None:
        super().__init__(self.CODE, message)


class EngineUnavailable(EngineError):
    """The engine's backing store cannot be reached; nothing was written."""

    CODE = "engine_unavailable"


@dataclass(frozen=True, slots=True)
class HistorySettings:
    """How much history each channel keeps: at most ``size`` publications, none older
    than ``ttl`` seconds. A channel idle for ``ttl`` with no node subscribed may be
    forgotten (its epoch then changes)."""

    size: int = 1000
    ttl: float = 300.0


class HistoryResult(msgspec.Struct, frozen=True):
    """Answer to "what did I miss since ``since``".

    ``recovered`` is true when ``publications`` are exactly every publication after
    ``since`` up to ``position`` (possibly none). When false, history no longer reaches
    back (or the epoch changed) and ``publications`` is empty: the caller must start
    afresh from a snapshot. ``position`` is where the stream stood when read.
    """

    recovered: bool
    position: Position
    publications: list[Publication]


@dataclass(slots=True)
class EngineStats:
    """What this process published through its engine (read by the metrics endpoint)."""

    #: publications taken by the engine, by channel kind (``trades``, ``book``, ...)
    published: dict[str, int] = field(default_factory=dict)
    #: publish calls the engine did not take (each raised an :class:`EngineError`)
    publish_errors: int = 0

    def count(self, channel: str) -> None:
        kind = channel.partition(":")[0]
        published = self.published
        published[kind] = published.get(kind, 0) + 1


class EngineHandler(Protocol):
    """What a node implements to receive publications from its engine."""

    def on_publication(self, pub: Publication) -> None:
        """A publication on a channel this node subscribed to, in seq order per channel."""

    def on_resync(self) -> None:
        """Delivery may have been interrupted (e.g. a reconnect): check every channel's
        position and recover what was missed."""


class Engine(abc.ABC):
    """Sequences publications per channel, keeps bounded history and state snapshots,
    and delivers publications to the nodes that subscribed to a channel."""

    #: Short name used in metrics and logs.
    name: str = "engine"
    #: Set by each implementation's constructor.
    stats: EngineStats

    @abc.abstractmethod
    async def start(self, handler: EngineHandler) -> None:
        """Connect and start delivering to ``handler``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop delivering and release connections."""

    @abc.abstractmethod
    async def publish(
        self,
        channel: str,
        data: bytes,
        *,
        snapshot: bytes | None = None,
        ts: int | None = None,
    ) -> Publication:
        """Give ``data`` (encoded JSON) the channel's next seq, append it to history,
        store ``snapshot`` (the state as of this publication) for state channels, and
        deliver it to every node subscribed to the channel: all or nothing."""

    async def publish_many(
        self, items: Sequence[tuple[str, bytes, bytes | None]], *, ts: int | None = None
    ) -> list[Publication]:
        """Publish ``(channel, data, snapshot)`` items in order."""
        return [await self.publish(c, d, snapshot=s, ts=ts) for c, d, s in items]

    @abc.abstractmethod
    async def history(
        self, channel: str, since: Position, *, limit: int | None = None
    ) -> HistoryResult:
        """Publications after ``since`` (see :class:`HistoryResult`). With ``limit``,
        a gap larger than ``limit`` answers ``recovered=False``."""

    @abc.abstractmethod
    async def position(self, channel: str) -> Position:
        """Where the channel stands now (creating its epoch if it has none)."""

    @abc.abstractmethod
    async def snapshot(self, channel: str) -> Snapshot | None:
        """The latest state snapshot of a state channel, or None if none was stored."""

    @abc.abstractmethod
    async def request_snapshot(self, channel: str) -> None:
        """Ask the publisher of a state channel to store a fresh snapshot with its next
        publication (a subscriber could not start from the stored one: history no
        longer reaches back to it). The publisher learns it from :meth:`snapshot_wanted`."""

    @abc.abstractmethod
    def snapshot_wanted(self, channel: str) -> bool:
        """True when a fresh snapshot of ``channel`` was asked for and none stored since.
        Answered from this process's memory (no I/O): with Redis, a publisher learns of
        a request made on another node from the reply to its next publication."""

    @abc.abstractmethod
    async def subscribe(self, channels: Iterable[str]) -> None:
        """Start delivering these channels' publications to this node's handler."""

    @abc.abstractmethod
    async def unsubscribe(self, channels: Iterable[str]) -> None:
        """Stop delivering these channels' publications to this node."""

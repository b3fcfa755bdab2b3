"""The per-process hub: who wants which channel, and fan-out of encoded frames.

Each publication is encoded once per wire format and the same framed bytes are queued
on every subscriber of that format; every connection with queued frames is written once
at the end of the loop iteration (:meth:`Hub.mark_dirty` schedules a single flush).
No task or coroutine per recipient.

Delivery per channel is gap-checked: a publication whose seq does not follow the last
one delivered (a lost pub/sub message, an engine reconnect) makes the hub read the
missing publications from history before going on; when history no longer reaches back
or the epoch changed, every subscriber gets a ``reset`` (and a snapshot for state
channels) — never a silent gap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tickwire.engine.base import Engine
from tickwire.hub.batch import UNBOUNDED, Batch
from tickwire.hub.coalesce import WriteCoalescer
from tickwire.hub.connection import (
    CLOSE_SHUTDOWN,
    CLOSE_SLOW,
    CLOSE_STREAM_RESET,
    Connection,
    Transport,
)
from tickwire.hub.frames import text_frame
from tickwire.hub.wire import WireFormat
from tickwire.model.publication import Position, Publication, Snapshot

log = logging.getLogger(__name__)

# The subscriber state machine: everything that changes where one connection stands on
# one channel (``_ChannelState``) happens in the methods named here.
#
#   state      held in              what the connection receives
#   ---------  -------------------  -------------------------------------------------
#   live       groups[fmt]          every publication, encoded once per format
#   pending    pending[conn]        nothing yet: publications buffered until its
#                                   catch-up is sent (a subscribe or a reset under way)
#   awaiting   pending + awaiting   nothing yet: a state channel with no usable
#              _state               snapshot; buffered until a publication brings one
#   ahead      ahead[conn] = seq    nothing: its catch-up (read from the store) got
#                                   ahead of this node's live stream; live after seq
#
#   from          event                                   to           method
#   ------------  --------------------------------------  -----------  -----------------
#   (none), any   subscribe (prior standing -> resume)    pending      subscribe
#   pending       catch-up sent                           live         go_live
#   pending       no snapshot to start from               awaiting     go_live
#   pending       catch-up ahead of the live stream       ahead        go_live
#   awaiting      a publication brings a usable snapshot  live         _send_state
#   ahead         live stream reaches its seq             live         _deliver
#   live, ahead   gap history cannot fill                 pending      _reset (+ reset)
#   pending       the live stream jumped past its catch-  pending      go_live ->
#                 up meanwhile (a reset of the channel)                _restart (+ reset
#                                                                      unless history
#                                                                      fills the hole)
#   ahead         a reset moved the live stream past it   pending      _reset -> _restart
#   pending       its request failed                      prior/none   abandon
#   any           unsubscribe, disconnect, close          (none)       _remove
#
# A subscriber is never dropped from a channel without being told: the client sees a
# reply (subscribed / unsubscribed / error), a reset, or a close code.

#: In ``_ChannelState.resume``: a subscriber that waited for a snapshot, and one that
#: was not subscribed before.
_AWAITING = object()
_NEW = object()


class _Buffer(list[Publication]):
    """Live publications held for one pending subscriber, with their size: they count
    against its connection's byte cap (:meth:`Hub.held_bytes`)."""

    __slots__ = ("nbytes",)

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0


@dataclass(frozen=True, slots=True)
class _Restarting:
    """A subscriber a reset was restarting, with its buffer (in ``resume``)."""

    buffer: _Buffer


#: Publications a state channel's waiting subscribers wait for a usable snapshot before
#: they go on without one (a publisher that stores no snapshots).
STATE_WAIT = 8


#: What a publication's frame adds to its data, as counted against a connection's cap
#: before it is encoded (buffered during a catch-up, or in a replay's budget).
ENVELOPE = 96

#: A catch-up replay may take at most this share of the connection's byte cap (the rest
#: is for live traffic meanwhile); beyond it the client is told ``recovered: false`` (and
#: a state channel starts from a snapshot) rather than being cut as slow on every retry.
REPLAY_SHARE = 0.5

#: Upper bounds (seconds) of the delivery-latency histogram's buckets.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
)  # fmt: skip


@dataclass(slots=True)
class HubStats:
    """Counters read by the metrics endpoint."""

    publications: int = 0
    #: publications fanned out, by how long after their timestamp (publication time)
    #: they were queued for their subscribers' writes of this iteration: one count per
    #: publication (not per delivery); the last bucket is "slower than 5 s"
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    frames_out: int = 0
    bytes_out: int = 0
    writes: int = 0
    #: flushes held back by write coalescing (the process was saturated with writes)
    held_flushes: int = 0
    slow_disconnects: int = 0
    replays: int = 0
    replayed_publications: int = 0
    recoveries_failed: int = 0
    #: recoveries history could serve but that were over the replay budget
    replays_over_budget: int = 0
    resets: int = 0
    gaps_recovered: int = 0


@dataclass(slots=True)
class _ChannelState:
    name: str
    stateful: bool
    ready: asyncio.Future[None]
    position: Position | None = None
    #: live subscribers grouped by wire format
    groups: dict[WireFormat, dict[Connection, None]] = field(default_factory=dict)
    #: subscribers being brought up to date: live publications buffered for each
    pending: dict[Connection, _Buffer] = field(default_factory=dict)
    #: publications that arrived before the channel's position was known
    early: list[Publication] = field(default_factory=list)
    #: set while the channel recovers a gap; publications wait here
    gap_buffer: list[Publication] | None = None
    #: subscribers whose catch-up (read from the engine's store) got ahead of the live
    #: stream this node has delivered (with Redis, pub/sub can trail history): each joins
    #: its group once the live stream reaches the seq it already has
    ahead: dict[Connection, int] = field(default_factory=dict)
    #: subscribers of a state channel that has no snapshot yet (new, or just reset):
    #: held in ``pending`` until the next publication brings one
    awaiting_state: set[Connection] = field(default_factory=set)
    #: subscribers with a subscribe under way: where they stood before (a position,
    #: waiting for a snapshot, being restarted, or new), to go back to if it fails
    #: (:meth:`Hub.abandon`); :meth:`Hub.go_live` ends it
    resume: dict[Connection, object] = field(default_factory=dict)
    #: publications that arrived without a snapshot the waiting subscribers could use
    state_waits: int = 0
    #: this loop iteration's frames by wire format, shared by the live subscribers
    #: (``Batch``); emptied by the hub's flush
    batches: dict[WireFormat, Batch] = field(default_factory=dict)
    #: set while :meth:`Hub._reset` reads where the channel stands now: its position
    #: is about to jump, so a catch-up that ends meanwhile waits in ``ahead``
    resetting: bool = False
    #: subscribers being restarted (by a reset or :meth:`Hub._restart`): the buffer the
    #: restart will start them with, while it is under way
    restarting: dict[Connection, _Buffer] = field(default_factory=dict)
    #: pending subscribers whose buffer a reset made incomplete (the live stream jumped
    #: while they were buffered): the buffer then held; their go_live restarts them
    broken: dict[Connection, _Buffer] = field(default_factory=dict)

    def subscriber_count(self) -> int:
        return sum(len(c) for c in self.groups.values()) + len(self.pending) + len(self.ahead)


@dataclass(frozen=True, slots=True)
class Catchup:
    """What a subscriber must be sent before it goes live (see :meth:`Hub.subscribe`)."""

    channel: str
    position: Position
    recovered: bool | None
    snapshot: Snapshot | None
    replay: list[Publication]


class Hub:
    """Fan-out for one process."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_recover: int = 10_000,
        drain_timeout: float = 5.0,
        max_write_delay: float = 0.005,
        clock: Callable[[], float] = time.perf_counter,
        replay_share: float = REPLAY_SHARE,
    ) -> None:
        """``max_write_delay``: the most (seconds) a saturated hub holds a flush so that
        each write carries more (:mod:`tickwire.hub.coalesce`; 0: never). ``clock``
        times the flushes (a monotonic clock; tests pass their own)."""
        self.engine = engine
        self.max_recover = max_recover
        self.replay_share = replay_share
        self.drain_timeout = drain_timeout
        self.stats = HubStats()
        self.connections: set[Connection] = set()
        self._channels: dict[str, _ChannelState] = {}
        self._dirty: list[Connection] = []
        #: channels with batches open in this iteration
        self._batched: list[_ChannelState] = []
        #: numbered queues already joined in this flush (see Connection._numbered)
        self.joined: dict[tuple[object, ...], tuple[bytes, int]] = {}
        self._flush_scheduled = False
        self._flush_timer: asyncio.TimerHandle | None = None
        self.coalescer = WriteCoalescer(max_write_delay)
        self._clock = clock
        self._membership = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- connections ------------------------------------------------------------------

    def connect(
        self,
        transport: Transport,
        fmt: WireFormat,
        cap: int,
        on_close: Callable[[int, str], None] | None = None,
        *,
        linger: bool = False,
    ) -> Connection:
        """Register a client connection writing ``fmt`` frames to ``transport`` (see
        :class:`Connection` for ``linger``)."""
        conn = Connection(self, transport, fmt, cap, on_close, linger=linger)
        self.connections.add(conn)
        return conn

    def disconnect(self, conn: Connection) -> None:
        """The client went away: forget it (no close frame is sent)."""
        conn.closed = True
        conn.drop_queue()
        self.detach(conn, 0)

    def detach(self, conn: Connection, code: int) -> None:
        """Remove ``conn`` from every channel (called by :meth:`Connection.close`)."""
        if code == CLOSE_SLOW:
            self.stats.slow_disconnects += 1
        self.connections.discard(conn)
        for name in list(conn.channels):
            self._remove(conn, name)
        conn.channels.clear()

    def abort_later(self, transport: Transport) -> None:
        """Abort ``transport`` if it is still open after the drain timeout (a no-op on a
        transport whose close completed)."""
        loop = self._loop or asyncio.get_running_loop()
        loop.call_later(self.drain_timeout, transport.abort)

    # -- writing ------------------------------------------------------------------------

    def mark_dirty(self, conn: Connection) -> None:
        """``conn`` has frames queued: flush it at the end of this loop iteration."""
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        self._flush_scheduled = True
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        hold = self.coalescer.hold()
        if hold > 0:
            self.stats.held_flushes += 1
            self._flush_timer = loop.call_later(hold, self.flush)
        else:
            loop.call_soon(self.flush)

    @property
    def held_until(self) -> float | None:
        """The loop time a held flush is due at (write coalescing), or None."""
        timer = self._flush_timer
        return None if timer is None else timer.when()

    def flush(self) -> None:
        """Write every dirty connection's queued frames, one write each."""
        start = self._clock()
        self._flush_scheduled = False
        if self._flush_timer is not None:  # called early (a drain): the timer is moot
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._batched:  # the iteration's batches are complete: later frames start new ones
            for st in self._batched:
                st.batches.clear()
            self._batched = []
        dirty = self._dirty
        self._dirty = []
        written = 0
        writes = 0
        for conn in dirty:
            try:
                n = conn.flush()
            except Exception:  # a bug of ours or a transport's: the others still get theirs
                log.exception("flush of connection %d failed; closing it", conn.id)
                conn.dirty = False
                self.disconnect(conn)
                conn.transport.abort()
                continue
            if n:
                written += n
                writes += 1
        self.stats.bytes_out += written
        self.stats.writes += writes
        if self.joined:
            self.joined.clear()
        if writes:
            self.coalescer.flushed(start, self._clock() - start)

    def send(self, conn: Connection, payload: bytes) -> None:
        """Queue one dialect message (a reply, an error) for one connection."""
        frame = text_frame(payload)
        self.stats.frames_out += 1
        conn.push(frame)

    def broadcast(self, payload: bytes, fmt: WireFormat | None = None) -> int:
        """Queue the same (uncompressed) message on every connection of ``fmt`` (or its
        compressed twins), or on every connection when ``fmt`` is None."""
        frame = text_frame(payload)
        n = 0
        for conn in list(self.connections):
            if fmt is None or conn.fmt.base is fmt:
                conn.push(frame)
                n += 1
        self.stats.frames_out += n
        return n

    def held_bytes(self, conn: Connection) -> int:
        """Bytes held for ``conn``: its queue, its transport's unsent buffer, and the
        publications buffered for its catch-ups (never more than its cap)."""
        held = conn.queued + conn.backlog
        for name in conn.channels:
            st = self._channels.get(name)
            if st is not None:
                buffer = st.pending.get(conn)
                if buffer is not None:
                    held += buffer.nbytes
        return held

    # -- engine handler -------------------------------------------------------------------

    def on_publication(self, pub: Publication) -> None:
        """From the engine: deliver in seq order, recovering any gap first."""
        st = self._channels.get(pub.channel)
        if st is None:
            return
        pos = st.position
        if pos is None:
            st.early.append(pub)
            return
        if st.gap_buffer is not None:
            st.gap_buffer.append(pub)
            return
        if pub.epoch == pos.epoch:
            if pub.seq == pos.seq + 1:
                self._deliver(st, pub)
                return
            if pub.seq <= pos.seq:
                return  # already delivered
        self._start_gap_recovery(st, pub)

    def on_resync(self) -> None:
        """From the engine: delivery may have been interrupted; check every channel."""
        for st in list(self._channels.values()):
            if st.position is not None and st.gap_buffer is None:
                st.gap_buffer = []
                self._spawn(self._recover_gap(st))

    def _deliver(self, st: _ChannelState, pub: Publication) -> None:
        st.position = Position(pub.epoch, pub.seq)
        stats = self.stats
        stats.publications += 1
        if st.groups:  # once per publication, not per delivery
            latency = time.time() - pub.ts / 1000
            if latency < 0.0:
                latency = 0.0
            stats.latency_counts[bisect_left(LATENCY_BUCKETS, latency)] += 1
            stats.latency_sum += latency
        # one frame per format, added to the format's batch of this iteration: the
        # subscribers hold slices of it (attached once per iteration, not per frame)
        for fmt, conns in tuple(st.groups.items()):
            frame = text_frame(fmt.pub(pub), fmt.compressed)
            batch = st.batches.get(fmt)
            if batch is None:
                if len(conns) == 1:
                    # a lone subscriber shares its frames with nobody: queued as its own
                    # (the same order, cap and numbering), no batch to build and join
                    stats.frames_out += 1
                    next(iter(conns)).push(frame)  # (a cut over its cap leaves the group)
                    continue
                batch = st.batches[fmt] = self._open_batch(st, conns)
            elif batch.detached:
                self._reattach(batch, conns)
            stats.frames_out += len(conns)
            if batch.append(frame) > batch.limit:
                self._cut_slow(batch)
        if st.pending:
            size = len(pub.data) + ENVELOPE
            for conn, buffered in tuple(st.pending.items()):
                buffered.append(pub)
                buffered.nbytes += size
                if self.held_bytes(conn) > conn.cap:  # as if it had been queued
                    conn.close(CLOSE_SLOW, drop=True)
        if st.awaiting_state:
            held = {conn: st.pending[conn] for conn in st.awaiting_state if conn in st.pending}
            st.awaiting_state = set()
            self._spawn(self._send_state(st, held))
        if st.ahead:
            caught_up = [conn for conn, last in st.ahead.items() if last <= pub.seq]
            for conn in caught_up:  # they had this one already: live from the next
                last = st.ahead.pop(conn)
                if last == pub.seq:
                    self._join(st, conn)
                else:  # the live stream passed it without it (cannot happen seq by seq)
                    self._restart(st, conn, Position(pub.epoch, last))

    def _open_batch(self, st: _ChannelState, group: dict[Connection, None]) -> Batch:
        """A new batch for ``group``, every member attached from its first frame:
        :meth:`Connection.attach` for each, inlined (this runs once per channel, format
        and iteration for every subscriber, so it is the fan-out's per-connection cost)."""
        batch = Batch(list(group))
        self._batched.append(st)
        dirty = self._dirty
        limit = UNBOUNDED
        for conn in batch.attached:
            if conn.open is not None:
                conn.freeze()
            conn.open = batch
            conn.open_start = 0
            conn.queue.append(batch)
            room = conn.cap - conn.own - conn.backlog
            if room < limit:
                limit = room
            if not conn.dirty:
                conn.dirty = True
                dirty.append(conn)
        batch.limit = limit
        if dirty and not self._flush_scheduled:
            self._schedule_flush()
        return batch

    @staticmethod
    def _reattach(batch: Batch, group: dict[Connection, None]) -> None:
        """Give the subscribers whose queue went on without ``batch`` (or that joined
        the group meanwhile) a new slice starting with its next frame."""
        detached, batch.detached = batch.detached, []
        for conn in detached:
            if conn.open is not batch and conn in group:
                conn.attach(batch)

    @staticmethod
    def _cut_slow(batch: Batch) -> None:
        """The batch grew past where an attached subscriber may be over its cap: close
        those that are (before anything is written for them) and recompute the limit."""
        for conn in tuple(batch.attached):
            if conn.open is batch and conn.over_cap(batch):
                conn.close(CLOSE_SLOW, drop=True)
        # only those still taking its frames: the others' caps are watched elsewhere
        batch.attached = attached = [c for c in batch.attached if c.open is batch]
        limit = UNBOUNDED
        for conn in attached:
            room = conn.cap - conn.own - conn.backlog + batch.ends[conn.open_start]
            limit = min(limit, room)
        batch.limit = max(limit, batch.ends[-1])

    def _start_gap_recovery(self, st: _ChannelState, pub: Publication) -> None:
        st.gap_buffer = [pub]
        self._spawn(self._recover_gap(st))

    async def _recover_gap(self, st: _ChannelState) -> None:
        assert st.position is not None
        try:
            res = await self.engine.history(st.name, st.position, limit=self.max_recover)
        except Exception:
            log.exception("gap recovery on %s failed; resetting its subscribers", st.name)
            res = None
        if self._channels.get(st.name) is not st:
            return
        buffered = st.gap_buffer or []
        st.gap_buffer = None
        if res is not None and res.recovered:
            if res.publications:
                self.stats.gaps_recovered += 1
            for pub in res.publications:
                if pub.seq == st.position.seq + 1:
                    self._deliver(st, pub)
            for pub in buffered:
                self.on_publication(pub)
            return
        await self._reset(st)

    async def _reset(self, st: _ChannelState) -> None:
        """History cannot fill the gap: restart every subscriber from the current state."""
        self.stats.resets += 1
        conns = [c for group in st.groups.values() for c in group] + list(st.ahead)
        st.groups.clear()
        st.ahead.clear()
        # each restarted subscriber's buffer: a subscribe meanwhile replaces it (and
        # then starts the subscriber itself)
        buffers: dict[Connection, _Buffer] = {conn: _Buffer() for conn in conns}
        st.pending.update(buffers)
        st.restarting.update(buffers)
        st.gap_buffer = []
        st.resetting = True
        before = st.position
        try:
            catchup = await self._catchup(st, None)
        except Exception:
            log.exception("reset of %s failed; closing its subscribers", st.name)
            for conn in conns:
                self._restarted(st, conn, buffers[conn])
                conn.close(CLOSE_SHUTDOWN, "channel unavailable")
            st.gap_buffer = None
            st.resetting = False
            return
        st.position = position = catchup.position
        buffered, st.gap_buffer = st.gap_buffer, None
        st.resetting = False
        if position != before:  # the live stream jumped: buffers elsewhere miss that
            for conn, buffer in st.pending.items():
                if buffers.get(conn) is not buffer:
                    st.broken[conn] = buffer
        for conn in conns:
            self._restarted(st, conn, buffers[conn])
            if st.pending.get(conn) is buffers[conn]:
                self._send_reset(conn, catchup)
        # subscribers whose own catch-up ended while this reset was under way (they
        # waited in ahead, at a seq of the epoch the reset started from): the position
        # jumped, to where they stand, short of it or past it
        epoch = position.epoch if before is None else before.epoch
        for conn, last in list(st.ahead.items()):
            if epoch == position.epoch and last >= position.seq:
                if last == position.seq:
                    del st.ahead[conn]
                    self._join(st, conn)
                continue  # (still ahead: joins when the live stream reaches it)
            del st.ahead[conn]
            self._restart(st, conn, Position(epoch, last))
        for pub in buffered:
            self.on_publication(pub)

    @staticmethod
    def _restarted(st: _ChannelState, conn: Connection, buffer: _Buffer) -> None:
        if st.restarting.get(conn) is buffer:
            del st.restarting[conn]

    def _send_reset(self, conn: Connection, catchup: Catchup) -> None:
        """Tell ``conn`` its stream restarts at ``catchup``, and send it from there."""
        fmt = conn.fmt
        payload = fmt.reset(catchup.channel, catchup.position)
        if payload is None:  # the format cannot say it: the client resubscribes
            conn.close(CLOSE_STREAM_RESET)
            return
        if payload:
            conn.push(text_frame(payload, fmt.compressed))
        self.go_live(conn, catchup)

    def _restart(self, st: _ChannelState, conn: Connection, sent: Position) -> None:
        """The live stream of ``st`` moved past what ``conn`` was sent (``sent``) without
        it, so it cannot join: hold it (buffering from now on) and catch it up again —
        from history when history still fills the hole (seamless), else with a reset."""
        buffer = _Buffer()
        st.pending[conn] = buffer
        st.restarting[conn] = buffer
        self._spawn(self._rerun(st, conn, sent, buffer))

    async def _rerun(
        self, st: _ChannelState, conn: Connection, sent: Position, buffer: _Buffer
    ) -> None:
        try:
            catchup = await self._catchup(st, sent, self._budget(conn))
        except Exception:
            log.exception("catch-up on %s failed; closing the subscriber", st.name)
            self._restarted(st, conn, buffer)
            if st.pending.get(conn) is buffer:
                conn.close(CLOSE_SHUTDOWN, "channel unavailable")
            return
        self._restarted(st, conn, buffer)
        if self._channels.get(st.name) is not st or st.pending.get(conn) is not buffer:
            return  # unsubscribed, gone, or subscribed again meanwhile (which starts it)
        if catchup.recovered:
            self.go_live(conn, catchup)  # the replay fills the hole: no reset needed
        else:
            self.stats.resets += 1
            self._send_reset(conn, catchup)

    # -- subscriptions --------------------------------------------------------------------

    async def subscribe(
        self, conn: Connection, channel: str, stateful: bool, since: Position | None
    ) -> Catchup:
        """Start subscribing ``conn`` to ``channel``.

        Live publications are buffered for ``conn`` from now on. The returned
        :class:`Catchup` says where the client's stream starts; the caller sends its
        reply, then calls :meth:`go_live` (without awaiting in between), which sends the
        snapshot or replay and the buffered publications, and makes ``conn`` live.
        """
        st = self._channels.get(channel)
        if st is None:
            st = await self._open_channel(channel, stateful)
        else:
            await st.ready
        if conn.closed:
            raise ConnectionError("connection closed")
        prior = self._standing(st, conn)
        self._unlive(st, conn)
        st.pending[conn] = _Buffer()
        # a subscribe under way: what to go back to if it fails (see abandon)
        st.resume[conn] = _NEW if prior is None else prior
        conn.channels.add(channel)
        try:
            catchup = await self._catchup(st, since, self._budget(conn))
        except BaseException:
            self.abandon(conn, channel)
            raise
        if since is not None:
            if catchup.recovered:
                self.stats.replays += 1
                self.stats.replayed_publications += len(catchup.replay)
            else:
                self.stats.recoveries_failed += 1
        return catchup

    def _budget(self, conn: Connection) -> int:
        """Bytes a catch-up replay for ``conn`` may take (see :data:`REPLAY_SHARE`)."""
        return int(conn.cap * self.replay_share)

    def _within(self, pubs: list[Publication], budget: int | None, extra: int = 0) -> bool:
        if budget is None:
            return True
        total = extra
        for pub in pubs:
            total += len(pub.data) + ENVELOPE
            if total > budget:
                self.stats.replays_over_budget += 1
                return False
        return True

    async def _catchup(
        self, st: _ChannelState, since: Position | None, budget: int | None = None
    ) -> Catchup:
        """Where a subscriber starts: a replay after ``since`` when history has it (and
        it fits ``budget`` bytes), else a snapshot (state channels) or the position."""
        engine = self.engine
        if since is not None:
            res = await engine.history(st.name, since, limit=self.max_recover)
            if res.recovered and self._within(res.publications, budget):
                return Catchup(st.name, res.position, True, None, res.publications)
            if not st.stateful:
                return Catchup(st.name, res.position, False, None, [])
        if st.stateful:
            snap = await engine.snapshot(st.name)
            if snap is not None:
                res = await engine.history(st.name, Position(snap.epoch, snap.seq))
                if res.recovered and self._within(res.publications, budget, len(snap.data)):
                    recovered = None if since is None else False
                    return Catchup(st.name, res.position, recovered, snap, res.publications)
            # no snapshot, or history no longer reaches back to it (the snapshot at S
            # then live S+k would be a gap): the subscriber waits for a fresh one
            await engine.request_snapshot(st.name)
        position = await engine.position(st.name)
        return Catchup(st.name, position, None if since is None else False, None, [])

    def go_live(self, conn: Connection, catchup: Catchup, *, need_state: bool = True) -> None:
        """Send ``catchup``'s snapshot and replay, then what was buffered, and make
        ``conn`` a live subscriber. Synchronous: nothing can slip in between.

        A state channel with no snapshot yet (nothing published in this epoch) holds
        ``conn`` until the next publication stores one, so that every subscriber of a
        state channel starts from a snapshot."""
        st = self._channels.get(catchup.channel)
        if st is None or conn.closed or conn not in st.pending:
            return
        st.resume.pop(conn, None)  # its subscribe is done
        if need_state and st.stateful and catchup.snapshot is None and not catchup.recovered:
            st.awaiting_state.add(conn)
            return
        buffered = st.pending.pop(conn)
        fmt = conn.fmt
        last = -1
        if catchup.snapshot is not None:
            conn.push(text_frame(fmt.snapshot(catchup.snapshot), fmt.compressed))
            last = catchup.snapshot.seq
        for pub in catchup.replay:
            if pub.seq > last:
                conn.push(text_frame(fmt.pub(pub), fmt.compressed))
                last = pub.seq
        if last < 0:
            last = catchup.position.seq
        epoch = catchup.position.epoch
        # what was buffered follows on only up to a hole (seqs a reset of the channel
        # skipped while this catch-up was under way were never buffered)
        hole = st.broken.pop(conn, None) is buffered
        for pub in buffered:
            if pub.epoch == epoch and pub.seq > last:
                if pub.seq != last + 1:
                    hole = True
                    break
                conn.push(text_frame(fmt.pub(pub), fmt.compressed))
                last = pub.seq
        if conn.closed:
            return
        live = st.position
        if live is None:
            self._join(st, conn)  # (the channel's position is not known yet)
            return
        if (
            hole
            or (live.epoch == epoch and live.seq > last)
            or (st.resetting and live.epoch != epoch)
        ):
            # the live stream jumped past what was sent, or a reset is about to move
            # it: joining now would be a silent gap. Catch up again from here.
            self._restart(st, conn, Position(epoch, last))
            return
        if st.resetting or live.seq < last:
            # the engine's store is ahead of what this node has delivered live: joining
            # now would send seqs live.seq+1..last twice (or a reset is about to move
            # the live stream: it decides, see _reset)
            st.ahead[conn] = last
            return
        self._join(st, conn)

    def _join(self, st: _ChannelState, conn: Connection) -> None:
        group = st.groups.get(conn.fmt)
        if group is None:
            group = st.groups[conn.fmt] = {}
        group[conn] = None
        batch = st.batches.get(conn.fmt)
        if batch is not None:  # it gets this iteration's frames from the next one on
            batch.detached.append(conn)

    def live_position(self, conn: Connection, channel: str) -> Position | None:
        """Where ``conn``'s stream of ``channel`` stands if it is a live subscriber (it
        has been sent everything up to the channel's position), else None."""
        st = self._channels.get(channel)
        if st is None or conn not in st.groups.get(conn.fmt, ()):
            return None
        return st.position

    def abandon(self, conn: Connection, channel: str) -> None:
        """Undo :meth:`subscribe` (its request failed as a whole): a channel ``conn`` was
        live on before goes on from where it stood, with what was buffered since, as if
        nothing happened; any other leaves no trace."""
        st = self._channels.get(channel)
        prior = None if st is None else st.resume.pop(conn, None)
        if st is None or prior is None:
            return  # no subscribe of it under way: nothing to undo
        if prior is _NEW or conn not in st.pending:
            self.unsubscribe(conn, channel)  # it was new: no trace
            return
        if prior is _AWAITING:
            st.awaiting_state.add(conn)  # back to waiting for a snapshot
            return
        if isinstance(prior, _Restarting):
            if st.restarting.get(conn) is prior.buffer:  # its restart is under way: it goes on
                st.pending[conn] = prior.buffer
                return
            self.unsubscribe(conn, channel)  # its restart passed it by: tell it to recover
            conn.close(CLOSE_SHUTDOWN, "channel reset")
            return
        assert isinstance(prior, Position)
        position = prior
        if st.position is not None and st.position.epoch != position.epoch:
            # reset meanwhile: it cannot go on seamlessly; tell it to recover
            self.unsubscribe(conn, channel)
            conn.close(CLOSE_SHUTDOWN, "channel reset")
            return
        self.go_live(conn, Catchup(channel, position, None, None, []), need_state=False)

    @staticmethod
    def _standing(st: _ChannelState, conn: Connection) -> Position | object | None:
        """How far ``conn`` got on ``st`` before a new subscribe: the position it was
        sent everything up to, :data:`_AWAITING` if it waits for a snapshot, None if
        it is not subscribed yet."""
        if conn in st.groups.get(conn.fmt, ()):
            return st.position
        last = st.ahead.get(conn)
        if last is not None and st.position is not None:
            return Position(st.position.epoch, last)
        if conn in st.awaiting_state:
            return _AWAITING
        buffer = st.pending.get(conn)
        if buffer is not None:
            return _Restarting(buffer)  # being restarted by a reset
        return None

    def unsubscribe(self, conn: Connection, channel: str) -> bool:
        """Stop sending ``channel`` to ``conn``; False if it was not subscribed."""
        if channel not in conn.channels:
            return False
        conn.channels.discard(channel)
        self._remove(conn, channel)
        return True

    async def _send_state(self, st: _ChannelState, held: dict[Connection, _Buffer]) -> None:
        """A publication of a state channel arrived while subscribers wait for a snapshot
        they can start from: start them from the one stored (if it now serves), else wait
        for the next publication. A publisher that never stores one (after
        :data:`STATE_WAIT` publications) lets them go on without."""
        try:
            catchup = await self._catchup(st, None)
        except Exception:
            log.exception("snapshot of %s unavailable; closing its waiting subscribers", st.name)
            for conn in held:
                conn.close(CLOSE_SHUTDOWN, "channel unavailable")
            return
        # a subscriber that subscribed again meanwhile is started by that subscribe
        held = {c: b for c, b in held.items() if st.pending.get(c) is b and not c.closed}
        if catchup.snapshot is None:
            st.state_waits += 1
            if st.state_waits < STATE_WAIT:
                st.awaiting_state.update(held)
                return
            log.warning(
                "%s: no snapshot after %d publications; going on without", st.name, STATE_WAIT
            )
        st.state_waits = 0
        for conn in held:
            self.go_live(conn, catchup, need_state=False)

    def _unlive(self, st: _ChannelState, conn: Connection) -> None:
        st.ahead.pop(conn, None)
        st.awaiting_state.discard(conn)
        if conn.open is not None and conn.open is st.batches.get(conn.fmt):
            conn.freeze()  # what it got before it left stays queued; nothing after
        group = st.groups.get(conn.fmt)
        if group is not None:
            group.pop(conn, None)
            if not group:
                del st.groups[conn.fmt]

    def _remove(self, conn: Connection, channel: str) -> None:
        st = self._channels.get(channel)
        if st is None:
            return
        self._unlive(st, conn)
        st.pending.pop(conn, None)
        st.resume.pop(conn, None)
        st.restarting.pop(conn, None)
        st.broken.pop(conn, None)
        if st.subscriber_count() == 0 and st.ready.done():
            del self._channels[channel]
            self._spawn(self._leave(channel))

    async def _open_channel(self, channel: str, stateful: bool) -> _ChannelState:
        loop = asyncio.get_running_loop()
        self._loop = loop
        st = _ChannelState(channel, stateful, loop.create_future())
        self._channels[channel] = st
        try:
            await self._engine_membership(self.engine.subscribe, channel, raise_errors=True)
            position = await self.engine.position(channel)
        except BaseException as exc:
            if self._channels.get(channel) is st:
                del self._channels[channel]
            st.ready.set_exception(exc)
            st.ready.exception()  # retrieved: waiters re-raise it themselves
            raise
        st.position = position
        early, st.early = st.early, []
        st.ready.set_result(None)
        for pub in early:
            self.on_publication(pub)
        return st

    async def _engine_membership(
        self,
        op: Callable[[list[str]], Awaitable[None]],
        channel: str,
        raise_errors: bool = False,
    ) -> None:
        async with self._membership:
            try:
                await op([channel])
            except Exception:
                if raise_errors:
                    raise
                log.exception("engine membership change for %s failed", channel)

    async def _leave(self, channel: str) -> None:
        """Unsubscribe this node from ``channel`` — unless it has subscribers again by
        the time it is this change's turn (a later subscribe must not be undone)."""
        async with self._membership:
            if channel in self._channels:
                return
            try:
                await self.engine.unsubscribe([channel])
            except Exception:
                log.exception("engine membership change for %s failed", channel)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- introspection --------------------------------------------------------------------

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    def subscription_count(self) -> int:
        return sum(len(c.channels) for c in self.connections)

    def channel_position(self, channel: str) -> Position | None:
        st = self._channels.get(channel)
        return None if st is None else st.position

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except BaseException:
                pass

"""One client connection as the hub sees it: a bounded queue of ready-made frames."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from tickwire.hub.batch import Batch, Slice
from tickwire.hub.frames import NumberedFrame, close_frame

#: A queue's bytes, numbered, and the number after them.
Joined = tuple[bytes, int]

if TYPE_CHECKING:
    from tickwire.hub.hub import Hub
    from tickwire.hub.wire import WireFormat


class Transport(Protocol):
    """The part of :class:`asyncio.WriteTransport` the hub uses."""

    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


#: Close codes every dialect shares. 3000-3499: reconnect (and recover); 3500+: do not.
CLOSE_SHUTDOWN = 3001
CLOSE_TOKEN_EXPIRED = 3005
CLOSE_SLOW = 3008
#: A channel's stream restarted (history lost) and the wire format cannot say so in-band.
CLOSE_STREAM_RESET = 3010
CLOSE_UNAUTHORIZED = 3500
CLOSE_POLICY = 3503
#: The key behind the connection's credential was revoked (``tickwire keys revoke``).
CLOSE_KEY_REVOKED = 3504

CLOSE_REASONS: dict[int, str] = {
    CLOSE_SHUTDOWN: "shutdown",
    CLOSE_TOKEN_EXPIRED: "token expired",
    CLOSE_SLOW: "slow consumer",
    CLOSE_STREAM_RESET: "stream reset: resubscribe",
    CLOSE_UNAUTHORIZED: "unauthorized",
    CLOSE_POLICY: "policy violation",
    CLOSE_KEY_REVOKED: "key revoked",
}


log = logging.getLogger(__name__)

_ids = itertools.count(1)


class Connection:
    """Frames queued for one client, written together once per loop iteration.

    ``cap`` bounds the bytes held for this client (queued here plus the transport's
    unsent buffer); a client over its cap is disconnected with :data:`CLOSE_SLOW`.

    The queue holds the connection's own frames (replies, snapshots, replays) and
    :class:`~tickwire.hub.batch.Slice` s of the channels' batches of this iteration, in
    the order the client gets them. At most one slice is open (growing with its batch) at
    a time: anything else queued freezes it first, so the order of everything queued
    for one connection is the order it was queued in, across channels too.
    """

    __slots__ = (
        "__weakref__",
        "backlog",
        "cap",
        "channels",
        "closed",
        "dirty",
        "fmt",
        "hub",
        "id",
        "linger",
        "number",
        "numbered",
        "on_close",
        "open",
        "open_start",
        "own",
        "queue",
        "transport",
    )

    def __init__(
        self,
        hub: Hub,
        transport: Transport,
        fmt: WireFormat,
        cap: int,
        on_close: Callable[[int, str], None] | None = None,
        *,
        linger: bool = False,
    ) -> None:
        self.hub = hub
        #: names this connection in logs (never its credentials)
        self.id = next(_ids)
        self.transport = transport
        self.fmt = fmt
        self.cap = cap
        #: frames, frozen :class:`Slice` s and (last) the open batch, in order
        self.queue: list[bytes | Slice | Batch] = []
        #: bytes queued: own frames and frozen slices (the open slice's are counted by
        #: its batch, see :attr:`queued`)
        self.own = 0
        #: the batch whose frames this connection takes as they come (the last item of
        #: the queue), from frame ``open_start`` on; None when there is none
        self.open: Batch | None = None
        self.open_start = 0
        #: the transport's unsent bytes as of the last flush (it only shrinks meanwhile)
        self.backlog = 0
        self.dirty = False
        self.closed = False
        self.channels: set[str] = set()
        self.on_close = on_close
        #: the next number of a :class:`~tickwire.hub.frames.Numbered` message
        self.number = 0
        #: the queue holds numbered frames of its own (numbered as it is written, in order)
        self.numbered = False
        #: the shell goes on reading after a close frame and ends the transport itself
        #: once the client answered it (see :meth:`close`)
        self.linger = linger

    @property
    def queued(self) -> int:
        """Bytes queued for this client and not yet handed to its transport."""
        batch = self.open
        return self.own if batch is None else self.own + batch.size(self.open_start)

    def push(self, frame: bytes) -> None:
        """Queue one frame; it is written with the others at the end of this iteration.
        A :class:`~tickwire.hub.frames.NumberedFrame` gets this connection's next number
        when the queue is written (:meth:`flush`), in queue order."""
        if self.closed:
            return
        if self.open is not None:
            self.freeze()
        if frame.__class__ is NumberedFrame:
            self.numbered = True
        self.queue.append(frame)
        self.own += len(frame)
        if self.own + self.backlog > self.cap:
            self.close(CLOSE_SLOW, drop=True)
            return
        if not self.dirty:
            self.dirty = True
            self.hub.mark_dirty(self)

    def attach(self, batch: Batch) -> None:
        """Queue an open slice of ``batch``: this client gets every frame the batch gets
        from now on in this iteration (until something else is queued). The cap is
        watched by the batch: :attr:`Batch.limit` is lowered to where this one is over.
        (The hub attaches a channel's whole group itself, the same way, in one loop.)"""
        if self.closed:
            return
        if self.open is not None:
            self.freeze()
        self.open = batch
        start = self.open_start = len(batch.frames)
        self.queue.append(batch)
        batch.attached.append(self)
        limit = self.cap - self.own - self.backlog + batch.ends[start]
        if limit < batch.limit:
            batch.limit = limit
        if not self.dirty:
            self.dirty = True
            self.hub.mark_dirty(self)

    def freeze(self) -> None:
        """End the open slice where its batch stands: its bytes count as queued here,
        and the batch's next frame starts a new slice (if this one still subscribes)."""
        batch = self.open
        if batch is None:
            return
        self.open = None
        start, end = self.open_start, len(batch.frames)
        self.queue[-1] = Slice(batch, start, end)
        batch.detached.append(self)
        self.own += batch.size(start, end)

    def over_cap(self, batch: Batch) -> bool:
        """True when this connection's open slice of ``batch`` takes it over its cap."""
        held = self.own + self.backlog
        if self.open is batch:
            held += batch.size(self.open_start)
        return held > self.cap

    def flush(self) -> int:
        """Write everything queued in one call; returns the bytes written."""
        self.dirty = False
        queue = self.queue
        if self.closed or not queue:
            self.open = None
            queue.clear()
            return 0
        item = queue[0]
        if len(queue) != 1:
            data = self._joined(queue, self.hub.joined)
        elif type(item) is bytes:  # one frame of its own (a lone subscriber's publication)
            data = item
            self.numbered = False
        elif type(item) is Batch:
            if item.numbered or self.open_start:
                data, count = item.join(self.open_start, None, self.number)
                self.number += count
            else:
                data = item.joined()
        else:
            data = self._joined(queue, self.hub.joined)
        self.open = None  # its batch is closed: the flush comes at the end of an iteration
        queue.clear()
        self.own = 0
        transport = self.transport
        if transport.is_closing():  # the client went away: its shell disconnects it
            return 0
        n = len(data)
        if transport.get_write_buffer_size() + n > self.cap:
            self.close(CLOSE_SLOW, drop=True)
            return 0
        transport.write(data)
        self.backlog = transport.get_write_buffer_size()
        return n

    def _joined(
        self, queue: list[bytes | Slice | Batch], joined: dict[tuple[object, ...], Joined]
    ) -> bytes:
        """The queue's bytes, numbered frames with this connection's numbers in order.
        A queue of one slice writes its batch's bytes, joined once for every connection
        at the same place and number; a numbered queue of several items is joined once
        for every connection with the same items at the same number (``joined``, the
        hub's, kept for one flush)."""
        items = queue
        if len(items) == 1:
            item = items[0]
            if isinstance(item, Batch | Slice):
                if isinstance(item, Batch):
                    data, count = item.join(self.open_start, None, self.number)
                else:
                    data, count = item.batch.join(item.start, item.end, self.number)
                self.number += count
                return data
        numbered = self.numbered
        self.numbered = False
        parts: list[bytes] = []
        for item in items:
            if isinstance(item, Batch):
                parts += item.frames[self.open_start :]
                numbered = numbered or item.numbered
            elif isinstance(item, Slice):
                parts += item.batch.frames[item.start : item.end]
                numbered = numbered or item.batch.numbered
            else:
                parts.append(item)
        if not numbered:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        n = self.number
        key = (n, *parts)
        done = joined.get(key)
        if done is None:
            out: list[bytes] = []
            for frame in parts:
                if isinstance(frame, NumberedFrame):
                    out.append(frame.head(n))
                    n += 1
                out.append(frame)
            done = joined[key] = (b"".join(out), n)
        self.number = done[1]
        return done[0]

    def drop_queue(self) -> None:
        """Forget what is queued (the connection is closing)."""
        self.open = None
        self.queue.clear()
        self.own = 0

    def close(self, code: int, reason: str | None = None, *, drop: bool = False) -> None:
        """Send what is queued (unless ``drop``), then a close frame, and close.

        A close frame behind a full buffer reaches the client when it reads again. A
        socket closed while the client is still writing answers with a TCP reset, which
        destroys whatever the client had not read yet (the close frame included): so a
        ``linger`` connection's shell keeps reading (and dropping) the client's input
        until it answers the close frame, and only then closes the transport. Either way
        the hub aborts the transport if it is still open after its drain timeout: a
        client that does not read for that long never hears the code.
        """
        if self.closed:
            return
        self.closed = True
        if drop or not self.queue:
            pending = b""
        else:
            pending = self._joined(self.queue, {})
        self.drop_queue()
        reason = CLOSE_REASONS.get(code, "") if reason is None else reason
        # one line per cut; a drain closes every connection and logs one line itself
        log.log(
            logging.DEBUG if code == CLOSE_SHUTDOWN else logging.INFO,
            "closing connection %d: %d %s",
            self.id,
            code,
            reason,
        )
        self.hub.detach(self, code)
        transport = self.transport
        if not transport.is_closing():
            transport.write(pending + close_frame(code, reason))
            if not self.linger:
                transport.close()
            self.hub.abort_later(transport)
        if self.on_close is not None:
            self.on_close(code, reason)

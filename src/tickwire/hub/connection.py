"""One client connection as the hub sees it: a bounded queue of ready-made frames."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

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
        "queue",
        "queued",
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
        self.queue: list[bytes] = []
        self.queued = 0
        #: the transport's unsent bytes as of the last flush (it only shrinks meanwhile)
        self.backlog = 0
        self.dirty = False
        self.closed = False
        self.channels: set[str] = set()
        self.on_close = on_close
        #: the next number of a :class:`~tickwire.hub.frames.Numbered` message
        self.number = 0
        #: the queue holds numbered frames (numbered as it is written, in order)
        self.numbered = False
        #: the shell goes on reading after a close frame and ends the transport itself
        #: once the client answered it (see :meth:`close`)
        self.linger = linger

    def push(self, frame: bytes) -> None:
        """Queue one frame; it is written with the others at the end of this iteration.
        A :class:`~tickwire.hub.frames.NumberedFrame` gets this connection's next number
        when the queue is written (:meth:`flush`), in queue order."""
        if self.closed:
            return
        if frame.__class__ is NumberedFrame:
            self.numbered = True
        self.queue.append(frame)
        self.queued += len(frame)
        if self.queued + self.backlog > self.cap:
            self.close(CLOSE_SLOW, drop=True)
            return
        if not self.dirty:
            self.dirty = True
            self.hub.mark_dirty(self)

    def flush(self) -> int:
        """Write everything queued in one call; returns the bytes written."""
        self.dirty = False
        queue = self.queue
        if self.closed or not queue:
            queue.clear()
            return 0
        if self.numbered:
            data = self._numbered(queue, self.hub.joined)
        else:
            data = queue[0] if len(queue) == 1 else b"".join(queue)
        queue.clear()
        self.queued = 0
        transport = self.transport
        if transport.get_write_buffer_size() + len(data) > self.cap:
            self.close(CLOSE_SLOW, drop=True)
            return 0
        transport.write(data)
        self.backlog = transport.get_write_buffer_size()
        return len(data)

    def _numbered(self, queue: list[bytes], joined: dict[tuple[object, ...], Joined]) -> bytes:
        """The queue's bytes with this connection's numbers put in front of its numbered
        frames, in order. In a fan-out every subscriber has the same frames queued and
        mostly stands at the same number: ``joined`` (the hub's, for one flush) keeps the
        result by (number, frames), so they share one join."""
        self.numbered = False
        n = self.number
        key = (n, *queue)
        done = joined.get(key)
        if done is None:
            parts: list[bytes] = []
            for frame in queue:
                if frame.__class__ is NumberedFrame:
                    parts.append(frame.head(n))
                    n += 1
                parts.append(frame)
            done = joined[key] = (b"".join(parts), n)
        self.number = done[1]
        return done[0]

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
        elif self.numbered:
            pending = self._numbered(self.queue, {})
        else:
            pending = b"".join(self.queue)
        self.queue.clear()
        self.queued = 0
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

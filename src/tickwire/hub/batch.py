"""A channel's frames of one wire format within one loop iteration, shared by its subscribers.

The hub collects each channel's frames for a wire format in one :class:`Batch` per loop
iteration. A subscriber does not get the frames one by one: its queue holds a
:class:`Slice` of the batch (which grows with every frame while the slice is open), so a
publication costs one append per channel and format, not one per subscriber. When the
queue is written, a connection whose queue is one slice writes the batch's bytes joined
once for every connection at the same place (and, for numbered formats, at the same
number). A channel with one subscriber of a format builds no batch: its frames are
queued as that connection's own (nothing to share; see :meth:`Hub._deliver`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tickwire.hub.frames import NumberedFrame, numbered_template

if TYPE_CHECKING:
    from tickwire.hub.connection import Connection

#: The size a batch never reaches: no attached connection's cap to watch.
UNBOUNDED = 1 << 62


class Batch:
    """The frames of one channel and wire format queued in one loop iteration, in order."""

    __slots__ = (
        "attached",
        "detached",
        "ends",
        "frames",
        "joins",
        "limit",
        "numbered",
        "templates",
        "whole",
        "whole_frames",
    )

    def __init__(self, attached: list[Connection]) -> None:
        self.frames: list[bytes] = []
        #: ``ends[i]``: the bytes of ``frames[:i]`` (so ``ends[-1]`` is the batch's size)
        self.ends: list[int] = [0]
        #: connections that were given an open slice of this batch (those whose
        #: ``open`` is still this batch grow with every frame; the others moved on)
        self.attached = attached
        #: subscribers that get a new slice with the next frame (their queue went on
        #: with other frames, or they joined the channel's group meanwhile)
        self.detached: list[Connection] = []
        #: the size at which some attached connection may go over its cap (a lower
        #: bound: when it is passed, the attached connections are checked one by one)
        self.limit = UNBOUNDED
        self.numbered = False
        #: joined bytes by (start, end, number): subscribers at the same place share one
        self.joins: dict[tuple[int, int, int], tuple[bytes, int]] = {}
        #: numbered frames as one ``%``-template by (start, end, digits): subscribers at
        #: different numbers of as many digits fill in their numbers in one call
        self.templates: dict[tuple[int, int, int], tuple[bytes, int]] = {}
        #: every frame joined (unnumbered), and how many frames that was
        self.whole = b""
        self.whole_frames = 0

    def append(self, frame: bytes) -> int:
        """Add one frame; returns the batch's size."""
        if frame.__class__ is NumberedFrame:
            self.numbered = True
        self.frames.append(frame)
        size = self.ends[-1] + len(frame)
        self.ends.append(size)
        return size

    def joined(self) -> bytes:
        """All frames as one bytes object (an unnumbered batch), joined once."""
        frames = self.frames
        if self.whole_frames != len(frames):
            self.whole = frames[0] if len(frames) == 1 else b"".join(frames)
            self.whole_frames = len(frames)
        return self.whole

    def size(self, start: int, end: int | None = None) -> int:
        """Bytes of ``frames[start:end]``."""
        return self.ends[len(self.frames) if end is None else end] - self.ends[start]

    def join(self, start: int, end: int | None, number: int) -> tuple[bytes, int]:
        """``frames[start:end]`` as one bytes object, the numbered frames numbered from
        ``number``; and how many were numbered. Joined once per (start, end, number)."""
        stop = len(self.frames) if end is None else end
        key = (start, stop, number if self.numbered else 0)
        done = self.joins.get(key)
        if done is None:
            frames = self.frames
            if start or stop < len(frames):
                frames = frames[start:stop]
            if not self.numbered:
                done = (frames[0] if len(frames) == 1 else b"".join(frames), 0)
            else:
                done = self._numbered(start, stop, frames, number)
            self.joins[key] = done
        return done

    def _numbered(
        self, start: int, stop: int, frames: list[bytes], number: int
    ) -> tuple[bytes, int]:
        """``frames`` numbered from ``number``. Where the numbers all have as many
        digits (nearly always), one ``%`` of the batch's template for that many digits,
        in C, however many frames; where they cross a power of ten, frame by frame."""
        digits = len(str(number))
        tkey = (start, stop, digits)
        made = self.templates.get(tkey)
        if made is None:
            made = self.templates[tkey] = numbered_template(frames, digits)
        template, count = made
        last = number + count - 1
        if count and len(str(last)) == digits:
            return template % tuple(range(number, last + 1)), count
        parts: list[bytes] = []
        n = number
        for frame in frames:
            if isinstance(frame, NumberedFrame):
                parts.append(frame.head(n))
                n += 1
            parts.append(frame)
        return b"".join(parts), n - number


class Slice:
    """Part of a :class:`Batch` in one connection's queue: ``frames[start:end]``, frozen.
    (An open slice, growing with its batch, is the batch itself as the last item of the
    queue, with its start in the connection's ``open_start``.)"""

    __slots__ = ("batch", "end", "start")

    def __init__(self, batch: Batch, start: int, end: int) -> None:
        self.batch = batch
        self.start = start
        self.end = end

    def frames(self) -> list[bytes]:
        return self.batch.frames[self.start : self.end]

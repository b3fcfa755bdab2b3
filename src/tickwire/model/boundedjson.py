"""Decoding JSON that came from the network: bounded in size and in nesting depth.

Every JSON document a client sends (native frames, ``POST /login`` and publish bodies,
token segments, and each dialect's frames as they land) is decoded through
:func:`decode`, so none of them can make a decoder recurse until it fails
(``RecursionError`` from msgspec or the standard library) or hold more than its limit.
A refusal is a :class:`JSONLimitError` whose message names the limit; each route maps it
to its own documented error code (``bad_json``, ``bad_request``, ...).
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Any, Literal, TypeVar, overload

import msgspec

#: Deepest nesting of arrays and objects accepted (``[[1]]`` is depth 2). No message of
#: any protocol we speak comes near it.
MAX_DEPTH = 32

T = TypeVar("T")

Reason = Literal["too_large", "too_deep", "invalid"]

_ESCAPE = re.compile(rb"\\.", re.S)
_STRING = re.compile(rb'"[^"]*"')
_OPEN, _CLOSE = b"[{", b"]}"
# Keep only brackets, then map them to +1 / -1 (as signed bytes) for a C-level running sum.
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = bytes.maketrans(b"[{]}", bytes((1, 1, 255, 255)))


class JSONLimitError(ValueError):
    """A JSON document refused before or while decoding; ``reason`` says why."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message


def depth(data: bytes | str) -> int:
    """The deepest nesting of arrays and objects in ``data`` (brackets inside strings do
    not count). Linear time; ``data`` need not be valid JSON."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    raw = _STRING.sub(b"", _ESCAPE.sub(b"", raw)).translate(None, _NOT_BRACKETS)
    if not raw:
        return 0
    return max(0, max(accumulate(array("b", raw.translate(_STEP)))))


def check(data: bytes | str, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`JSONLimitError` if ``data`` is over ``max_bytes`` or nests deeper than
    ``max_depth``; cheap when it has few brackets (the usual case)."""
    if isinstance(data, str):
        # a character is at most 4 bytes: encode only when that bound is not enough
        size = len(data) if 4 * len(data) <= max_bytes else len(data.encode("utf-8", "replace"))
    else:
        size = len(data)
    if size > max_bytes:
        raise JSONLimitError("too_large", f"larger than {max_bytes} bytes")
    if isinstance(data, str):
        opens = data.count("[") + data.count("{")
    else:
        opens = data.count(b"[") + data.count(b"{")
    if opens > max_depth and depth(data) > max_depth:
        raise JSONLimitError("too_deep", f"nested deeper than {max_depth} levels")


@overload
def decode(data: bytes | str, *, max_bytes: int, max_depth: int = ...) -> Any: ...
@overload
def decode(data: bytes | str, *, max_bytes: int, max_depth: int = ..., type: type[T]) -> T: ...
def decode(
    data: bytes | str, *, max_bytes: int, max_depth: int = MAX_DEPTH, type: Any = Any
) -> Any:
    """Decode ``data`` (as ``type``, default any JSON value) within the limits.

    Raises :class:`JSONLimitError` for a document over a limit or not JSON at all, and lets
    :class:`msgspec.ValidationError` through (valid JSON of the wrong shape: the caller
    names the field).
    """
    check(data, max_bytes=max_bytes, max_depth=max_depth)
    try:
        return msgspec.json.decode(data, type=type)
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError as exc:
        raise JSONLimitError("invalid", f"not valid JSON: {exc}") from None
    except RecursionError:  # pragma: no cover - excluded by check(); kept as a backstop
        raise JSONLimitError("too_deep", f"nested deeper than {max_depth} levels") from None

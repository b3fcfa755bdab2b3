"""One profiled run of an in-process benchmark, its hottest functions printed."""

from __future__ import annotations

import cProfile
import io
import pstats
from collections.abc import Awaitable


async def print_profile(work: Awaitable[object], lines: int) -> None:
    """Await ``work`` under cProfile and print its ``lines`` costliest functions (own
    time)."""
    prof = cProfile.Profile()
    prof.enable()
    await work
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(lines)
    print(out.getvalue())

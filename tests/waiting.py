"""Waiting for a condition that changes when an event is set (no polling, no sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(changed: asyncio.Event, cond: Callable[[], object], timeout: float) -> None:
    """Return once ``cond()`` holds, checking it again each time ``changed`` is set;
    TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not cond():
            changed.clear()
            await changed.wait()

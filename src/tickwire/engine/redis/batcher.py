"""Publications requested in the same event-loop iteration, by any publisher of the node,
travel to Redis together in one pipeline, in the order they were requested; each is its
own run of the publish script (the unit of atomicity)."""

from __future__ import annotations

import asyncio
from typing import Any

from tickwire.engine.base import EngineError
from tickwire.engine.redis.scripts import Call, ScriptRunner

__all__ = ["Batcher"]


def _copy_error(exc: Exception) -> Exception:
    """A fresh exception of the same kind, for each of several waiters."""
    if isinstance(exc, EngineError):
        return type(exc)(str(exc))
    return exc


class Batcher:
    """Collects publish calls until the loop iteration ends, then sends them."""

    def __init__(self, runner: ScriptRunner) -> None:
        self.runner = runner
        self._batch: list[tuple[Call, asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, call: Call) -> asyncio.Future[Any]:
        """Queue one publish call; the future gets the script's reply or an EngineError."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._batch.append((call, fut))
        if len(self._batch) == 1:
            loop.call_soon(self._send)
        return fut

    async def drain(self) -> None:
        """Wait until every call submitted so far has finished (or failed)."""
        while self._batch or self._tasks:
            if self._batch:
                self._send()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _send(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        task = asyncio.ensure_future(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[Call, asyncio.Future[Any]]]) -> None:
        runner = self.runner
        try:
            results = await runner.publish_batch([call for call, _ in batch])
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    if isinstance(exc, Exception):
                        fut.set_exception(_copy_error(exc))
                    else:  # the loop is shutting down: say so, not "cancelled"
                        fut.set_exception(runner.unavailable(exc, "publish interrupted"))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(runner.error(result, "publish"))
            else:
                fut.set_result(result)

"""Shared fixtures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from tickwire.engine import Engine, HistorySettings, MemoryEngine
from tickwire.model import Publication


class Recorder:
    """An engine handler that records what it receives."""

    def __init__(self) -> None:
        self.pubs: list[Publication] = []
        self.resyncs = 0
        self._changed = asyncio.Event()

    def on_publication(self, pub: Publication) -> None:
        self.pubs.append(pub)
        self._changed.set()

    def on_resync(self) -> None:
        self.resyncs += 1
        self._changed.set()

    async def wait(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``cond()`` holds; re-checked whenever something arrives."""
        async with asyncio.timeout(timeout):
            while not cond():
                self._changed.clear()
                await self._changed.wait()


EngineFactory = Callable[[HistorySettings], Engine]


def _memory(settings: HistorySettings) -> Engine:
    return MemoryEngine(settings)


#: Engines the conformance suite runs against: name -> factory. The Redis engine adds itself.
ENGINE_FACTORIES: dict[str, EngineFactory] = {"memory": _memory}


@pytest.fixture(params=sorted(ENGINE_FACTORIES))
def engine_factory(request: pytest.FixtureRequest) -> EngineFactory:
    return ENGINE_FACTORIES[request.param]


@pytest.fixture
async def engine(engine_factory: EngineFactory) -> AsyncIterator[tuple[Engine, Recorder]]:
    eng = engine_factory(HistorySettings(size=50, ttl=60.0))
    rec = Recorder()
    await eng.start(rec)
    try:
        yield eng, rec
    finally:
        await eng.close()

"""Engines: where sequence numbers, history and snapshots live.

One interface (:class:`Engine`), two implementations: ``memory`` (embedded, one process)
and ``redis`` (many nodes). ``tests/test_engine_conformance.py`` runs against both.
"""

from tickwire.engine.base import (
    Engine,
    EngineError,
    EngineHandler,
    EngineStats,
    EngineUnavailable,
    HistoryResult,
    HistorySettings,
)
from tickwire.engine.memory import MemoryEngine

__all__ = [
    "Engine",
    "EngineError",
    "EngineHandler",
    "EngineStats",
    "EngineUnavailable",
    "HistoryResult",
    "HistorySettings",
    "MemoryEngine",
]

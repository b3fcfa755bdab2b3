"""Shared fixtures."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, settings

from tickwire.engine import Engine, HistorySettings, MemoryEngine
from tickwire.engine.redis import RedisEngine, ShardedRedisEngine
from tickwire.model import Publication

from . import logcheck
from .redis_cluster import RedisCluster
from .redis_shards import RedisShards
from .services import REDIS_URL, require

# Hypothesis: bounded in `make test`; TICKWIRE_DEEP=1 is the long fuzzing profile.
settings.register_profile(
    "default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "deep", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("deep" if os.environ.get("TICKWIRE_DEEP") == "1" else "default")

# Before any test module imports the credential makers: see tests/logcheck.py.
logcheck.start()


CHECKOUT = Path(__file__).resolve().parent.parent
#: What a test run may add to the checkout: pytest's and Hypothesis's own caches.
RUN_CACHES = {".pytest_cache/", ".hypothesis/"}


def checkout_entries() -> set[str] | None:
    """``git status --porcelain --ignored`` of the checkout, less caches (None: no git)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--ignored"],
            cwd=CHECKOUT,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {
        line
        for line in out.splitlines()
        if line[3:] not in RUN_CACHES and "__pycache__" not in line
    }


@pytest.fixture(scope="session", autouse=True)
def no_test_writes_into_the_checkout() -> Iterator[None]:
    """Fails the run when a test (or a server it started) left a file in the checkout:
    tests write under tmp_path, and child processes get a key store in memory."""
    before = checkout_entries()
    yield
    after = checkout_entries()
    if before is not None and after is not None:
        assert sorted(after - before) == [], "tests wrote into the checkout"


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


class ScratchRedisEngine(RedisEngine):
    """A Redis engine under a prefix of its own that deletes its keys when closed (tests
    share one Redis with other agents: never FLUSHDB)."""

    async def close(self) -> None:
        await delete_prefix(self)
        await super().close()


async def delete_prefix(eng: RedisEngine) -> None:
    """Delete every key under ``eng``'s prefix (best effort: Redis may be down)."""
    client = eng._redis
    try:
        keys = [k async for k in client.scan_iter(match=f"{eng.prefix}*", count=500)]
        if eng.sharded:  # one slot per command on a cluster
            for k in keys:
                await client.unlink(k)
        elif keys:
            await client.unlink(*keys)
    except Exception:
        pass


class ScratchShardedEngine(ShardedRedisEngine):
    """A sharded engine under a prefix of its own that deletes its keys on every shard
    when closed."""

    async def close(self) -> None:
        for shard in self.shards.values():
            await delete_prefix(shard)
        await super().close()


def redis_prefix() -> str:
    """A key prefix no other test (or agent) uses."""
    return f"twtest:{uuid.uuid4().hex[:12]}:"


def require_redis(url: str = REDIS_URL) -> None:
    parts = urlsplit(url)
    require("Redis", parts.hostname or "127.0.0.1", parts.port or 6379)


def _redis(settings: HistorySettings) -> Engine:
    require_redis()
    return ScratchRedisEngine(REDIS_URL, settings, prefix=redis_prefix())


#: Engines the conformance suite runs against: name -> factory.
ENGINE_FACTORIES: dict[str, EngineFactory] = {"memory": _memory, "redis": _redis}


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One private 3-master Redis Cluster (with a replica each) for the whole session."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_shards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisShards]:
    """Three private redis-servers for the whole session: the sharded engine's shards."""
    shards = RedisShards(tmp_path_factory.mktemp("redis-shards"))
    shards.start()
    try:
        yield shards
    finally:
        shards.stop()


@pytest.fixture(params=[*sorted(ENGINE_FACTORIES), "cluster", "shards"])
def engine_factory(request: pytest.FixtureRequest) -> EngineFactory:
    if request.param == "shards":
        urls = request.getfixturevalue("redis_shards").urls

        def sharded(settings: HistorySettings) -> Engine:
            return ScratchShardedEngine(urls, settings, prefix=redis_prefix())

        return sharded
    if request.param == "cluster":
        url = request.getfixturevalue("redis_cluster").url

        def cluster(settings: HistorySettings) -> Engine:
            return ScratchRedisEngine(url, settings, prefix=redis_prefix())

        return cluster
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


# --- the suite-wide log check (issue 10) -------------------------------------------------

_log_leaks: list[tuple[str, str]] = []


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any log line of it holds a secret or token the suite made."""
    _log_leaks.extend(logcheck.leaks(logcheck.KEEPER.lines, logcheck.remembered()))
    if _log_leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines, secrets = len(logcheck.KEEPER.lines), len(logcheck.remembered())
    if not _log_leaks:
        terminalreporter.write_line(
            f"log check: {lines} distinct log lines hold none of {secrets} secrets and tokens"
        )
        return
    terminalreporter.section("log check: secrets in log lines", red=True)
    for secret, line in _log_leaks:
        shown = line.replace(secret[:24], secret[:4] + "…")
        terminalreporter.write_line(f"{secret[:4]}… in: {shown[:300]}", red=True)

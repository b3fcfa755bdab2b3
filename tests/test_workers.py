"""``tickwire serve --workers N``: a supervisor and N worker processes on one port.

Real processes on the shared Redis (a prefix of their own): clients on either worker see
the same seqs, ``kill -9`` of a worker under a steady stream loses and duplicates nothing
for clients that reconnect with ``since``, the supervisor starts the killed worker again,
and SIGTERM drains every client (3001) before the supervisor exits 0."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tickwire.auth import AuthSettings
from tickwire.engine import EngineUnavailable, HistorySettings
from tickwire.server.config import Config, load_config, worker_count
from tickwire.server.supervisor import READY, Supervisor

from .conftest import Recorder, ScratchRedisEngine, redis_prefix, require_redis
from .services import REDIS_URL
from .waiting import until

TRADES = "trades:BTC-USD"
ENV = {**os.environ, "TICKWIRE_KEY_STORE": ":memory:"}  # no key file in the cwd


class Served:
    """``python -m tickwire serve --workers 2`` on 127.0.0.1, its banner and stderr."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.banner: list[str] = []
        self.stderr: list[str] = []
        self.changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.http = ""

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tickwire", "serve", "--host", "127.0.0.1", "--port", "0"),
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=ENV,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._tasks.append(asyncio.create_task(self._read(self.proc.stderr)))
        async with asyncio.timeout(60):
            while not any("health" in line for line in self.banner):
                line = (await self.proc.stdout.readline()).decode()
                assert line, f"serve exited: {''.join(self.stderr)}"
                self.banner.append(line)
        self._tasks.append(asyncio.create_task(self._read(self.proc.stdout, echo=False)))
        found = re.search(r"http://\S+(?=/healthz)", "".join(self.banner))
        assert found is not None, self.banner
        self.http = found.group(0)

    async def _read(self, stream: asyncio.StreamReader, echo: bool = True) -> None:
        while line := await stream.readline():
            if echo:
                self.stderr.append(line.decode(errors="replace"))
                self.changed.set()

    async def wait_stderr(self, pattern: str) -> None:
        async with asyncio.timeout(30):
            while not any(re.search(pattern, line) for line in self.stderr):
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()  # the workers see their stdin close and exit too
        try:  # the pipes end when the workers, which share them, have exited too
            async with asyncio.timeout(30):
                if self.proc is not None:
                    await self.proc.wait()
                await asyncio.gather(*self._tasks)
        except TimeoutError:
            raise AssertionError("workers still running: " + "".join(self.stderr[-30:])) from None
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def worker_pids(http: str) -> dict[int, int]:
    """Scrape /metrics on new connections until both workers answered: pid by worker."""
    seen: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        async with asyncio.timeout(30):
            while len(seen) < 2:
                async with s.get(http + "/metrics") as resp:
                    body = await resp.text()
                    header = int(resp.headers["X-Tickwire-Worker"])
                found = re.search(r'tickwire_worker\{pid="(\d+)",worker="(\d+)"\} 1', body)
                assert found is not None and int(found.group(2)) == header
                seen[header] = int(found.group(1))
    return seen


class Client:
    """A native client on one worker that records (epoch, seq) of every pub, and on a
    dropped connection resubscribes with ``since`` wherever the port sends it."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url
        self.pubs: list[tuple[str, int]] = []
        self.workers: list[int] = []
        self.replies: list[dict[str, Any]] = []
        self.closes: list[int | None] = []
        self.changed = asyncio.Event()
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, landed: list[int]) -> None:
        """Connect and subscribe (with ``since`` after the first time); ``landed`` gets
        the worker that answered the handshake (the session's trace appends it)."""
        before = len(landed)
        self.ws = await self.session.ws_connect(self.url, autoclose=False, heartbeat=None)
        assert len(landed) == before + 1
        self.workers.append(landed[-1])
        channel: Any = TRADES
        if self.pubs:
            epoch, seq = self.pubs[-1]
            channel = {"channel": TRADES, "since": {"epoch": epoch, "seq": seq}}
        await self.ws.send_json(
            {"id": len(self.replies) + 1, "op": "subscribe", "channels": [channel]}
        )

    async def read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if data.get("type") == "subscribed":
                self.replies.append(data)
            elif data.get("type") == "pub":
                self.pubs.append((data["epoch"], data["seq"]))
            elif data.get("type") == "error":
                raise AssertionError(f"gateway error: {data}")
            self.changed.set()
        self.closes.append(self.ws.close_code)
        await self.ws.close()  # answer the server's close frame (autoclose is off)
        self.changed.set()

    async def wait(self, cond: Any, timeout: float = 30.0) -> None:
        await until(self.changed, cond, timeout)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require_redis()
    name = redis_prefix()
    keys = ScratchRedisEngine(REDIS_URL, HistorySettings(), prefix=name)
    await keys.start(Recorder())  # deletes the prefix's keys when closed
    try:
        yield name
    finally:
        await keys.close()


async def test_two_workers_share_seqs_survive_kill_9_and_drain_on_sigterm(prefix: str) -> None:
    url = f"{REDIS_URL}?prefix={prefix}"
    served = Served("--engine", url, "--workers", "2", "--log-level", "warning")
    publisher = ScratchRedisEngine(REDIS_URL, HistorySettings(), prefix=prefix)
    await publisher.start(Recorder())
    landed: list[int] = []

    async def on_end(_: Any, __: Any, params: aiohttp.TraceRequestEndParams) -> None:
        landed.append(int(params.response.headers["X-Tickwire-Worker"]))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    stopping = False
    published: list[tuple[str, int]] = []
    errors: list[EngineUnavailable] = []

    async def publish() -> None:
        while not stopping:
            try:
                pub = await publisher.publish(TRADES, b'{"n":1}')
            except EngineUnavailable as exc:  # counted, never retried
                errors.append(exc)
            else:
                published.append((pub.epoch, pub.seq))
            await asyncio.sleep(0.005)  # the pace of the stream, not a wait for an event

    tasks: list[asyncio.Task[None]] = []
    try:
        await served.start()
        assert "2 workers" in served.banner[0]
        pids = await worker_pids(served.http)
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            ws_url = served.http.replace("http://", "ws://") + "/ws"
            clients: list[Client] = []
            while min(sum(c.workers[0] == w for c in clients) for w in (0, 1)) < 3:
                assert len(clients) < 60, f"the kernel sent every client to one worker: {landed}"
                client = Client(session, ws_url)
                await client.connect(landed)
                clients.append(client)
            tasks = [asyncio.create_task(c.read()) for c in clients]
            for c in clients:
                await c.wait(lambda c=c: bool(c.replies))
            # one publication reaches the clients of both workers with the same seq
            first = await publisher.publish(TRADES, b'{"n":0}')
            for c in clients:
                await c.wait(lambda c=c: bool(c.pubs))
                assert c.pubs == [(first.epoch, first.seq)]

            pub_task = asyncio.create_task(publish())
            for c in clients:
                await c.wait(lambda c=c: len(c.pubs) >= 5)
            os.kill(pids[1], signal.SIGKILL)
            victims = [c for c in clients if c.workers[0] == 1]
            for c in victims:
                await c.wait(lambda c=c: bool(c.closes))
                assert c.closes == [1006]  # dropped, not drained
                await tasks[clients.index(c)]
                await c.connect(landed)  # the survivor, or worker 1 once it is back
                tasks[clients.index(c)] = asyncio.create_task(c.read())
            for c in victims:
                await c.wait(lambda c=c: len(c.replies) == 2)
                resumed = c.replies[1]["channels"][0]
                assert resumed["recovered"] is True and resumed["epoch"] == first.epoch
            await served.wait_stderr(r"worker 1 \(pid \d+\) exited unexpectedly \(signal SIGKILL\)")
            restarted = await worker_pids(served.http)  # worker 1 answers: it is back
            assert restarted[0] == pids[0] and restarted[1] != pids[1]

            stopping = True
            await pub_task
            assert errors == []
            epoch, final = published[-1]
            for c in clients:
                await c.wait(lambda c=c: c.pubs[-1] == (epoch, final))
                seqs = [seq for _, seq in c.pubs]
                assert seqs == list(range(first.seq, final + 1)), "a gap or a duplicate"
                assert {e for e, _ in c.pubs} == {epoch}
            assert all(not c.closes for c in clients if c not in victims)

            assert served.proc is not None
            served.proc.send_signal(signal.SIGTERM)
            for c in clients:
                await c.wait(lambda c=c: len(c.closes) == len(c.replies))
                assert c.closes[-1] == 3001
            async with asyncio.timeout(30):
                assert await served.proc.wait() == 0, "".join(served.stderr)
            await asyncio.gather(*tasks)
    finally:
        stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await served.close()
        await publisher.close()


async def serve_until_exit(*args: str) -> tuple[int | None, bytes, bytes]:
    """``tickwire serve ARGS`` run to its end: exit status, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tickwire", "serve", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    return proc.returncode, out, err


async def test_the_memory_engine_with_two_workers_is_exit_2_naming_the_field() -> None:
    code, out, err = await serve_until_exit("--workers", "2")
    assert code == 2 and out == b""
    assert err.decode().splitlines() == [
        "tickwire: config field 'workers' (--workers): expected 0 or 1 with the memory "
        "engine, which is one process (a redis:// engine shares channels between "
        "workers), got 2"
    ]


async def test_a_port_in_use_is_one_line_and_exit_2_with_workers() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = await serve_until_exit(
            *("--host", "127.0.0.1", "--port", str(port)),
            *("--workers", "2", "--engine", "redis://127.0.0.1:1/0"),
        )
    assert code == 2 and out == b""
    assert err.decode().splitlines() == [
        f"tickwire: cannot listen on 127.0.0.1:{port}: port {port} is already in use "
        "(choose another with --port or TICKWIRE_PORT)"
    ]


def test_one_worker_by_default_and_0_is_one_per_cpu_with_redis() -> None:
    cpus = len(os.sched_getaffinity(0))
    redis = {"TICKWIRE_ENGINE": REDIS_URL}
    assert worker_count(load_config({}, env={})) == 1
    assert worker_count(load_config({}, env=redis)) == 1
    assert worker_count(load_config({}, env={**redis, "TICKWIRE_WORKERS": "0"})) == cpus
    assert worker_count(load_config({"workers": 0}, env={})) == 1  # memory: one process
    assert worker_count(load_config({"workers": 3}, env=redis)) == 3


#: A stand-in worker: reads its config, says it listens, and exits 1 at once.
CRASHING = (
    "import sys; sys.stdin.buffer.readline(); "
    f"sys.stdout.buffer.write({READY!r}); sys.stdout.flush(); sys.exit(1)"
)


class Restarts(logging.Handler):
    """The supervisor's "starting it again in N s" delays for worker 0, as logged."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.delays: list[float] = []
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if (m := re.search(r"starting it again in ([\d.]+) s", text)) and "worker 0 " in text:
            self.delays.append(float(m.group(1)))
            self.changed.set()


async def test_a_crash_loop_backs_off_doubling() -> None:
    config = Config(host="127.0.0.1", port=0, engine=REDIS_URL, workers=2)
    supervisor = Supervisor(config, 2, command=[sys.executable, "-c", CRASHING])
    restarts = Restarts()
    logger = logging.getLogger("tickwire.server.supervisor")
    logger.addHandler(restarts)
    run = asyncio.create_task(supervisor.run())
    try:
        async with asyncio.timeout(30):
            while len(restarts.delays) < 5:
                restarts.changed.clear()
                await restarts.changed.wait()
        supervisor.stopping.set()
        await run  # 0, or 1 when the stand-in exited 1 while being stopped
    finally:
        logger.removeHandler(restarts)
        supervisor.stopping.set()
        await asyncio.gather(run, return_exceptions=True)
    assert restarts.delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert supervisor.workers[0].restarts >= 4


#: A stand-in worker that records the config it was given and waits for its supervisor.
RECORDING = (
    "import sys, json; line = sys.stdin.buffer.readline(); "
    "open(sys.argv[1] + sys.argv[-1], 'wb').write(line); "
    f"sys.stdout.buffer.write({READY!r}); sys.stdout.flush(); sys.stdin.buffer.read()"
)


async def test_workers_share_one_random_auth_secret_when_none_is_set(tmp_path: Path) -> None:
    config = Config(host="127.0.0.1", port=0, engine=REDIS_URL, workers=2)
    command = [sys.executable, "-c", RECORDING, str(tmp_path / "worker-")]
    supervisor = Supervisor(config, 2, command=command)
    run = asyncio.create_task(supervisor.run())
    try:
        async with asyncio.timeout(30):
            await supervisor.ready.wait()  # the stand-ins wrote their files before READY
        supervisor.stopping.set()
        assert await run == 0  # each stand-in ended by the SIGTERM passed on to it
    finally:
        supervisor.stopping.set()
        await asyncio.gather(run, return_exceptions=True)
    seen = [json.loads((tmp_path / f"worker-{i}").read_bytes()) for i in (0, 1)]
    assert seen[0] == seen[1]
    assert len(seen[0]["auth"]["auth_secret"]) >= 32 and config.auth.auth_secret is None
    assert seen[0]["port"] != 0  # port 0 is resolved once, for every worker


async def test_a_worker_that_cannot_start_stops_the_supervisor_with_its_code() -> None:
    config = Config(host="127.0.0.1", port=0, engine=REDIS_URL, workers=2)
    command = [sys.executable, "-c", "import sys; sys.exit(3)"]
    supervisor = Supervisor(config, 2, command=command)
    assert await supervisor.run() == 3
    assert supervisor.workers[1].proc is None  # worker 0 starts first: one error, once


async def test_the_demo_market_runs_in_worker_0_only(prefix: str) -> None:
    url = f"{REDIS_URL}?prefix={prefix}"
    served = Served("--engine", url, "--workers", "2", "--demo", "--demo-rate", "20")
    try:
        await served.start()
        ids: list[int] = []
        async with aiohttp.ClientSession() as session, asyncio.timeout(30):
            ws_url = served.http.replace("http://", "ws://") + "/ws"
            async with session.ws_connect(ws_url) as ws:
                await ws.send_json({"id": 1, "op": "subscribe", "channels": [TRADES]})
                if True:
                    while len(ids) < 12:
                        data = await ws.receive_json()
                        if data.get("type") == "pub":
                            ids.append(data["data"]["id"])
        # one demo market: its trades are numbered once, 1, 2, 3…; two would repeat ids
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    finally:
        await served.close()


def test_only_worker_0_builds_the_singletons() -> None:
    from tickwire.server.app import INGEST_KEY, build_app
    from tickwire.server.node import NODE_KEY

    config = Config(
        engine=REDIS_URL,
        auth=AuthSettings(key_store=":memory:"),
        demo=True,
        synthetic="channel=trades:BENCH,rate=10",
        amqp="amqp://guest:guest@127.0.0.1:5672/",
    )
    for worker, runs in ((None, True), (0, True), (1, False)):
        app = build_app(config, worker=worker)
        node = app[NODE_KEY]
        owners = {type(getattr(f, "__self__", None)).__name__ for f in node.background}
        assert ("DemoMarket" in owners) is runs, (worker, owners)
        assert ("SyntheticPublisher" in owners) is runs
        assert ("PeatioIngest" in owners) is runs
        assert (INGEST_KEY in app) is runs
        assert "BENCH" in node.markets  # every worker serves the synthetic channels
        assert "Gateway" in owners  # sentiment periods close in every worker's gateway


async def test_node_stop_ends_a_task_that_swallows_its_cancellation() -> None:
    """A worker must exit when told to: a background task that went on after its
    cancellation (as the demo market did on Redis) kept a stopping worker alive."""
    from tickwire.server.node import Node

    node = Node(Config(auth=AuthSettings(key_store=":memory:")))
    entered = asyncio.Event()
    swallowed: list[int] = []

    async def stubborn() -> None:
        while True:
            try:
                entered.set()
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(1)  # as a library that turns it into an error it retries

    node.background.append(stubborn)
    await node.start()
    await entered.wait()
    async with asyncio.timeout(30):
        await node.stop()
    assert swallowed == [1] and not node.started

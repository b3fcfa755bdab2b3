"""Several real ``tickwire serve`` processes on one Redis: shared sequences, a node killed
with SIGKILL under load, Redis itself restarted under load.

Publications come from a publisher in the test process that uses the Redis engine
directly (the engine is the shared store: this is what any node's publish path does).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tickwire.engine import EngineUnavailable, HistorySettings
from tickwire.engine.redis import RedisEngine

from .conftest import Recorder, ScratchRedisEngine, redis_prefix, require_redis
from .redis_server import RedisServer
from .services import REDIS_URL
from .waiting import until

TRADES = "trades:BTC-USD"
TICKER = "ticker:BTC-USD"


class Gateway:
    """``python -m tickwire serve`` on 127.0.0.1:<ephemeral> as a child process."""

    def __init__(
        self,
        engine_url: str,
        name: str,
        *,
        via_env: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.engine_url = engine_url
        self.via_env = via_env
        self.env = env or {}
        self.banner: list[str] = []
        self.name = name
        self.stderr: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.ws_url = ""
        self._drain: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tickwire",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *([] if self.via_env else ["--engine", self.engine_url]),
            "--log-level",
            "warning",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={
                **os.environ,
                "TICKWIRE_KEY_STORE": ":memory:",  # no key file in the working directory
                **self.env,
                **({"TICKWIRE_ENGINE": self.engine_url} if self.via_env else {}),
            },
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._drain = [asyncio.create_task(self._read(self.proc.stderr, self.stderr))]
        lines: list[str] = []
        async with asyncio.timeout(30):
            while not any("metrics" in line for line in lines):
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    await self.proc.wait()
                    await asyncio.gather(*self._drain)
                    raise AssertionError(f"gateway {self.name} exited: {''.join(self.stderr)}")
                lines.append(line)
        self.banner = lines
        found = next(re.search(r"ws://\S+", line) for line in lines if "ws://" in line)
        assert found is not None
        self.ws_url = found.group(0)
        self._drain.append(asyncio.create_task(self._read(self.proc.stdout, [])))

    @staticmethod
    async def _read(stream: asyncio.StreamReader, into: list[str]) -> None:
        while line := await stream.readline():
            into.append(line.decode(errors="replace"))
            del into[:-50]

    @property
    def http(self) -> str:
        return self.ws_url.replace("ws://", "http://").removesuffix("/ws")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await asyncio.gather(*self._drain)


@dataclass
class Stream:
    """What one client saw on one channel, in order: ("pub"|"snapshot"|"reset", epoch, seq)."""

    events: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def last(self) -> tuple[str, int] | None:
        for kind, epoch, seq in reversed(self.events):
            if kind in ("pub", "snapshot", "reset"):
                return epoch, seq
        return None


class Subscriber:
    """A native WebSocket client that records every pub/snapshot/reset per channel and,
    when its gateway dies, resubscribes on the next one with ``since``."""

    def __init__(self, session: aiohttp.ClientSession, channels: list[str]) -> None:
        self.session = session
        self.channels = channels
        self.streams = {c: Stream() for c in channels}
        self.data: dict[str, list[Any]] = {}
        self.replies: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.disconnects = 0
        #: (events received so far, the subscribe request's channels) per connect
        self.sent: list[tuple[int, list[Any]]] = []

    async def connect(self, ws_url: str, *, resume: bool = False) -> None:
        self.ws = await self.session.ws_connect(ws_url, autoclose=False, heartbeat=None)
        subs: list[Any] = []
        for c in self.channels:
            last = self.streams[c].last
            if resume and last is not None:
                subs.append({"channel": c, "since": {"epoch": last[0], "seq": last[1]}})
            else:
                subs.append(c)
        self.sent.append((sum(len(st.events) for st in self.streams.values()), subs))
        await self.ws.send_str(
            json.dumps({"id": len(self.replies) + 1, "op": "subscribe", "channels": subs})
        )

    async def read(self) -> None:
        """Read until the connection ends."""
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            kind = data.get("type")
            if kind == "subscribed":
                self.replies.append(data)
                for c in data["channels"]:
                    if c.get("recovered") is False:
                        self.streams[c["channel"]].events.append(
                            ("unrecovered", c["epoch"], c["seq"])
                        )
            elif kind in ("pub", "snapshot", "reset"):
                self.streams[data["channel"]].events.append((kind, data["epoch"], data["seq"]))
                if kind == "pub":
                    self.data.setdefault(data["channel"], []).append(data["data"])
            elif kind == "error":
                raise AssertionError(f"gateway error: {data}")
            self.changed.set()
        self.disconnects += 1
        self.changed.set()

    async def wait(self, cond: Any, timeout: float = 20.0) -> None:
        await until(self.changed, cond, timeout)

    def seqs(self, channel: str) -> list[int]:
        return [seq for kind, _, seq in self.streams[channel].events if kind == "pub"]


class Publisher:
    """Publishes to the shared Redis at a steady pace, recording what succeeded and how
    many publishes failed; never silently drops: a failed publish is counted, not retried."""

    def __init__(self, engine: RedisEngine, interval: float = 0.002) -> None:
        self.engine = engine
        self.interval = interval
        self.ok: dict[str, list[tuple[str, int]]] = {TRADES: [], TICKER: []}
        self.errors: list[EngineUnavailable] = []
        self.stopping = False
        self.changed = asyncio.Event()
        self.n = 0

    async def run(self, channels: list[str]) -> None:
        while not self.stopping:
            for c in channels:
                self.n += 1
                body = json.dumps({"n": self.n}).encode()
                snapshot = body if c == TICKER else None
                try:
                    pub = await self.engine.publish(c, body, snapshot=snapshot)
                except EngineUnavailable as exc:
                    self.errors.append(exc)
                else:
                    self.ok[c].append((pub.epoch, pub.seq))
                self.changed.set()
            await asyncio.sleep(self.interval)  # pacing of the load, not a wait for an event

    async def wait(self, cond: Any, timeout: float = 20.0) -> None:
        await until(self.changed, cond, timeout)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def start_all(*gateways: Gateway) -> None:
    await asyncio.gather(*(g.start() for g in gateways))


async def stop_all(*gateways: Gateway) -> None:
    await asyncio.gather(*(g.stop() for g in gateways), return_exceptions=True)


async def test_a_publication_reaches_every_node_with_the_same_seq_and_epoch(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    require_redis()
    prefix = redis_prefix()
    url = f"{REDIS_URL}?prefix={prefix}"
    a, b = Gateway(url, "a"), Gateway(url, "b")
    publisher = ScratchRedisEngine(REDIS_URL, HistorySettings(), prefix=prefix)
    await publisher.start(Recorder())
    try:
        await start_all(a, b)
        on_a, on_b = Subscriber(session, [TRADES, TICKER]), Subscriber(session, [TRADES, TICKER])
        await on_a.connect(a.ws_url)
        await on_b.connect(b.ws_url)
        readers = [asyncio.create_task(s.read()) for s in (on_a, on_b)]
        for s in (on_a, on_b):
            await s.wait(lambda s=s: bool(s.replies))
        assert on_a.replies[0]["channels"] == on_b.replies[0]["channels"]
        sent = []
        for i in range(20):
            channel = TICKER if i % 4 == 0 else TRADES
            body = json.dumps({"i": i}).encode()
            snapshot = body if channel == TICKER else None
            sent.append(await publisher.publish(channel, body, snapshot=snapshot))
        want = {
            c: [("pub", p.epoch, p.seq) for p in sent if p.channel == c] for c in (TRADES, TICKER)
        }
        last_ticker = want[TICKER][-1]
        for s in (on_a, on_b):
            await s.wait(
                lambda s=s: (
                    len(s.streams[TRADES].events) == len(want[TRADES])
                    and bool(s.streams[TICKER].events)
                    and s.streams[TICKER].events[-1][1:] == last_ticker[1:]
                )
            )
            assert s.streams[TRADES].events == want[TRADES]
            # the ticker had no state when they subscribed: each starts from a snapshot
            # taken with the first publication (or a later one), then continues exactly
            kind, epoch, start = s.streams[TICKER].events[0]
            assert kind == "snapshot" and epoch == last_ticker[1]
            assert s.streams[TICKER].events[1:] == [e for e in want[TICKER] if e[2] > start]
        # a late subscriber on B starts from the snapshot A's subscribers saw last
        late = Subscriber(session, [TICKER])
        await late.connect(b.ws_url)
        readers.append(asyncio.create_task(late.read()))
        await late.wait(lambda: bool(late.streams[TICKER].events))
        _, epoch, seq = want[TICKER][-1]
        assert late.streams[TICKER].events[0] == ("snapshot", epoch, seq)
        for s in (on_a, on_b, late):
            assert s.ws is not None
            await s.ws.close()
        await asyncio.gather(*readers)
    finally:
        await stop_all(a, b)
        await publisher.close()


async def test_kill_9_of_a_node_loses_and_duplicates_nothing(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    require_redis()
    prefix = redis_prefix()
    url = f"{REDIS_URL}?prefix={prefix}"
    a, b = Gateway(url, "a"), Gateway(url, "b")
    engine = ScratchRedisEngine(REDIS_URL, HistorySettings(), prefix=prefix)
    await engine.start(Recorder())
    publisher = Publisher(engine)
    pub_task: asyncio.Task[None] | None = None
    clients = [Subscriber(session, [TRADES]) for _ in range(50)]
    tasks: list[asyncio.Task[None]] = []

    async def follow(client: Subscriber) -> None:
        await client.connect(a.ws_url)
        await client.read()  # until node A dies
        await client.connect(b.ws_url, resume=True)
        await client.read()

    try:
        await start_all(a, b)
        pub_task = asyncio.create_task(publisher.run([TRADES]))
        tasks = [asyncio.create_task(follow(c)) for c in clients]
        for c in clients:
            await c.wait(lambda c=c: len(c.seqs(TRADES)) >= 5)
        a.kill()
        for c in clients:
            await c.wait(lambda c=c: c.disconnects == 1 and len(c.replies) == 2)
        mark = publisher.ok[TRADES][-1][1]
        for c in clients:
            await c.wait(lambda c=c: bool(c.seqs(TRADES)) and c.seqs(TRADES)[-1] > mark + 5)
        publisher.stopping = True
        await pub_task
        assert publisher.errors == []
        epoch, final = publisher.ok[TRADES][-1]
        for c in clients:
            await c.wait(lambda c=c: c.seqs(TRADES)[-1] == final)
        for c in clients:
            seqs = c.seqs(TRADES)
            assert seqs == list(range(seqs[0], final + 1)), (
                f"a gap or a duplicate: {c.sent} {c.replies} {c.streams[TRADES].events}"
            )
            assert {e for _, e, _ in c.streams[TRADES].events} == {epoch}
            resumed = c.replies[1]["channels"][0]
            assert resumed["recovered"] is True and resumed["epoch"] == epoch
        for c in clients:
            assert c.ws is not None
            await c.ws.close()
        await asyncio.gather(*tasks)
    finally:
        publisher.stopping = True
        if pub_task is not None:
            await asyncio.gather(pub_task, return_exceptions=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stop_all(a, b)
        await engine.close()


def check_stream(stream: Stream, stateful: bool) -> int:
    """Every step is the next seq of the same epoch, or an explicit reset (for a state
    channel followed by its snapshot unless the new epoch is still empty). Returns how
    many resets there were."""
    resets = 0
    current: tuple[str, int] | None = None
    events = stream.events
    for i, (kind, epoch, seq) in enumerate(events):
        if kind == "reset":
            resets += 1
            current = (epoch, seq)
            if stateful and seq > 0:
                assert events[i + 1][0] == "snapshot", events[i : i + 2]
            continue
        if kind == "snapshot":
            assert current is None or events[i - 1][0] == "reset", "snapshot out of place"
            current = (epoch, seq)
            continue
        assert kind == "pub", kind
        if current is not None:
            assert (epoch, seq) == (current[0], current[1] + 1), (current, epoch, seq)
        current = (epoch, seq)
    return resets


async def test_redis_restart_under_load_is_never_a_silent_gap(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    server = RedisServer(tmp_path)
    await server.start()
    gateways = [Gateway(server.url, n) for n in ("a", "b")]
    engine = RedisEngine(server.url, HistorySettings(), timeout=1.0)
    publisher = Publisher(engine, interval=0.005)
    pub_task: asyncio.Task[None] | None = None
    clients = [Subscriber(session, [TRADES, TICKER]) for _ in range(6)]
    readers: list[asyncio.Task[None]] = []
    try:
        await engine.start(Recorder())
        await start_all(*gateways)
        for i, c in enumerate(clients):
            await c.connect(gateways[i % 2].ws_url)
        readers = [asyncio.create_task(c.read()) for c in clients]
        pub_task = asyncio.create_task(publisher.run([TRADES, TICKER]))
        for c in clients:
            await c.wait(lambda c=c: len(c.seqs(TRADES)) >= 5 and len(c.seqs(TICKER)) >= 5)
        await server.stop()  # SIGKILL: no persistence, every key is lost
        await publisher.wait(lambda: len(publisher.errors) >= 5)
        await server.start()
        old_epoch = publisher.ok[TRADES][0][0]
        await publisher.wait(
            lambda: sum(e != old_epoch for e, _ in publisher.ok[TRADES]) >= 50, timeout=30
        )
        publisher.stopping = True
        await pub_task
        final = {c: publisher.ok[c][-1] for c in (TRADES, TICKER)}
        assert all(epoch != old_epoch for epoch, _ in final.values())
        for c in clients:
            await c.wait(lambda c=c: all(c.streams[ch].last == final[ch] for ch in final))
        assert all("unavailable" in str(e) for e in publisher.errors)
        for c in clients:
            assert c.disconnects == 0
            assert check_stream(c.streams[TRADES], stateful=False) == 1
            assert check_stream(c.streams[TICKER], stateful=True) == 1
    finally:
        publisher.stopping = True
        if pub_task is not None:
            await asyncio.gather(pub_task, return_exceptions=True)
        for c in clients:
            if c.ws is not None:
                await c.ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
        await stop_all(*gateways)
        await engine.close()
        await server.stop()


async def test_engine_from_env_with_a_password_never_printed(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    server = RedisServer(tmp_path, "--requirepass", "s3cret-pw")
    await server.start()
    url = f"redis://:s3cret-pw@127.0.0.1:{server.port}/0?prefix=envtest"
    gateway = Gateway(url, "env", via_env=True)
    try:
        await gateway.start()
        banner = "".join(gateway.banner)
        assert "s3cret-pw" not in banner and "engine: redis://:***@127.0.0.1" in banner
        client = Subscriber(session, [TRADES])
        await client.connect(gateway.ws_url)
        reader = asyncio.create_task(client.read())
        await client.wait(lambda: bool(client.replies))
        engine = RedisEngine(url, HistorySettings())
        await engine.start(Recorder())
        try:
            # the node's subscribe created the channel's epoch in *this* Redis, under the prefix
            assert engine.prefix == "envtest"
            position = await engine.position(TRADES)
            assert client.replies[0]["channels"][0]["epoch"] == position.epoch
            pub = await engine.publish(TRADES, b'{"x":1}')
            await client.wait(lambda: client.seqs(TRADES) == [pub.seq])
        finally:
            await engine.close()
        assert client.ws is not None
        await client.ws.close()
        await reader
    finally:
        await gateway.stop()
        await server.stop()


async def test_bad_engine_url_is_a_config_error() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tickwire",
        "serve",
        "--engine",
        "redis+sentinel://:pw@127.0.0.1:1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TICKWIRE_KEY_STORE": ":memory:"},
    )
    out, err = await proc.communicate()
    assert proc.returncode == 2, (out, err)
    assert b"'engine'" in err and b"master name" in err and b"pw" not in err


async def test_redis_going_back_in_seq_resets_subscribers(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """What a failover to a lagging replica looks like to a node: its pub/sub connection
    drops, and Redis is behind what the node delivered, in the same epoch."""
    server = RedisServer(tmp_path)
    await server.start()
    gateway = Gateway(server.url, "a")
    engine = RedisEngine(server.url, HistorySettings())
    client = Subscriber(session, [TRADES])
    reader: asyncio.Task[None] | None = None
    try:
        await engine.start(Recorder())
        await gateway.start()
        await client.connect(gateway.ws_url)
        reader = asyncio.create_task(client.read())
        await client.wait(lambda: bool(client.replies))
        sent = [await engine.publish(TRADES, b'{"i":1}') for _ in range(10)]
        await client.wait(lambda: client.seqs(TRADES) == list(range(1, 11)))
        # the "replica" has seq 6 and history up to 6 only, then the node reconnects
        await engine._redis.hset(engine.key(TRADES, "m"), "s", 6)
        await engine._redis.delete(engine.key(TRADES, "h"))
        await engine._redis.client_kill_filter(_type="pubsub")
        await client.wait(lambda: client.streams[TRADES].events[-1][0] == "reset")
        assert client.streams[TRADES].events[-1] == ("reset", sent[0].epoch, 6)
        after = await engine.publish(TRADES, b'{"i":2}')
        assert after.seq == 7
        await client.wait(lambda: client.streams[TRADES].events[-1][2] == 7)
        assert check_stream(client.streams[TRADES], stateful=False) == 1
    finally:
        if client.ws is not None:
            await client.ws.close()
        if reader is not None:
            await asyncio.gather(reader, return_exceptions=True)
        await gateway.stop()
        await engine.close()
        await server.stop()


async def test_a_trade_published_through_node_a_reaches_node_b(
    session: aiohttp.ClientSession,
) -> None:
    require_redis()
    prefix = redis_prefix()
    url = f"{REDIS_URL}?prefix={prefix}"
    env = {"TICKWIRE_PUBLISH_TOKEN": "publish-secret-for-this-test"}
    a, b = Gateway(url, "a", env=env), Gateway(url, "b", env=env)
    keys = ScratchRedisEngine(REDIS_URL, HistorySettings(), prefix=prefix)  # deletes them
    await keys.start(Recorder())
    try:
        await start_all(a, b)
        on_a, on_b = Subscriber(session, [TRADES]), Subscriber(session, [TRADES])
        await on_a.connect(a.ws_url)
        await on_b.connect(b.ws_url)
        readers = [asyncio.create_task(s.read()) for s in (on_a, on_b)]
        for s in (on_a, on_b):
            await s.wait(lambda s=s: bool(s.replies))
        trade = {
            "type": "trade",
            "market": "BTC-USD",
            "price": "65000.5",
            "size": "0.25",
            "side": "sell",
        }
        async with session.post(
            a.http + "/api/v1/publish",
            json={"events": [trade, {**trade, "price": "65001"}]},
            headers={"Authorization": "Bearer " + env["TICKWIRE_PUBLISH_TOKEN"]},
        ) as resp:
            assert resp.status == 200, await resp.text()
        for s in (on_a, on_b):
            await s.wait(lambda s=s: len(s.streams[TRADES].events) == 2)
        assert on_a.streams[TRADES].events == on_b.streams[TRADES].events
        assert [e[2] for e in on_b.streams[TRADES].events] == [1, 2]
        assert [d["price"] for d in on_b.data[TRADES]] == ["65000.50", "65001.00"]
        for s in (on_a, on_b):
            assert s.ws is not None
            await s.ws.close()
        await asyncio.gather(*readers)
    finally:
        await stop_all(a, b)
        await keys.close()

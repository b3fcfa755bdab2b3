"""Five dialects on one core at once (issue 18): a client of every dialect subscribes to the
same book and trades of a real ``tickwire serve --demo``, on one node and on two nodes on
Redis with the clients spread over both.

Each client is its dialect's own (tests/crosskit.py). What is compared, per dialect:

- native: the core seq of every book snapshot and update and of every trade (the SDK's
  ``Message.seq``), with the trade's id, price and size;
- coinbase: no seq on the wire (``sequence_num`` counts one connection's messages): each
  connection's run of ``(side, price, size)`` updates is placed on the native seqs (one
  placement only), trades by trade id, price and size;
- ranger: ``sequence`` of ``ob-snap``/``ob-inc`` (the core seq); trades by ``tid``,
  price, amount;
- prophit: the core seq from each event's offset (``book:BTC-USD|<epoch>|<seq>``), trades
  by seq, id, price, size;
- opcode: ``seq`` of 301/300 for both, trades with id, price, size.

Sizes are compared as strings, a removal's zero written ``"0"`` in every dialect.

A scenario runs once per topology (module-scoped: one server, or one pair of nodes on
Redis, for every parametrized case) and the cases check what it recorded. The same holds
for the kill -9, the entitlements, and the never-reading scenario: a never-reading raw
client of every dialect beside a reading client of every dialect on ``trades:BTC-USD``,
on a node whose sockets' send buffers are fixed (``send_buffer_bytes``: left to the
kernel, they take megabytes before the hub's cap is reached).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tickwire.auth import Entitlements, KeyKind, create_key, open_key_store

from .authkit import coinbase_jwt, load_private
from .conftest import delete_prefix, redis_prefix, require_redis
from .crosskit import (
    BOOK,
    DIALECTS,
    MARKET,
    TRADES,
    Balancer,
    CoinbaseSide,
    NativeSide,
    OpcodeSide,
    ProphitSide,
    RangerSide,
    Record,
    Side,
    TradeEvent,
    book_at,
    check_book_stream,
    http_book,
    need_node,
    prophit_subs,
    reference_updates,
    until_window_end,
    with_seqs,
)
from .harness import Client
from .opcodekit import OpClient, digest_query, request
from .rangerkit import PUBLIC, IdentityProvider
from .services import REDIS_URL
from .wsraw import StalledClient

PUBLISH_TOKEN = "cross-dialect-publish-token-0123456789"
AUTH_SECRET = "cross-dialect-auth-secret-0123456789-0123456789"
UPDATES = 30  # book updates every client must see past the mark


@dataclass
class Keys:
    store: Path
    jwks: str
    idp: IdentityProvider
    #: user -> the API secret (POST /jwt, POST /login)
    secrets: dict[str, str]
    #: user -> (key name, private key) for client-signed Coinbase JWTs
    ec: dict[str, tuple[str, str]]


async def _make_keys(directory: Path) -> Keys:
    store_path = directory / "keys.sqlite3"
    store = open_key_store(str(store_path))
    await store.open()
    restricted = Entitlements(kinds=frozenset({"trades"}), symbols=frozenset({MARKET}))
    secrets: dict[str, str] = {}
    ec: dict[str, tuple[str, str]] = {}
    try:
        for user, ents in (("alice", None), ("bob", None), ("carol", restricted)):
            made = await create_key(store, kind=KeyKind.SECRET, user_id=user, entitlements=ents)
            assert made.secret is not None
            secrets[user] = made.secret
            signed = await create_key(store, kind=KeyKind.EC, user_id=user, entitlements=ents)
            assert signed.secret is not None
            ec[user] = (signed.record.name, signed.secret)
    finally:
        await store.close()
    idp = IdentityProvider()
    return Keys(store_path, idp.jwks(directory), idp, secrets, ec)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return asyncio.run(_make_keys(tmp_path_factory.mktemp("dialects-keys")))


class Serve:
    """``tickwire serve`` as a child process (started and stopped synchronously, so one
    serves a whole module)."""

    def __init__(self, keys: Keys, log: Path, *args: str, **extra: str) -> None:
        env = {
            **os.environ,
            **extra,
            "TICKWIRE_KEY_STORE": str(keys.store),
            "TICKWIRE_PUBLISH_TOKEN": PUBLISH_TOKEN,
            "TICKWIRE_AUTH_SECRET": AUTH_SECRET,
            "TICKWIRE_BEARER_JWKS": keys.jwks,
        }
        cmd = [sys.executable, "-m", "tickwire", "serve", "--host", "127.0.0.1", "--port", "0"]
        self.log_path = log
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [*cmd, "--log-level", "warning", *args],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.port = 0
        for line in self.proc.stdout:
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
            if "health" in line:
                break
        if not self.port:
            raise AssertionError(f"tickwire serve exited with {self.proc.wait()}")

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.http + path, timeout=10) as r:
            return json.loads(r.read())

    def tail(self, lines: int = 40) -> str:
        """The last lines of the node's log (warnings and errors: ``--log-level warning``)."""
        if not self.log.closed:
            self.log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(empty)"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.log.close()


@contextlib.contextmanager
def logs_on_failure(**nodes: Serve | None) -> Iterator[None]:
    """On an exception, print each node's last log lines (pytest shows them with the
    failure): a timed-out wait then comes with what the servers said."""
    try:
        yield
    except BaseException:
        for name, node in nodes.items():
            if node is not None:
                print(f"--- the last lines of node {name}'s log:\n{node.tail()}")
        raise


# -- credentials as each dialect's client obtains them ------------------------------------


async def gateway_token(session: aiohttp.ClientSession, http: str, secret: str) -> str:
    basic = base64.b64encode(f"{secret}:".encode()).decode()
    async with session.post(http + "/jwt", headers={"Authorization": f"Basic {basic}"}) as r:
        assert r.status == 200, await r.text()
        token: str = (await r.json())["token"]
    return token


async def session_key(session: aiohttp.ClientSession, http: str, secret: str) -> tuple[str, str]:
    async with session.post(http + "/login", json={"secret": secret}) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    return body["id"], body["session_key"]


def http_of(ws: str) -> str:
    return ws.replace("ws://", "http://")


@dataclass
class Outcome:
    records: dict[str, Record]
    #: GET /api/v1/book/BTC-USD (depth 1000) taken while every client streamed
    view: dict[str, Any]
    #: the native client's book updates by seq: the reference
    ref: dict[int, Any]


async def together(
    session: aiohttp.ClientSession,
    keys: Keys,
    urls: dict[str, list[str]],
    book_from: Serve,
) -> Outcome:
    """Every dialect's client on ``urls[dialect]`` (nodes in the order it tries them) at
    once; returns what each recorded, and the HTTP book taken meanwhile."""
    secret = keys.secrets["alice"]

    async def token() -> str:
        return await gateway_token(session, http_of(urls["native"][0]), secret)

    async def login(attempt: int) -> tuple[str, str]:
        nodes = urls["opcode"]
        return await session_key(session, http_of(nodes[attempt % len(nodes)]), secret)

    prophit_token = await gateway_token(session, http_of(urls["prophit"][0]), secret)
    native = NativeSide([u + "/ws" for u in urls["native"]], token)
    sides: list[Side] = [
        native,
        CoinbaseSide([u + "/ws/coinbase" for u in urls["coinbase"]], keys.ec["alice"]),
        RangerSide(urls["ranger"], session),
        ProphitSide(urls["prophit"], prophit_token),
        OpcodeSide(urls["opcode"], session, login),
    ]
    try:
        # native first: the reference holds every update any later client can see
        await native.start()
        await native.rec.wait(lambda: bool(native.rec.book), "the native snapshot")
        await asyncio.gather(*(s.start() for s in sides[1:]))
        for s in sides:
            marks = len(s.rec.book)
            await s.rec.wait(
                lambda s=s, marks=marks: (  # type: ignore[misc]
                    len([e for e in s.rec.book if e.kind == "update"]) >= UPDATES + marks
                    and len(s.rec.trades) >= 3
                ),
                "book updates and trades",
            )
        view = await asyncio.to_thread(book_from.get, f"/api/v1/book/{MARKET}?depth=1000")
        end = view["seq"] + 3
        await native.rec.wait(lambda: (native.rec.book[-1].seq or 0) >= end, "the native end")
        ref = reference_updates(native.rec)
        last_trade = native.rec.trades[-1].id
        for s in sides[1:]:
            await until_window_end(s.rec, ref, end, last_trade)
        return Outcome({s.dialect: s.rec for s in sides}, view, ref)
    finally:
        await asyncio.gather(*(s.stop() for s in sides), return_exceptions=True)


@pytest.fixture(scope="module", params=["one node", "two nodes"])
def outcome(
    request: pytest.FixtureRequest, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outcome]:
    need_node()
    logs = tmp_path_factory.mktemp("dialects-logs")
    if request.param == "one node":
        node = Serve(keys, logs / "a.log", "--demo", "--demo-rate", "3")
        try:
            urls = {d: [node.ws] for d in DIALECTS}

            async def run() -> Outcome:
                async with aiohttp.ClientSession() as session:
                    return await together(session, keys, urls, node)

            with logs_on_failure(a=node):
                result = asyncio.run(run())
            yield result
        finally:
            node.stop()
        return
    require_redis()
    prefix = redis_prefix()
    engine = f"{REDIS_URL}?prefix={prefix}"
    # the demo market publishes on A; B only serves: clients of every dialect on both
    a = Serve(keys, logs / "a.log", "--engine", engine, "--demo", "--demo-rate", "3")
    b: Serve | None = None
    try:
        b = Serve(keys, logs / "b.log", "--engine", engine)
        spread = {
            "native": [b.ws, a.ws],
            "coinbase": [b.ws],
            "ranger": [a.ws, b.ws],
            "prophit": [b.ws],
            "opcode": [a.ws, b.ws],
        }

        async def run2() -> Outcome:
            async with aiohttp.ClientSession() as session:
                return await together(session, keys, spread, b or a)

        with logs_on_failure(a=a, b=b):
            result2 = asyncio.run(run2())
        yield result2
    finally:
        if b is not None:
            b.stop()
        a.stop()
        asyncio.run(_forget(prefix))


async def _forget(prefix: str) -> None:
    from tickwire.engine import HistorySettings
    from tickwire.engine.redis import RedisEngine

    engine = RedisEngine(REDIS_URL, HistorySettings(), prefix=prefix)
    await delete_prefix(engine)
    await engine.close()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_book_publication_reaches_the_client_once_in_order(
    outcome: Outcome, dialect: str
) -> None:
    rec = outcome.records[dialect]
    assert rec.errors == []
    events = with_seqs(rec, outcome.ref)
    check_book_stream(events, dialect)
    updates = [e for e in events if e.kind == "update"]
    assert len(updates) >= UPDATES
    # identical prices and sizes: every update equals the native client's of that seq
    ref = reference_updates(outcome.records["native"])  # as it ended
    compared = [e for e in updates if e.seq is not None and e.seq <= max(ref)]
    assert len(compared) >= UPDATES
    for e in compared:
        assert e.seq in ref, f"{dialect}: seq {e.seq} the native client never saw"
        assert e.levels == ref[e.seq], (dialect, e.seq)
    assert rec.connections == 1


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_trade_reaches_the_client_once_in_order(outcome: Outcome, dialect: str) -> None:
    ref = outcome.records["native"].trades
    seqs = [t.seq or 0 for t in ref]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "native trades are not contiguous"
    got = outcome.records[dialect].trades
    key = [(t.id, t.price, t.size) for t in ref]
    start = key.index((got[0].id, got[0].price, got[0].size))
    n = min(len(got), len(ref) - start)
    assert n >= 3
    assert [(t.id, t.price, t.size) for t in got[:n]] == key[start : start + n]
    assert _seqs_match(got[:n], ref[start : start + n])


def _seqs_match(got: list[TradeEvent], ref: list[TradeEvent]) -> bool:
    """Where the dialect shows the core seq it is the native client's."""
    return all(g.seq is None or g.seq == r.seq for g, r in zip(got, ref, strict=True))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_rebuilt_book_equals_the_http_book_at_the_same_seq(
    outcome: Outcome, dialect: str
) -> None:
    events = with_seqs(outcome.records[dialect], outcome.ref)
    at = book_at(events, outcome.view["seq"])
    assert at is not None, f"{dialect} never held seq {outcome.view['seq']}"
    assert at == http_book(outcome.view)
    assert BOOK == f"book:{outcome.view['market']}"


# -- failure: kill -9 of the node every client is on ---------------------------------------


@dataclass
class Failover:
    records: dict[str, Record]
    view: dict[str, Any]
    ref: dict[int, Any]
    #: the native trades' seq when node B was killed
    killed_at: int


async def kill_one_node(session: aiohttp.ClientSession, keys: Keys, a: Serve, b: Serve) -> Failover:
    """Every dialect's client on B (through a balancer where its client reconnects to one
    URL); B is killed with SIGKILL under the demo's stream from A; each client finds A by
    its own reconnect."""
    secret = keys.secrets["bob"]
    balancer = Balancer([b.port, a.port])
    await balancer.start()
    front = f"ws://127.0.0.1:{balancer.port}"
    nodes = [b.ws, a.ws]

    async def token() -> str:
        for node in nodes:
            try:
                return await gateway_token(session, http_of(node), secret)
            except (aiohttp.ClientError, OSError):
                continue
        raise AssertionError("no node answers POST /jwt")

    async def login(attempt: int) -> tuple[str, str]:
        return await session_key(session, http_of(nodes[attempt % 2]), secret)

    native = NativeSide([u + "/ws" for u in nodes], token)
    sides: list[Side] = [
        native,
        CoinbaseSide([front + "/ws/coinbase"], keys.ec["bob"]),
        RangerSide(nodes, session),
        ProphitSide([front], await token()),
        OpcodeSide(nodes, session, login),
    ]
    try:
        await native.start()
        await native.rec.wait(lambda: bool(native.rec.book), "the native snapshot")
        await asyncio.gather(*(s.start() for s in sides[1:]))
        for s in sides:
            await s.rec.wait(
                lambda s=s: sum(e.kind == "update" for e in s.rec.book) >= 10,  # type: ignore[misc]
                "updates before the kill",
            )
        await native.rec.wait(lambda: len(native.rec.trades) >= 2, "trades before the kill")
        killed_at = native.rec.trades[-1].seq or 0
        b.stop(signal.SIGKILL)
        for s in sides:
            await s.rec.wait(
                lambda s=s: (  # type: ignore[misc]
                    s.rec.connections >= 2
                    and sum(e.kind == "update" and e.conn >= 2 for e in s.rec.book) >= 10
                ),
                "the reconnect and updates after it",
                # the Coinbase SDK's own retry backs off exponentially (base 5, factor 1.5,
                # full jitter): a failed first attempt can make its reconnect take a while
                timeout=150,
            )
        view = await asyncio.to_thread(a.get, f"/api/v1/book/{MARKET}?depth=1000")
        end = view["seq"] + 3
        await native.rec.wait(lambda: (native.rec.book[-1].seq or 0) >= end, "the native end")
        await native.rec.wait(
            lambda: (native.rec.trades[-1].seq or 0) >= killed_at + 3, "trades after the kill"
        )
        ref = reference_updates(native.rec)
        last_trade = native.rec.trades[-1].id
        for s in sides[1:]:
            await until_window_end(s.rec, ref, end, last_trade)
        return Failover({s.dialect: s.rec for s in sides}, view, ref, killed_at)
    finally:
        await asyncio.gather(*(s.stop() for s in sides), return_exceptions=True)
        await balancer.stop()


@pytest.fixture(scope="module")
def failover(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Failover]:
    need_node()
    require_redis()
    logs = tmp_path_factory.mktemp("dialects-failover")
    prefix = redis_prefix()
    engine = f"{REDIS_URL}?prefix={prefix}"
    a = Serve(keys, logs / "a.log", "--engine", engine, "--demo", "--demo-rate", "3")
    b: Serve | None = None
    try:
        b = Serve(keys, logs / "b.log", "--engine", engine)

        async def run() -> Failover:
            assert b is not None
            async with aiohttp.ClientSession() as session:
                return await kill_one_node(session, keys, a, b)

        with logs_on_failure(a=a, b=b):
            result = asyncio.run(run())
        yield result
    finally:
        if b is not None:
            b.stop()
        a.stop()
        asyncio.run(_forget(prefix))


#: seconds for a kill -9 test, the failover fixture's setup included
KILL_TIMEOUT = 420


#: what each dialect's client is told after the kill: recovered (the core's ``since``
#: replay, nothing lost) or a fresh start (a new snapshot, the dialect's resync)
AFTER_KILL = {
    "native": "recovered",
    "coinbase": "snapshot",
    "ranger": "snapshot",
    "prophit": "unrecovered",
    "opcode": "recovered",
}


#: the failover fixture runs inside the first of these tests: its waits (the Coinbase
#: SDK's reconnect backs off for up to 150 s) must fit in the test's timeout
@pytest.mark.timeout(KILL_TIMEOUT)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_after_kill_9_the_book_goes_on_without_a_gap_or_with_a_resync(
    failover: Failover, dialect: str
) -> None:
    rec = failover.records[dialect]
    assert rec.errors == []
    assert rec.connections == 2
    assert (AFTER_KILL[dialect], 2) in rec.signals
    events = with_seqs(rec, failover.ref)
    check_book_stream(events, dialect)  # a snapshot starts each connection's run
    second = [e for e in events if e.conn == 2]
    if AFTER_KILL[dialect] == "recovered":  # no new snapshot: the stream simply goes on
        assert all(e.kind == "update" for e in second)
    else:
        assert second[0].kind == "snapshot"
    ref = reference_updates(failover.records["native"])  # as it ended
    compared = [e for e in events if e.kind == "update" and e.seq in ref]
    assert len(compared) >= 20
    for e in compared:
        assert e.levels == ref[e.seq], (dialect, e.seq)  # type: ignore[index]
    at = book_at(events, failover.view["seq"])
    assert at == http_book(failover.view)


#: the failover fixture runs inside the first of these tests: its waits (the Coinbase
#: SDK's reconnect backs off for up to 150 s) must fit in the test's timeout
@pytest.mark.timeout(KILL_TIMEOUT)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_after_kill_9_no_trade_is_duplicated_and_none_lost_without_a_signal(
    failover: Failover, dialect: str
) -> None:
    ref = failover.records["native"].trades
    seqs = [t.seq or 0 for t in ref]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "native lost or doubled a trade"
    assert seqs[0] < failover.killed_at < seqs[-1]
    got = failover.records[dialect].trades
    ids = [t.id for t in got]
    assert len(set(ids)) == len(ids), f"{dialect}: a trade came twice"
    key = [(t.id, t.price, t.size) for t in ref]
    runs = (
        [[t for t in got if t.conn == c] for c in (1, 2)]
        if AFTER_KILL[dialect] != "recovered"
        else [got]
    )
    assert runs[-1], f"{dialect}: no trade after the reconnect"
    for run in runs:  # each run without a gap; across a resync the gap is told
        if not run:  # (trades are sparse: a connection may have had none before the kill)
            continue
        start = key.index((run[0].id, run[0].price, run[0].size))
        n = min(len(run), len(ref) - start)
        assert [(t.id, t.price, t.size) for t in run[:n]] == key[start : start + n], dialect


# -- entitlements: one restricted principal, and private channels, in every dialect ------

#: carol's key may read trades of BTC-USD only (``kinds=trades;symbols=BTC-USD``)
REFUSED = ["book:BTC-USD", "trades:ETH-USD"]
#: the per-connection byte cap of the ``plain`` node: a reader keeps far below it
CAP = 262_144
ALLOWED = "trades:BTC-USD"


@pytest.fixture(scope="module")
def plain(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    node = Serve(
        keys,
        tmp_path_factory.mktemp("dialects-auth") / "a.log",
        "--demo",
        "--max-queue-bytes",
        str(CAP),
        TICKWIRE_COMPRESSION="true",
    )
    yield node
    node.stop()


def signed(keys: Keys, user: str) -> str:
    """A Coinbase JWT as the SDK signs one with ``user``'s key."""
    name, secret = keys.ec[user]
    return coinbase_jwt(name, load_private(secret), now=time.time())


class EngineIO:
    """A raw Engine.IO 4 WebSocket session: enough to see the Socket.IO errors' shape."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.acks = 0

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, node: Serve, token: str) -> EngineIO:
        url = f"{node.ws}/socket.io/?EIO=4&transport=websocket&token={token}"
        ws = await session.ws_connect(url)
        assert (await ws.receive_str(timeout=10)).startswith("0{")
        await ws.send_str("40")
        assert (await ws.receive_str(timeout=10)).startswith("40{")
        return cls(ws)

    async def emit(self, event: str, arg: Any) -> Any:
        """``arg``'s ack: None, or the error object."""
        self.acks += 1
        await self.ws.send_str(f"42{self.acks}" + json.dumps([event, arg]))
        while True:
            text = await self.ws.receive_str(timeout=10)
            if text == "2":
                await self.ws.send_str("3")
            elif text.startswith(f"43{self.acks}["):
                return json.loads(text[len(f"43{self.acks}") :])[0]

    async def event(self, name: str) -> list[Any]:
        while True:
            text = await self.ws.receive_str(timeout=10)
            if text.startswith("42") and json.loads(text[2:])[0] == name:
                args: list[Any] = json.loads(text[2:])[1:]
                return args


def endpoint(channel: str) -> dict[str, Any]:
    kind, market = channel.split(":")
    return {"path": f"/real-time/{kind}", "method": "GET", "params": {"ticker": market}}


async def refusals(
    dialect: str, session: aiohttp.ClientSession, node: Serve, keys: Keys
) -> list[tuple[str, Any]]:
    """(channel, the answer) for every channel of REFUSED and ALLOWED, as carol."""
    out: list[tuple[str, Any]] = []
    secret = keys.secrets["carol"]
    if dialect == "native":
        token = await gateway_token(session, node.http, secret)
        client = Client(await session.ws_connect(f"{node.ws}/ws?token={token}"))
        assert (await client.recv_type("authenticated"))["user"] == "carol"
        for channel in [*REFUSED, ALLOWED]:
            out.append((channel, await client.subscribe(channel)))
        await client.close()
    elif dialect == "coinbase":
        ws = await session.ws_connect(f"{node.ws}/ws/coinbase")
        names = {"book": "level2", "trades": "market_trades"}
        for channel in [*REFUSED, ALLOWED]:
            kind, market = channel.split(":")
            msg = {"type": "subscribe", "channel": names[kind], "product_ids": [market]}
            await ws.send_str(json.dumps({**msg, "jwt": signed(keys, "carol")}))
            while True:
                reply = json.loads(await ws.receive_str(timeout=10))
                if reply.get("type") == "error" or reply.get("channel") == "subscriptions":
                    break
            out.append((channel, reply))
        await ws.close()
    elif dialect == "prophit":
        eio = await EngineIO.connect(session, node, await gateway_token(session, node.http, secret))
        for channel in [*REFUSED, ALLOWED]:
            out.append((channel, await eio.emit("subscribe", endpoint(channel))))
        await eio.ws.close()
    elif dialect == "opcode":
        user, key = await session_key(session, node.http, secret)
        op = await OpClient.connect(session, f"{node.ws}/ws/opcode" + digest_query(user, key))
        await op.call(100, 100)
        for channel in [*REFUSED, ALLOWED]:
            out.append((channel, await op.call(200, 200, 404, channels=[channel])))
        await op.close()
    return out


def refused_in_shape(dialect: str, answer: Any, channel: str) -> bool:
    """Whether ``answer`` is ``dialect``'s refusal of ``channel`` for lack of entitlement."""
    if dialect == "native":
        return bool(answer["type"] == "error" and answer["code"] == "forbidden")
    if dialect == "coinbase":
        return bool(answer.get("type") == "error" and answer["code"] == "forbidden")
    if dialect == "prophit":
        shape = {"type": "invalid_request_error", "code": "forbidden", "status": 403}
        return answer is not None and shape.items() <= answer.items()
    return bool(answer["res"] == 404 and answer["error"] == "forbidden")  # opcode


@pytest.mark.parametrize("dialect", ["native", "coinbase", "prophit", "opcode"])
async def test_a_restricted_key_is_refused_the_same_channels_in_each_dialects_shape(
    plain: Serve, keys: Keys, dialect: str
) -> None:
    """(ranger's principals come from the identity provider's tokens, which carry no
    tickwire entitlements: every public stream is readable there, as in Peatio.)"""
    async with aiohttp.ClientSession() as session:
        answers = await refusals(dialect, session, plain, keys)
    for channel, answer in answers:
        refused = refused_in_shape(dialect, answer, channel)
        assert refused == (channel in REFUSED), (dialect, channel, answer)
        if refused:  # the message names what was refused
            text = json.dumps(answer)
            assert channel.split(":")[0] in text or channel.split(":")[1] in text, text


async def publish(session: aiohttp.ClientSession, node: Serve, events: list[Any]) -> None:
    headers = {"Authorization": f"Bearer {PUBLISH_TOKEN}"}
    async with session.post(
        node.http + "/api/v1/publish", json={"events": events}, headers=headers
    ) as r:
        assert r.status == 200, await r.text()


def order(user: str, oid: str) -> dict[str, Any]:
    return {
        "type": "order",
        "user_id": user,
        "id": oid,
        "market": MARKET,
        "side": "buy",
        "state": "open",
        "size": "0.5",
        "price": "100",
    }


async def other_users_channel(
    dialect: str, session: aiohttp.ClientSession, node: Serve, keys: Keys
) -> Any:
    """alice names bob's orders where the dialect lets a client name a channel (None where
    it names no user: Coinbase's ``user`` and ranger's ``order`` are the credential's)."""
    secret, theirs = keys.secrets["alice"], "user:bob:orders"
    if dialect == "native":
        token = await gateway_token(session, node.http, secret)
        client = Client(await session.ws_connect(f"{node.ws}/ws?token={token}"))
        await client.recv_type("authenticated")
        answer = await client.subscribe(theirs)
        await client.close()
        assert answer["code"] == "forbidden" and "another user" in answer["message"], answer
        return answer
    if dialect == "prophit":
        eio = await EngineIO.connect(session, node, await gateway_token(session, node.http, secret))
        answer = await eio.emit("subscribe", {"channels": [theirs]})
        await eio.ws.close()
        assert answer["code"] == "forbidden" and answer["status"] == 403, answer
        return answer
    if dialect == "opcode":
        user, key = await session_key(session, node.http, secret)
        op = await OpClient.connect(session, f"{node.ws}/ws/opcode" + digest_query(user, key))
        await op.call(100, 100)
        answer = await op.call(200, 200, 404, channels=[theirs])
        await op.close()
        assert answer["res"] == 404 and answer["error"] == "forbidden", answer
        return answer
    return None


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_users_private_orders_reach_only_that_user_in_every_dialect(
    plain: Serve, keys: Keys, dialect: str
) -> None:
    mine = "user:alice:orders"
    async with aiohttp.ClientSession() as session:
        await other_users_channel(dialect, session, plain, keys)
        secret = keys.secrets["alice"]

        async def token() -> str:
            return await gateway_token(session, plain.http, secret)

        async def login(attempt: int) -> tuple[str, str]:
            return await session_key(session, plain.http, secret)

        side: Side
        if dialect == "native":
            side = NativeSide([plain.ws + "/ws"], token, channels=[mine])
        elif dialect == "coinbase":
            side = CoinbaseSide([plain.ws + "/ws/coinbase"], keys.ec["alice"], channels=["user"])
        elif dialect == "ranger":
            side = RangerSide([plain.ws], session, keys.idp.token("alice"), streams=["order"])
        elif dialect == "prophit":
            side = ProphitSide([plain.ws], await token(), subs=[{"channels": [mine]}])
        else:
            side = OpcodeSide([plain.ws], session, login, channels=[mine])
        await side.start()
        try:
            await side.rec.wait(lambda: side.rec.connections >= 1, "the connection")
            theirs, ours = f"o-{dialect}-bob", f"o-{dialect}-alice"
            await side.rec.wait(lambda: any(k == "subscribed" for k, _ in side.rec.signals), "")
            # bob's order first, in the same batch: a leak would arrive before alice's
            await publish(session, plain, [order("bob", theirs), order("alice", ours)])
            await side.rec.wait(lambda: ours in side.rec.orders, "alice's order")
            # never bob's (Coinbase's user snapshot holds alice's earlier open orders too)
            assert [o for o in side.rec.orders if "bob" in o] == []
        finally:
            await side.stop()


# -- permessage-deflate per dialect --------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_permessage_deflate_is_negotiated_in_every_dialect(
    plain: Serve, keys: Keys, dialect: str
) -> None:
    """With ``compression = true`` every dialect takes permessage-deflate when the client
    offers it, the Socket.IO WebSocket transport included (Coinbase's feed also without
    it: ``coinbase_compression``, on by default)."""
    paths = {
        "native": "/ws",
        "coinbase": "/ws/coinbase",
        "ranger": PUBLIC + "?stream=btcusd.trades",
        "opcode": "/ws/opcode",
    }
    async with aiohttp.ClientSession() as session:
        if dialect == "prophit":
            token = await gateway_token(session, plain.http, keys.secrets["alice"])
            path = f"/socket.io/?EIO=4&transport=websocket&token={token}"
        elif dialect == "opcode":
            user, key = await session_key(session, plain.http, keys.secrets["alice"])
            path = paths[dialect] + digest_query(user, key)
        else:
            path = paths[dialect]
        ws = await session.ws_connect(plain.ws + path, compress=15)
        try:
            assert ws.compress == 15
        finally:
            await ws.close()


# -- a never-reading client of every dialect, beside a reading one of every dialect -------

#: the per-connection byte cap (``max_queue_bytes``) of the ``stalling`` node
SLOW_CAP = 131_072
#: its ``send_buffer_bytes`` (``SO_SNDBUF``): left to the kernel, Linux grows a socket's
#: send buffer up to ``net.ipv4.tcp_wmem``'s maximum (4 MiB), and a client that does not
#: read fills that before the hub holds a byte for it (measured: all five dialects were
#: cut, each only after about 4 MB had piled up in the kernel)
SEND_BUFFER = 16_384
#: trades per ``POST /api/v1/publish``: one write to each subscriber, far under the cap
BATCH = 100
MAX_BATCHES = 60


@dataclass
class Stall:
    """A never-reading client of one dialect, and what it found when it read at last."""

    client: StalledClient
    #: bytes of the frames that reached it after its subscription (before the close)
    before: int = 0
    frames: int = 0
    largest: int = 0
    code: int | None = None
    reason: bytes = b""
    #: the server ended the connection without waiting for the client's answer
    eof: bool = False


@dataclass
class Stalling:
    readers: dict[str, Record]
    stalls: dict[str, Stall]
    published: int
    #: clients the node counted as cut for their cap (tickwire_slow_disconnects_total)
    cuts: int


def trade(i: int) -> dict[str, Any]:
    return {
        "type": "trade",
        "market": MARKET,
        "price": "100.5",
        "size": "0.25",
        "side": "buy",
        "id": i,
    }


async def _until(client: StalledClient, done: Any) -> None:
    """Read frames until one whose payload satisfies ``done`` (the subscription's reply),
    and not a byte further."""
    while True:
        _, payload, _ = await asyncio.wait_for(client.read_frame(), 10)
        if done(payload):
            return


def _json_has(payload: bytes, key: str, value: Any) -> bool:
    try:
        msg = json.loads(payload)
    except ValueError:
        return False
    return isinstance(msg, dict) and msg.get(key) == value


async def stalled_client(
    dialect: str, session: aiohttp.ClientSession, node: Serve, keys: Keys
) -> StalledClient:
    """A client of ``dialect`` subscribed to ``trades:BTC-USD`` that reads its replies up to
    the subscription's and then nothing more."""
    secret = keys.secrets["bob"]
    if dialect == "native":
        token = await gateway_token(session, node.http, secret)
        c = await StalledClient.connect(node.port, f"/ws?token={token}")
        await c.send_text(json.dumps({"id": 1, "op": "subscribe", "channels": [TRADES]}))
        await _until(c, lambda p: _json_has(p, "type", "subscribed"))
    elif dialect == "coinbase":
        c = await StalledClient.connect(node.port, "/ws/coinbase")
        sub = {"type": "subscribe", "channel": "market_trades", "product_ids": [MARKET]}
        await c.send_text(json.dumps(sub))
        await _until(c, lambda p: _json_has(p, "channel", "subscriptions"))
    elif dialect == "ranger":
        c = await StalledClient.connect(node.port, PUBLIC + "?stream=btcusd.trades")
        await _until(c, lambda p: b'"success"' in p and b"btcusd.trades" in p)
    elif dialect == "prophit":
        token = await gateway_token(session, node.http, secret)
        c = await StalledClient.connect(
            node.port, f"/socket.io/?EIO=4&transport=websocket&token={token}"
        )
        await c.send_text("40")
        await c.send_text("421" + json.dumps(["subscribe", prophit_subs("trades")[0]]))
        await _until(c, lambda p: p.startswith(b"431"))  # the subscribe's ack
    else:
        user, key = await session_key(session, node.http, secret)
        c = await StalledClient.connect(node.port, "/ws/opcode" + digest_query(user, key))
        await c.send_text(json.dumps(request(100)))
        await c.send_text(json.dumps(request(200, channels=[TRADES])))
        await _until(c, lambda p: _json_has(p, "res", 200))
    return c


async def read_to_close(stall: Stall, answer: bool) -> None:
    """Read at last: the frames sent before the cut, the close frame, then (after
    answering it, when ``answer``) the end of the connection."""
    client = stall.client
    try:
        while True:
            opcode, payload, size = await asyncio.wait_for(client.read_frame(), 10)
            if opcode == 0x8:
                stall.code = int.from_bytes(payload[:2], "big")
                stall.reason = payload[2:]
                break
            stall.before += size
            stall.frames += 1
            stall.largest = max(stall.largest, size)
        if answer:
            await client.send_close(stall.code)
        stall.eof = await asyncio.wait_for(client.at_eof(), 10)
    except (TimeoutError, ConnectionError):
        pass  # recorded as it stands: the test says what is missing


def slow_disconnects(node: Serve) -> int:
    with urllib.request.urlopen(node.http + "/metrics", timeout=10) as r:
        text = r.read().decode()
    (line,) = [x for x in text.splitlines() if x.startswith("tickwire_slow_disconnects_total ")]
    return int(float(line.split()[1]))


async def stall_every_dialect(session: aiohttp.ClientSession, keys: Keys, node: Serve) -> Stalling:
    """A reading client of every dialect (its own, as above) and a never-reading one of
    every dialect on ``trades:BTC-USD``; trades are published in batches, each read by
    every reader before the next, until the node has cut all five never-reading ones."""
    secret = keys.secrets["alice"]

    async def token() -> str:
        return await gateway_token(session, node.http, secret)

    async def login(attempt: int) -> tuple[str, str]:
        return await session_key(session, node.http, secret)

    readers: list[Side] = [
        NativeSide([node.ws + "/ws"], token, channels=[TRADES]),
        CoinbaseSide([node.ws + "/ws/coinbase"], keys.ec["alice"], channels=["market_trades"]),
        RangerSide([node.ws], session, streams=["btcusd.trades"]),
        ProphitSide([node.ws], await token(), subs=prophit_subs("trades")),
        OpcodeSide([node.ws], session, login, channels=[TRADES]),
    ]
    stalls: dict[str, Stall] = {}
    try:
        await asyncio.gather(*(r.start() for r in readers))
        for r in readers:
            await r.rec.wait(
                lambda r=r: any(k == "subscribed" for k, _ in r.rec.signals),  # type: ignore[misc]
                "the subscription",
            )
        for dialect in DIALECTS:
            stalls[dialect] = Stall(await stalled_client(dialect, session, node, keys))
        published = cuts = 0
        for _ in range(MAX_BATCHES):
            await publish(session, node, [trade(published + i + 1) for i in range(BATCH)])
            published += BATCH
            for r in readers:  # every reader has the batch: it was written to every client
                await r.rec.wait(
                    lambda r=r, n=published: len(r.rec.trades) >= n,  # type: ignore[misc]
                    "the batch",
                )
            cuts = await asyncio.to_thread(slow_disconnects, node)
            if cuts >= len(DIALECTS):
                break
        for stall in stalls.values():
            await read_to_close(stall, answer=True)
        # and the readers go on
        await publish(session, node, [trade(published + i + 1) for i in range(BATCH)])
        published += BATCH
        for r in readers:
            await r.rec.wait(
                lambda r=r: len(r.rec.trades) >= published,  # type: ignore[misc]
                "the batch after the cuts",
            )
        cuts = await asyncio.to_thread(slow_disconnects, node)
        return Stalling({r.dialect: r.rec for r in readers}, stalls, published, cuts)
    finally:
        for stall in stalls.values():
            stall.client.close()
        await asyncio.gather(*(r.stop() for r in readers), return_exceptions=True)


@pytest.fixture(scope="module")
def stalling(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stalling]:
    need_node()
    node = Serve(
        keys,
        tmp_path_factory.mktemp("dialects-slow") / "a.log",
        "--max-queue-bytes",
        str(SLOW_CAP),
        TICKWIRE_SEND_BUFFER_BYTES=str(SEND_BUFFER),
        # a cut client is aborted after drain_timeout if it has not read its close frame
        # (the reset would destroy what it had not read): these read only once all are cut
        TICKWIRE_DRAIN_TIMEOUT="60",
    )
    try:

        async def run() -> Stalling:
            async with aiohttp.ClientSession() as session:
                return await stall_every_dialect(session, keys, node)

        yield asyncio.run(run())
    finally:
        node.stop()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_never_reading_client_is_cut_at_its_cap_with_its_dialects_signal(
    stalling: Stalling, dialect: str
) -> None:
    stall = stalling.stalls[dialect]
    assert stalling.cuts == len(DIALECTS)
    assert stall.code == 3008, f"{dialect}: no slow-consumer close ({stall})"
    # every dialect (Socket.IO too) ends the connection once the client answers the close
    # frame; Socket.IO's close frame has the hub's code and no reason
    assert stall.eof
    if dialect != "prophit":
        assert stall.reason == b"slow consumer"
    # at the cut the server held more than the cap less one write (one batch), and no
    # more than the cap; besides, the kernel's buffers held at most the send buffer
    # (Linux doubles SO_SNDBUF), the client's receive buffer and one segment past them
    kernel = 2 * SEND_BUFFER + 2 * stall.client.rcvbuf
    assert SLOW_CAP - BATCH * stall.largest < stall.before <= SLOW_CAP + kernel, stall
    assert stall.frames < stalling.published


@pytest.mark.parametrize("dialect", DIALECTS)
def test_beside_them_a_reading_client_of_every_dialect_misses_nothing(
    stalling: Stalling, dialect: str
) -> None:
    rec = stalling.readers[dialect]
    assert rec.errors == []
    assert rec.connections == 1  # never cut, never reconnected
    every = list(range(1, stalling.published + 1))
    assert [int(t.id) for t in rec.trades] == every
    if dialect in ("native", "prophit", "opcode"):  # where the core seq is on the wire
        assert [t.seq for t in rec.trades] == every

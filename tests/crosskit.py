"""One small client per dialect, all recording the same two things in one shape, for the
cross-dialect tests (tests/test_dialects_together.py).

Each client is the dialect's own: the tickwire SDK (native), the official Coinbase SDK
``coinbase-advanced-py`` with ``retry=True`` (coinbase), socket.io-client 4 in Node
(prophit), and for ranger and opcode, which have no SDK, a raw WebSocket client that
reconnects as their real clients do (the openware front end reconnects and subscribes
again; an opcode client resubscribes with ``since``). Every client records

- its book events: ``snapshot`` or ``update``, the core seq where the dialect shows one,
  the levels as ``(side, price, size)`` with a removal's size written ``"0"``;
- its trades: the core seq where shown, the trade id, price and size;
- its connections (a reconnect starts a new one) and the explicit signals it was given.

A :class:`Balancer` stands in for a load balancer in front of several nodes: clients that
reconnect to one URL (the Coinbase SDK, socket.io-client) land on the next live node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from coinbase.websocket import WSClient

import tickwire
from tickwire.client import Backoff, BookUpdate, Connected, Order, Recovered, Resynced, Trade

from .opcodekit import OpClient, digest_query, request
from .rangerkit import PUBLIC
from .services import IN_CI

MARKET = "BTC-USD"
BOOK, TRADES = f"book:{MARKET}", f"trades:{MARKET}"
JS = Path(__file__).resolve().parent / "js"
DIALECTS = ("native", "coinbase", "ranger", "prophit", "opcode")

Level = tuple[str, str, str]  # (bid|ask, price, size)


def size_text(size: str) -> str:
    """A level's size as every dialect must agree on it: zero (a removal) is ``"0"``."""
    return "0" if Decimal(size) == 0 else size


def levels(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> tuple[Level, ...]:
    rows = [("bid", p, size_text(s)) for p, s in bids] + [("ask", p, size_text(s)) for p, s in asks]
    return tuple(sorted(rows))


@dataclass(frozen=True)
class BookEvent:
    kind: str  # snapshot | update
    seq: int | None
    levels: tuple[Level, ...]
    conn: int


@dataclass(frozen=True)
class TradeEvent:
    seq: int | None
    id: str
    price: str
    size: str
    conn: int


@dataclass
class Record:
    """What one client saw, in order."""

    dialect: str
    book: list[BookEvent] = field(default_factory=list)
    trades: list[TradeEvent] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    #: explicit signals: recovered / unrecovered / resync / snapshot (and, where the client
    #: reports one, its disconnect with the reason), with the connection
    signals: list[tuple[str, int]] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    connections: int = 0
    #: the client's reading loop ended on an exception (what it was): nothing more comes
    dead: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def touch(self) -> None:
        self.changed.set()

    async def wait(
        self,
        cond: Callable[[], bool],
        what: str,
        timeout: float = 60.0,
        detail: Callable[[], str] | None = None,
    ) -> None:
        """Until ``cond()`` holds; on a timeout, an AssertionError with this record's counts
        and ``detail()``, what the condition was missing."""
        try:
            async with asyncio.timeout(timeout):
                while not cond():
                    if self.dead is not None:
                        raise AssertionError(
                            f"{self.dialect}: its client stopped reading ({self.dead}) "
                            f"while waiting for {what}"
                        )
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.dialect}: timed out waiting for {what} "
                f"(book {len(self.book)}, trades {len(self.trades)}, "
                f"connections {self.connections}, errors {self.errors[-3:]})"
                + (f": {detail()}" if detail is not None else "")
            ) from None


class Side:
    """A client of one dialect; ``urls`` in the order it tries them."""

    dialect = ""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.rec = Record(self.dialect)

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def spawn(self, reading: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """The client's reading loop as a task: an exception in it (a message of a shape
        the client does not expect) is recorded, and every wait on the record fails at
        once with it, instead of the record going quiet until a wait times out."""

        async def guarded() -> None:
            try:
                await reading
            except Exception as exc:
                self.rec.dead = repr(exc)[:500]
                self.rec.errors.append(f"the reading loop failed: {self.rec.dead}")
                self.rec.touch()

        return asyncio.create_task(guarded())


# -- native: the tickwire SDK -------------------------------------------------------------


class NativeSide(Side):
    """``tickwire.connect([node, …])`` with a token provider; its own reconnect and
    ``since`` recovery, ``Recovered``/``Resynced`` events."""

    dialect = "native"

    def __init__(
        self, urls: list[str], token: Callable[[], Any], channels: Sequence[str] = (BOOK, TRADES)
    ) -> None:
        super().__init__(urls)
        self.token = token
        self.channels = list(channels)
        self.client: tickwire.Client | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.client = tickwire.connect(
            self.urls,
            token_provider=self.token,
            backoff=Backoff(initial=0.05, maximum=0.3, max_attempts=400),
            on_event=self._on_event,
        )
        await self.client.__aenter__()
        sub = self.client.subscribe(*self.channels)
        await sub.start()
        self.rec.signals.append(("subscribed", self.rec.connections))
        self.task = self.spawn(self._run(sub))

    def _on_event(self, event: object) -> None:
        if isinstance(event, Connected):
            self.rec.connections += 1
            self.rec.touch()

    async def _run(self, sub: Any) -> None:
        rec = self.rec
        async for item in sub:
            if isinstance(item, Recovered):
                rec.signals.append(("recovered", rec.connections))
            elif isinstance(item, Resynced):
                rec.signals.append(("resync", rec.connections))
            elif isinstance(item, BookUpdate):
                kind = "snapshot" if item.snapshot else "update"
                lv = levels(item.data.bids, item.data.asks)
                rec.book.append(BookEvent(kind, item.seq, lv, rec.connections))
            elif isinstance(item, Trade):
                d = item.data
                ev = TradeEvent(item.seq, str(d.id), d.price, d.size, rec.connections)
                rec.trades.append(ev)
            elif isinstance(item, Order):
                rec.orders.append(item.data.id)
            rec.touch()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.client is not None:
            await self.client.__aexit__(None, None, None)


# -- coinbase: the official SDK in its own thread -----------------------------------------


class CoinbaseSide(Side):
    """``coinbase.websocket.WSClient(base_url=…, retry=True)``: one URL (a balancer in
    front of several nodes); its messages are handed to the test's loop."""

    dialect = "coinbase"

    def __init__(
        self,
        urls: list[str],
        key: tuple[str, str] | None,
        channels: Sequence[str] = ("level2", "market_trades"),
    ) -> None:
        super().__init__(urls)
        self.key = key
        self.channels = list(channels)
        self.ws: WSClient | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last_seq = -1
        self.stopping = False
        self.watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        name, secret = self.key if self.key is not None else (None, None)
        self.ws = WSClient(
            api_key=name,
            api_secret=secret,
            base_url=self.urls[0],
            on_message=self._on_message,
            retry=True,
        )
        await asyncio.to_thread(self.ws.open)
        await asyncio.to_thread(self.ws.subscribe, [MARKET], self.channels)
        self.watch = self.spawn(self._reopen_when_stopped(self.ws))

    async def _reopen_when_stopped(self, ws: WSClient) -> None:
        """Open the SDK again when its receive loop ends, as its users must: version 1.8
        ends that loop without a retry and without telling when the socket closes
        cleanly (its issue #63, a node's 1001 when it drains) or while a message it has
        received still waits to be read (it checks ``websocket.open`` before reading the
        next one, so a connection lost with data in flight is not retried). Recorded as
        the signal ``"reopened"``: the tests see every time it was needed."""

        async def ended(task: asyncio.Task[None]) -> None:  # in the SDK's loop
            await asyncio.wait([task])

        while not self.stopping:
            handler = ws._task  # the SDK's receive loop (no public way to await its end)
            assert ws.loop is not None and handler is not None
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(ended(handler), ws.loop))
            if self.stopping:
                return
            self.rec.signals.append(("reopened", self.rec.connections))
            self.rec.touch()
            await asyncio.to_thread(ws.open)
            await asyncio.to_thread(ws.subscribe, [MARKET], self.channels)

    def _on_message(self, raw: str) -> None:  # the SDK's thread
        assert self.loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed: the test is over
            self.loop.call_soon_threadsafe(self._apply, raw)

    def _apply(self, raw: str) -> None:
        rec = self.rec
        msg = json.loads(raw)
        rec.touch()
        if msg.get("type") == "error":
            rec.errors.append(msg)
            return
        seq = msg["sequence_num"]
        if seq == 0:
            rec.connections += 1
        elif seq != self.last_seq + 1:
            rec.errors.append(f"sequence_num {seq} after {self.last_seq}")
        self.last_seq = seq
        if msg["channel"] == "subscriptions":
            rec.signals.append(("subscribed", rec.connections))
        for event in msg.get("events", []):
            if msg["channel"] == "l2_data" and event["product_id"] == MARKET:
                rows = tuple(
                    sorted(
                        (
                            "bid" if u["side"] == "bid" else "ask",
                            u["price_level"],
                            size_text(u["new_quantity"]),
                        )
                        for u in event["updates"]
                    )
                )
                rec.book.append(BookEvent(event["type"], None, rows, rec.connections))
                if event["type"] == "snapshot":
                    rec.signals.append(("snapshot", rec.connections))
            elif msg["channel"] == "market_trades":
                for t in event["trades"]:
                    if t["product_id"] == MARKET:
                        ev = TradeEvent(None, t["trade_id"], t["price"], t["size"], rec.connections)
                        rec.trades.append(ev)
            elif msg["channel"] == "user":
                rec.orders += [o["order_id"] for o in event["orders"]]

    async def stop(self) -> None:
        self.stopping = True
        if self.watch is not None:
            self.watch.cancel()
            await asyncio.gather(self.watch, return_exceptions=True)
        if self.ws is not None:
            await asyncio.to_thread(self.ws.close)


# -- ranger: a raw client that reconnects and resubscribes as the openware front end ------


class RangerSide(Side):
    """``?stream=btcusd.ob-inc&stream=btcusd.trades``; on a lost connection it connects to
    the next URL and subscribes again (a fresh ``ob-snap`` follows)."""

    dialect = "ranger"

    def __init__(
        self,
        urls: list[str],
        session: aiohttp.ClientSession,
        token: str | None = None,
        streams: Sequence[str] = ("btcusd.ob-inc", "btcusd.trades"),
    ) -> None:
        super().__init__(urls)
        self.session = session
        self.token = token
        self.streams = list(streams)
        self.task: asyncio.Task[None] | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.stopping = False

    async def start(self) -> None:
        await self._connect(0)
        self.task = self.spawn(self._run())

    async def _connect(self, attempt: int) -> None:
        base = self.urls[attempt % len(self.urls)]
        path = "/api/v2/ranger/private/" if self.token else PUBLIC
        query = "&".join(f"stream={s}" for s in self.streams)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.ws = await self.session.ws_connect(
            f"{base}{path}?{query}", headers=headers, autoclose=False
        )
        self.rec.connections += 1

    async def _run(self) -> None:
        attempt = 0
        while not self.stopping:
            assert self.ws is not None
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                self._apply(json.loads(msg.data))
            if self.stopping:
                return
            while not self.stopping:  # reconnect, next node first
                attempt += 1
                try:
                    await self._connect(attempt)
                    break
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.05)  # the client's retry delay, not a wait

    def _apply(self, msg: dict[str, Any]) -> None:
        rec = self.rec
        conn = rec.connections
        rec.touch()
        if "error" in msg:
            rec.errors.append(msg)
        elif "success" in msg:
            rec.signals.append(("subscribed", conn))
        elif snap := msg.get("btcusd.ob-snap"):
            lv = levels(snap["bids"], snap["asks"])
            rec.book.append(BookEvent("snapshot", snap["sequence"], lv, conn))
            rec.signals.append(("snapshot", conn))
        elif inc := msg.get("btcusd.ob-inc"):
            rows: dict[str, list[list[str]]] = {"bids": [], "asks": []}
            for name in rows:
                got = inc.get(name)
                if got:
                    rows[name] = got if isinstance(got[0], list) else [got]
            lv = levels(rows["bids"], rows["asks"])
            rec.book.append(BookEvent("update", inc["sequence"], lv, conn))
        elif trades := msg.get("btcusd.trades"):
            for t in trades["trades"]:
                rec.trades.append(TradeEvent(None, str(t["tid"]), t["price"], t["amount"], conn))
        elif order := msg.get("order"):
            rec.orders.append(str(order["id"]))

    async def stop(self) -> None:
        self.stopping = True
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


# -- prophit: socket.io-client 4 in Node --------------------------------------------------


def need_node() -> None:
    missing = None
    if shutil.which("node") is None:
        missing = "node is not installed"
    elif not (JS / "node_modules" / "socket.io-client-4").is_dir():
        missing = "tests/js/node_modules is missing (run: make jsclients)"
    if missing is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true: {missing}")
    print(f"\nskipping the cross-dialect tests: {missing}")
    pytest.skip(missing)  # outside CI only (CI failed above)


def prophit_subs(*names: str) -> list[dict[str, Any]]:
    return [
        {"path": f"/real-time/{n}", "method": "GET", "params": {"ticker": MARKET}} for n in names
    ]


#: the longest line the Node client may print (a whole book is a few kilobytes; asyncio's
#: default, 64 KiB, would end the reading loop on a longer one)
LINE_LIMIT = 1 << 24


class ProphitSide(Side):
    """``tests/js/market_client.js``: the ``book`` and ``trades`` endpoints; every event's
    offset carries the core seq; a connect that is not ``recovered`` subscribes again."""

    dialect = "prophit"

    def __init__(
        self, urls: list[str], token: str, subs: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(urls)
        self.token = token
        self.subs = subs if subs is not None else prophit_subs("book", "trades")
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.acks: list[Any] = []
        #: a book endpoint's first result after a (re)subscribe is the whole book
        self._fresh = True
        self.stopping = False

    async def start(self) -> None:
        need_node()
        self.proc = await asyncio.create_subprocess_exec(
            "node",
            str(JS / "market_client.js"),
            self.urls[0].replace("ws://", "http://"),
            self.token,
            json.dumps(self.subs),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(JS),
            limit=LINE_LIMIT,
            env={**os.environ},
        )
        self.task = self.spawn(self._run())

    async def _run(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self._apply(json.loads(line))
        if not self.stopping:
            raise RuntimeError(f"the Node client exited ({await self.proc.wait()})")

    def _apply(self, line: dict[str, Any]) -> None:
        rec = self.rec
        rec.touch()
        ev = line["ev"]
        if ev == "connect":
            rec.connections += 1
            rec.signals.append(
                ("recovered" if line["recovered"] else "unrecovered", rec.connections)
            )
            if not line["recovered"]:
                self._fresh = True
        elif ev == "ack":
            self.acks.append(line["err"])
            if line["err"] is not None:
                rec.errors.append(line["err"])
            else:
                rec.signals.append(("subscribed", rec.connections))
        elif ev == "disconnect":
            rec.signals.append((f"disconnect: {line['reason']}", rec.connections))
        elif ev in ("err", "connect_error"):
            rec.errors.append(line)
        elif ev == "res":
            res, offset = line["res"], line.get("offset")
            seq = int(offset.rsplit("|", 1)[1]) if isinstance(offset, str) else None
            path = res["path"]
            for r in res["results"]:
                if path == "/real-time/book":
                    kind = "snapshot" if self._fresh else "update"
                    self._fresh = False
                    lv = levels(r["bids"], r["asks"])
                    rec.book.append(BookEvent(kind, seq, lv, rec.connections))
                    if kind == "snapshot":
                        rec.signals.append(("snapshot", rec.connections))
                elif path == "/real-time/trades":
                    ev_ = TradeEvent(seq, r["id"], r["price"], r["size"], rec.connections)
                    rec.trades.append(ev_)
        elif ev == "pub":
            rec.orders.append(str(line["pub"]["data"].get("id")))

    async def stop(self) -> None:
        self.stopping = True
        if self.proc is not None:
            if self.proc.returncode is None:
                self.proc.kill()
            await self.proc.wait()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


# -- opcode: a raw client that resubscribes with since ------------------------------------


class OpcodeSide(Side):
    """Digest connect, logon, subscribe; on a lost connection: log in again (the next
    node), connect, logon, and resubscribe each channel with ``since`` its last seq."""

    dialect = "opcode"

    def __init__(
        self,
        urls: list[str],
        session: aiohttp.ClientSession,
        login: Callable[[int], Any],
        channels: Sequence[str] = (BOOK, TRADES),
    ) -> None:
        super().__init__(urls)
        self.session = session
        self.login = login  # attempt -> (http base, user, session key)
        self.channels = list(channels)
        self.last: dict[str, tuple[str, int]] = {}
        self.client: OpClient | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.replies: list[dict[str, Any]] = []

    async def start(self) -> None:
        await self._connect(0)
        self.task = self.spawn(self._run())

    async def _connect(self, attempt: int) -> None:
        base = self.urls[attempt % len(self.urls)]
        user, key = await self.login(attempt)
        self.client = await OpClient.connect(
            self.session, f"{base}/ws/opcode" + digest_query(user, key)
        )
        self.rec.connections += 1
        await self.client.send(request(100))
        subs: list[Any] = []
        for c in self.channels:
            last = self.last.get(c)
            subs.append(
                c if last is None else {"channel": c, "since": {"epoch": last[0], "seq": last[1]}}
            )
        await self.client.send(request(200, channels=subs))

    async def _run(self) -> None:
        attempt = 0
        while not self.stopping:
            assert self.client is not None
            async for msg in self.client.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                self._apply(json.loads(msg.data))
            if self.stopping:
                return
            while not self.stopping:
                attempt += 1
                try:
                    await self._connect(attempt)
                    break
                except (aiohttp.ClientError, OSError, AssertionError):
                    await asyncio.sleep(0.05)  # the client's retry delay, not a wait

    def _apply(self, msg: dict[str, Any]) -> None:
        rec = self.rec
        conn = rec.connections
        rec.touch()
        res = msg["res"]
        if res == 200:
            self.replies.append(msg)
            rec.signals.append(("subscribed", conn))
            for c in msg["channels"]:
                if "recovered" in c:
                    rec.signals.append(("recovered" if c["recovered"] else "unrecovered", conn))
        elif res in (300, 301):
            channel, seq = msg["channel"], msg["seq"]
            self.last[channel] = (msg["epoch"], seq)
            d = msg["data"]
            if channel == BOOK:
                kind = "snapshot" if res == 301 else "update"
                rec.book.append(BookEvent(kind, seq, levels(d["bids"], d["asks"]), conn))
                if res == 301:
                    rec.signals.append(("snapshot", conn))
            elif channel == TRADES:
                rec.trades.append(TradeEvent(seq, str(d["id"]), d["price"], d["size"], conn))
            else:
                rec.orders.append(str(d.get("id")))
        elif res == 302:
            rec.signals.append(("resync", conn))
        elif res >= 400:
            rec.errors.append(msg)

    async def stop(self) -> None:
        self.stopping = True
        if self.client is not None:
            await self.client.close()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


# -- the comparisons ----------------------------------------------------------------------


def reference_updates(rec: Record) -> dict[int, tuple[Level, ...]]:
    """The native client's book updates by seq (checked contiguous per connection)."""
    return {e.seq: e.levels for e in rec.book if e.kind == "update" and e.seq is not None}


def with_seqs(rec: Record, ref: dict[int, tuple[Level, ...]]) -> list[BookEvent]:
    """``rec``'s book events with a seq each: its own where the dialect shows one; for a
    dialect without (coinbase), each connection's updates are placed on the reference by
    their payloads: the one start at which every update of the connection that the
    reference holds is the reference's update of that seq."""
    if all(e.seq is not None for e in rec.book):
        return list(rec.book)
    out: list[BookEvent] = []
    for conn in sorted({e.conn for e in rec.book}):
        events = [e for e in rec.book if e.conn == conn]
        updates = [e for e in events if e.kind == "update"]
        starts = [
            s
            for s in ref
            if updates
            and ref[s] == updates[0].levels
            and all(ref.get(s + i, u.levels) == u.levels for i, u in enumerate(updates))
        ]
        assert len(starts) == 1, f"{rec.dialect}: {len(starts)} placements of connection {conn}"
        seq = starts[0] - 1
        for e in events:
            if e.kind == "update":
                seq += 1
                out.append(BookEvent("update", seq, e.levels, conn))
            else:
                out.append(BookEvent("snapshot", seq, e.levels, conn))
    return out


async def until_window_end(
    rec: Record, ref: dict[int, tuple[Level, ...]], end: int, last_trade: str
) -> None:
    """Until ``rec`` holds the book up to seq ``end`` (placed on the native reference
    ``ref``) and the trade ``last_trade``; a timeout says which of the two is missing."""

    def last_seq() -> int:
        return (with_seqs(rec, ref)[-1].seq or 0) if rec.book else 0

    def has_trade() -> bool:
        return any(t.id == last_trade for t in rec.trades)

    def detail() -> str:
        tail = [(t.seq, t.id, t.conn) for t in rec.trades[-3:]]
        return (
            f"its book ends at seq {last_seq()} of {end}; trade {last_trade} "
            f"{'seen' if has_trade() else 'not seen'}, its last trades (seq, id, conn) {tail}; "
            f"signals {rec.signals[-4:]}"
        )

    await rec.wait(
        lambda: last_seq() >= end and has_trade(), "the end of the window", detail=detail
    )


def apply(book: dict[tuple[str, str], str], event: BookEvent) -> None:
    if event.kind == "snapshot":
        book.clear()
    for side, price, size in event.levels:
        if size == "0":
            book.pop((side, price), None)
        else:
            book[(side, price)] = size


def book_at(events: list[BookEvent], seq: int) -> dict[tuple[str, str], str] | None:
    """The book rebuilt from the last snapshot up to ``seq`` (None if never at it)."""
    book: dict[tuple[str, str], str] = {}
    at: dict[tuple[str, str], str] | None = None
    for e in events:
        apply(book, e)
        if e.seq == seq:
            at = dict(book)
    return at


def http_book(view: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {("bid", p): s for p, s in view["bids"]} | {("ask", p): s for p, s in view["asks"]}


def check_book_stream(events: list[BookEvent], dialect: str) -> None:
    """A snapshot, then updates whose seq rises by exactly 1, across reconnects too; a
    new snapshot (a resync) starts again from its own seq."""
    prev: int | None = None
    for e in events:
        assert e.seq is not None
        if e.kind == "snapshot":
            prev = e.seq
            continue
        assert prev is not None, f"{dialect}: an update before a snapshot"
        assert e.seq == prev + 1, f"{dialect}: book seq {e.seq} after {prev} (conn {e.conn})"
        prev = e.seq


@dataclass
class Balancer:
    """A TCP forwarder on 127.0.0.1:<ephemeral>: each new connection goes to the first
    backend in ``backends`` that accepts it (a load balancer's failover)."""

    backends: list[int]
    server: asyncio.Server | None = None
    port: int = 0
    pipes: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for port in self.backends:
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            writer.close()
            return
        for a, b in ((reader, up_w), (up_r, writer)):
            task = asyncio.create_task(self._pipe(a, b))
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.pipes):
            task.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)

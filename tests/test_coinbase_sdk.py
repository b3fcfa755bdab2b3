"""The official ``coinbase-advanced-py`` SDK, unchanged, against ``tickwire serve --demo``.

The SDK runs its own thread and event loop; the tests wait on its messages with
conditions, never with sleeps. Keys come from ``tickwire keys create``; orders are
published through ``POST /api/v1/publish``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from coinbase.websocket import WebsocketResponse, WSClient

PUBLISH_TOKEN = "sdk-test-publish-token"
CHANNELS = ["level2", "market_trades", "ticker", "ticker_batch", "candles", "heartbeats"]
TICKWIRE = [sys.executable, "-m", "tickwire"]
WAIT = 60.0  # seconds any one condition may take before the test fails


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int

    @property
    def feed(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/coinbase"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            return json.loads(r.read())

    def publish(self, events: list[dict[str, Any]]) -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v1/publish",
            data=json.dumps({"events": events}).encode(),
            headers={"Authorization": f"Bearer {PUBLISH_TOKEN}"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200

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


def start_server(store: Path, port: int = 0) -> Server:
    env = {
        **os.environ,
        "TICKWIRE_KEY_STORE": str(store),
        "TICKWIRE_PUBLISH_TOKEN": PUBLISH_TOKEN,
        "TICKWIRE_LOG_LEVEL": "warning",
    }
    cmd = [*TICKWIRE, "serve", "--demo", "--host", "127.0.0.1"]
    proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"Coinbase feed\s+ws://127\.0\.0\.1:(\d+)/", line)
        if found:
            return Server(proc, int(found.group(1)))
    raise AssertionError(f"tickwire serve exited with {proc.wait()} before listening")


def create_key(store: Path, kind: str, user: str) -> tuple[str, str]:
    """(key name, private key) printed by ``tickwire keys create``."""
    args = ["keys", "create", "--kind", kind, "--user", user, "--store", str(store), "--json"]
    out = subprocess.run(
        [*TICKWIRE, *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    made = json.loads(out)
    return made["key"]["name"], made["secret"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("coinbase-sdk") / "keys.sqlite3"


@pytest.fixture
def server(store: Path) -> Iterator[Server]:
    srv = start_server(store)
    yield srv
    srv.stop()


Book = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]


@dataclass
class Recorder:
    """Everything the SDK hands ``on_message``, and the book it rebuilds from l2_data."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    by_channel: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    #: the rebuilt book after each l2_data message, with the connection it came on
    books: deque[tuple[int, Book]] = field(default_factory=lambda: deque(maxlen=2000))
    connections: int = 0
    last_seq: int = -1

    def on_message(self, raw: str) -> None:
        try:
            self._on_message(raw)
        except Exception as exc:  # recorded: the test fails on it
            with self.cond:
                self.problems.append(f"{type(exc).__name__}: {exc} in {raw[:200]}")
                self.cond.notify_all()

    def _on_message(self, raw: str) -> None:
        msg = json.loads(raw)
        with self.cond:
            if msg.get("type") == "error":
                self.errors.append(msg["message"])
                self.cond.notify_all()
                return
            WebsocketResponse(json.loads(raw))  # the SDK's own parser
            seq = msg["sequence_num"]
            if seq == 0:
                self.connections += 1
            elif seq != self.last_seq + 1:
                self.problems.append(f"sequence_num {seq} after {self.last_seq}")
            self.last_seq = seq
            self.by_channel.setdefault(msg["channel"], []).append(msg)
            if msg["channel"] == "l2_data":
                self._apply(msg)
            self.cond.notify_all()

    def _apply(self, msg: dict[str, Any]) -> None:
        for event in msg["events"]:
            if event["product_id"] != "BTC-USD":
                continue
            if event["type"] == "snapshot":
                self.bids.clear()
                self.asks.clear()
            for u in event["updates"]:
                side = self.bids if u["side"] == "bid" else self.asks
                if float(u["new_quantity"]) == 0:
                    side.pop(u["price_level"], None)
                else:
                    side[u["price_level"]] = u["new_quantity"]
        if self.bids and self.asks:
            best_bid = max(float(p) for p in self.bids)
            best_ask = min(float(p) for p in self.asks)
            if best_bid >= best_ask:
                self.problems.append(f"crossed book: {best_bid} >= {best_ask}")
        self.books.append((self.connections, self.book()))

    def book(self) -> Book:
        bids = tuple(sorted(self.bids.items(), key=lambda kv: -float(kv[0])))
        asks = tuple(sorted(self.asks.items(), key=lambda kv: float(kv[0])))
        return bids, asks

    def wait(self, what: str, pred: Callable[[], bool]) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: pred() or bool(self.problems), timeout=WAIT)
            assert not self.problems, self.problems
            assert ok, f"timed out waiting for {what}"

    def orders(self) -> list[str]:
        """Order ids of every user message, in order (snapshots and updates)."""
        msgs = self.by_channel.get("user", [])
        return [o["order_id"] for m in msgs for e in m["events"] for o in e["orders"]]

    def seen(self, *channels: str) -> Callable[[], bool]:
        return lambda: all(self.by_channel.get(ch) for ch in channels)


def http_book(server: Server) -> Book:
    view = server.get("/api/v1/book/BTC-USD?depth=1000")
    return tuple(map(tuple, view["bids"])), tuple(map(tuple, view["asks"]))


def assert_book_matches(rec: Recorder, server: Server, connection: int) -> None:
    """The book rebuilt on ``connection`` passes through the state the HTTP API shows."""
    target = http_book(server)
    assert target[0] and target[1]
    rec.wait(
        "the rebuilt book to equal GET /api/v1/book/BTC-USD",
        lambda: (connection, target) in rec.books,
    )


def order(user: str, oid: str) -> dict[str, Any]:
    return {
        "type": "order",
        "user_id": user,
        "id": oid,
        "market": "BTC-USD",
        "side": "buy",
        "state": "open",
        "size": "0.5",
        "price": "100",
    }


def client(rec: Recorder, server: Server, key: tuple[str, str] | None) -> Any:
    name, secret = key if key is not None else (None, None)
    return WSClient(
        api_key=name,
        api_secret=secret,
        base_url=server.feed,
        on_message=rec.on_message,
        retry=True,
    )


@pytest.mark.parametrize("kind", ["ec", "ed25519"])
def test_sdk_with_a_key_streams_every_channel_and_only_its_users_orders(
    kind: str, store: Path, server: Server
) -> None:
    key = create_key(store, kind, f"alice-{kind}")
    rec = Recorder()
    ws = client(rec, server, key)
    ws.open()
    try:
        ws.subscribe(["BTC-USD"], [*CHANNELS, "user"])
        rec.wait("every channel", rec.seen("l2_data", "market_trades", "ticker", "candles"))
        rec.wait("heartbeats", rec.seen("heartbeats"))
        rec.wait("ticker_batch", rec.seen("ticker_batch"))
        rec.wait("the subscriptions of all 7 channels", lambda: any(
            len(m["events"][0]["subscriptions"]) == 7 for m in rec.by_channel["subscriptions"]
        ))  # fmt: skip
        server.publish([order("mallory", "o-mallory"), order(f"alice-{kind}", "o-alice")])
        rec.wait("the user's order", lambda: "o-alice" in rec.orders())
        assert rec.orders() == ["o-alice"]  # never mallory's
        assert_book_matches(rec, server, rec.connections)
        assert rec.errors == []
        beats = [m["events"][0]["heartbeat_counter"] for m in rec.by_channel["heartbeats"]]
        assert beats == list(range(1, len(beats) + 1))
    finally:
        ws.close()


def test_sdk_without_keys_streams_the_public_channels(server: Server) -> None:
    rec = Recorder()
    ws = client(rec, server, None)
    ws.open()
    try:
        ws.subscribe(["BTC-USD", "ETH-USD"], CHANNELS)
        rec.wait("the public channels", rec.seen("l2_data", "market_trades", "ticker", "candles"))
        rec.wait("heartbeats", rec.seen("heartbeats"))
        products = {e["product_id"] for m in rec.by_channel["l2_data"] for e in m["events"]}
        assert products == {"BTC-USD", "ETH-USD"}
        # the SDK offered permessage-deflate and the feed took it (frames parsed above)
        assert [e.name for e in ws.websocket.extensions] == ["permessage-deflate"]
        assert rec.errors == []
    finally:
        ws.close()


def test_sdk_reconnects_resubscribes_and_rebuilds_after_the_server_dies(store: Path) -> None:
    key = create_key(store, "ec", "alice-restart")
    srv = start_server(store)
    rec = Recorder()
    ws = client(rec, srv, key)
    ws.open()
    try:
        ws.subscribe(["BTC-USD"], ["level2", "market_trades", "user"])
        rec.wait("the first book", rec.seen("l2_data", "market_trades"))
        assert_book_matches(rec, srv, 1)
        # killed: no close frame at all (1006), the SDK must retry by itself
        srv.stop(signal.SIGKILL)
        srv = start_server(store, srv.port)
        rec.wait("the reconnect", lambda: rec.connections >= 2)
        rec.wait("a snapshot on the new connection", lambda: any(c == 2 for c, _ in rec.books))
        assert_book_matches(rec, srv, 2)
        srv.publish([order("alice-restart", "o-after")])
        rec.wait("the user channel resubscribed", lambda: "o-after" in rec.orders())
        assert rec.errors == []
    finally:
        ws.close()
        srv.stop()

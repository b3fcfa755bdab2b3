"""What the load generator says on each wire: how it subscribes and answers keep-alives.

A dialect sees only the frames :func:`tickwire.client.bench.wire.scan` hands it
(everything until the connection is ready, then control and short frames), so adding a
dialect costs nothing on the counting path. Add one by subclassing :class:`BenchDialect`
and listing it in :data:`DIALECTS`. ``mixed`` spreads one run's connections over all five.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import msgspec


@dataclass(slots=True)
class Step:
    """A dialect's answer to one inbound message."""

    send: list[bytes]
    ready: bool = False
    error: str | None = None


_NOTHING = Step([])


class BenchDialect:
    """Base: a raw WebSocket speaking JSON text frames."""

    name = "base"
    #: Request path when the URL gives none.
    default_path = "/"

    def __init__(self, channels: list[str], credentials: tuple[str, str] | None = None) -> None:
        self.channels = channels
        #: (user id, session key) from ``POST /login``, for dialects that connect with them
        self.credentials = credentials

    def path(self, path: str) -> str:
        """The request path of one connection (a dialect may add a credential)."""
        return path

    def opening(self) -> list[bytes]:
        """Text payloads to send once the WebSocket is open."""
        return []

    def on_message(self, payload: bytes, ready: bool) -> Step:
        """An inbound text message (all of them until ready, short ones after)."""
        return _NOTHING


class NativeDialect(BenchDialect):
    """tickwire's native protocol (and the raw-WebSocket peers, which mirror it)."""

    name = "native"
    default_path = "/ws"

    def opening(self) -> list[bytes]:
        return [msgspec.json.encode({"id": 1, "op": "subscribe", "channels": self.channels})]

    def on_message(self, payload: bytes, ready: bool) -> Step:
        if ready:
            return _NOTHING
        try:
            msg = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return Step([], error="not JSON: " + payload.decode(errors="replace")[:100])
        if not isinstance(msg, dict) or msg.get("id") != 1:
            return _NOTHING
        if msg.get("type") == "subscribed":
            return Step([], ready=True)
        return Step([], error=payload.decode(errors="replace")[:200])


class EngineIO4Dialect(BenchDialect):
    """Socket.IO over Engine.IO 4, WebSocket transport only.

    Open packet ``0{…}`` → connect to the default namespace ``40`` → ``40{…}`` →
    ``420["subscribe",{"channels":[…]}]`` with ack id 0 → ``430[…]`` means ready.
    Pings ``2`` are answered ``3``; events arrive as ``42["event",…]``.
    """

    name = "eio4"
    default_path = "/socket.io/?EIO=4&transport=websocket"
    event = "subscribe"

    def on_message(self, payload: bytes, ready: bool) -> Step:
        if payload == b"2":
            return Step([b"3"])
        if ready:
            return _NOTHING
        if payload[:1] == b"0":
            return Step([b"40"])
        if payload[:2] == b"40":
            body = msgspec.json.encode([self.event, {"channels": self.channels}])
            return Step([b"420" + body])
        if payload[:3] == b"430":
            return Step([], ready=True)
        if payload[:2] == b"44":
            return Step([], error=payload.decode(errors="replace")[:200])
        return _NOTHING


class OpcodeDialect(BenchDialect):
    """InstaMrkt opcodes: connect with ``?id=&n=&h=`` (a fresh random nonce each), send
    logon (op 100) and subscribe (op 200, id 1) at once; ``res`` 200 with id 1 is ready.
    A returning user is logged on automatically (pushed 100), so logon may answer 112."""

    name = "opcode"
    default_path = "/ws/opcode"

    def path(self, path: str) -> str:
        if self.credentials is None:
            return path
        user, key = self.credentials
        nonce = secrets.token_hex(8)
        digest = hashlib.sha256((user + nonce + key).encode()).hexdigest()
        sep = "&" if "?" in path else "?"
        return f"{path}{sep}id={user}&n={nonce}&h={digest}"

    def opening(self) -> list[bytes]:
        return [
            msgspec.json.encode({"header": {}, "op": 100}),
            msgspec.json.encode({"header": {}, "op": 200, "id": 1, "channels": self.channels}),
        ]

    def on_message(self, payload: bytes, ready: bool) -> Step:
        if ready:
            return _NOTHING
        try:
            msg = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return Step([], error="not JSON: " + payload.decode(errors="replace")[:100])
        res = msg.get("res") if isinstance(msg, dict) else None
        if res == 200 and msg.get("id") == 1:
            return Step([], ready=True)
        if res == 110 or (isinstance(res, int) and res >= 400):
            return Step([], error=payload.decode(errors="replace")[:200])
        return _NOTHING


def ranger_stream(channel: str) -> str:
    """The Peatio ranger stream of a tickwire channel (``trades:BENCH`` → ``bench.trades``;
    markets without a registry alias are named ``<id without dashes, lower case>``)."""
    kind, _, rest = channel.partition(":")
    symbol, _, arg = rest.partition(":")
    market = symbol.replace("-", "").lower()
    if kind == "book":
        return f"{market}.ob-inc"
    if kind == "ticker":
        return "global.tickers"
    if kind == "candles":
        return f"{market}.kline-{arg}"
    return f"{market}.{kind}"


class RangerDialect(BenchDialect):
    """Peatio's ranger: ``{"event":"subscribe","streams":[…]}`` →
    ``{"success":{"message":"subscribed",…}}`` means ready; the challenge frame sent on
    connect is ignored, ``{"error":…}`` fails the connection."""

    name = "ranger"
    default_path = "/api/v2/ranger/public/"

    def opening(self) -> list[bytes]:
        streams = list(dict.fromkeys(ranger_stream(c) for c in self.channels))
        return [msgspec.json.encode({"event": "subscribe", "streams": streams})]

    def on_message(self, payload: bytes, ready: bool) -> Step:
        if ready or payload == b"pong":
            return _NOTHING
        try:
            msg = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return Step([], error="not JSON: " + payload.decode(errors="replace")[:100])
        if not isinstance(msg, dict):
            return _NOTHING
        if "success" in msg:
            return Step([], ready=True)
        if "error" in msg:
            return Step([], error=payload.decode(errors="replace")[:200])
        return _NOTHING


class CoinbaseDialect(BenchDialect):
    """Coinbase Advanced Trade: one ``subscribe`` per channel (``trades:X`` is
    ``market_trades`` of product ``X``, ``book:X`` is ``level2``); ready once every
    ``subscriptions`` message has come back."""

    name = "coinbase"
    default_path = "/ws/coinbase"
    KINDS = {"trades": "market_trades", "book": "level2", "ticker": "ticker"}

    def __init__(self, channels: list[str], credentials: tuple[str, str] | None = None) -> None:
        super().__init__(channels, credentials)
        self.waiting = len(channels)

    def opening(self) -> list[bytes]:
        out = []
        for ch in self.channels:
            kind, _, product = ch.partition(":")
            channel = self.KINDS.get(kind, kind)
            msg = {"type": "subscribe", "channel": channel, "product_ids": [product]}
            out.append(msgspec.json.encode(msg))
        return out

    def on_message(self, payload: bytes, ready: bool) -> Step:
        if ready:
            return _NOTHING
        if b'"channel":"subscriptions"' in payload:
            self.waiting -= 1
            return Step([], ready=self.waiting <= 0)
        if payload.startswith(b'{"type":"error"'):
            return Step([], error=payload.decode(errors="replace")[:200])
        return _NOTHING


#: Dialects by ``--dialect`` name.
DIALECTS: dict[str, type[BenchDialect]] = {
    NativeDialect.name: NativeDialect,
    EngineIO4Dialect.name: EngineIO4Dialect,
    OpcodeDialect.name: OpcodeDialect,
    RangerDialect.name: RangerDialect,
    CoinbaseDialect.name: CoinbaseDialect,
}

#: ``--dialect mixed``: connection ``i`` speaks ``MIXED[i % 5]``, each on its default path
#: (one run, one channel, the subscribers spread evenly over every dialect).
MIXED_NAME = "mixed"
MIXED = (
    NativeDialect.name,
    CoinbaseDialect.name,
    RangerDialect.name,
    EngineIO4Dialect.name,
    OpcodeDialect.name,
)
#: Every ``--dialect`` choice.
DIALECT_CHOICES = (*DIALECTS, MIXED_NAME)


def dialect_for(name: str, index: int) -> type[BenchDialect]:
    """The dialect connection ``index`` speaks in a run of dialect ``name``."""
    if name == MIXED_NAME:
        return DIALECTS[MIXED[index % len(MIXED)]]
    return DIALECTS[name]

"""The connection core with bytes: a toy dialect of a dozen lines gets auth, limits, rate
limiting, the errors-in-a-row policy and close codes without any code of its own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tickwire.auth import AuthError, Principal
from tickwire.dialects.base import (
    Authenticate,
    Authenticated,
    Command,
    Credential,
    Dialect,
    Event,
    Handshake,
    Refused,
    Resume,
    Resumed,
    Subscribe,
    Token,
    Unsubscribe,
)
from tickwire.dialects.core import TRANSITIONS, ConnectionCore, Limits, State, Trigger
from tickwire.dialects.errors import ProtocolError
from tickwire.dialects.native import NATIVE
from tickwire.engine import EngineUnavailable, HistorySettings, MemoryEngine
from tickwire.hub import Connection, Hub
from tickwire.model.channels import Channel, parse_channel
from tickwire.model.publication import Position, Publication, Snapshot
from tickwire.server.app import build_app
from tickwire.server.config import load_config
from tickwire.server.node import NODE_KEY
from tickwire.server.ws import mount

from .test_hub import MemoryTransport, next_iteration


class Toy(Dialect):
    """A whole dialect: ``{"sub": [...]}``, ``{"unsub": [...]}``, ``{"auth"|"refresh": t}``."""

    name = "toy"
    fmt = NATIVE

    def credential(self) -> Credential | None:
        token = self.handshake.first("token")
        return None if token is None else Token(token)

    def parse(self, frame: str) -> list[Command]:
        msg = json.loads(frame)
        if "sub" in msg:
            return [Subscribe(None, [(parse_channel(c), None) for c in msg["sub"]])]
        if "unsub" in msg:
            return [Unsubscribe(None, [parse_channel(c) for c in msg["unsub"]])]
        key = "refresh" if "refresh" in msg else "auth"
        return [Authenticate(None, Token(msg[key]), refresh=key == "refresh")]

    def render(self, event: Event) -> bytes:
        return json.dumps({"event": type(event).__name__}).encode()

    def render_error(self, error: ProtocolError) -> bytes:
        return json.dumps({"error": error.code, "message": error.message}).encode()


# -- services the shell would give: a manual clock and timers -----------------------------


@dataclass
class Timer:
    at: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualServices:
    def __init__(self, hub: Hub, limits: Limits) -> None:
        self.hub = hub
        self.limits = limits
        self.clock = 1_000.0
        self.timers: list[Timer] = []

    def channel_exists(self, channel: Channel) -> bool:
        return channel.symbol in {"BTC-USD", "ETH-USD"}

    async def verify(self, credential: Credential) -> Principal:
        assert isinstance(credential, Token)
        user, _, ttl = credential.value.partition(":")
        if user not in ("alice", "bob"):
            raise AuthError("bad_signature", "token signature does not verify")
        return Principal(user, expires_at=self.clock + float(ttl or 60))

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.clock + delay, callback)
        self.timers.append(timer)
        return timer

    def time(self) -> float:
        return self.clock

    def monotonic(self) -> float:
        return self.clock

    def now_ms(self) -> int:
        return int(self.clock * 1000)

    def advance(self, seconds: float) -> None:
        self.clock += seconds
        for timer in sorted(self.timers, key=lambda t: t.at):
            if timer.at <= self.clock and not timer.cancelled:
                timer.cancelled = True
                timer.callback()


@dataclass
class Rig:
    engine: MemoryEngine
    hub: Hub
    services: ManualServices
    transport: MemoryTransport
    conn: Connection
    core: ConnectionCore

    async def out(self) -> list[dict[str, Any]]:
        await next_iteration()
        msgs = self.transport.messages()
        self.transport.writes.clear()
        return msgs

    def close_code(self) -> int | None:
        """The close frame's code among what was written (server frames are unmasked)."""
        data = b"".join(self.transport.writes)
        at = data.find(b"\x88")
        return None if at < 0 else int.from_bytes(data[at + 2 : at + 4])


@asynccontextmanager
async def rig(dialect: type[Dialect] = Toy, query: str = "", **limits: Any) -> AsyncIterator[Rig]:
    engine = MemoryEngine(HistorySettings(size=100, ttl=60))
    hub = Hub(engine, drain_timeout=0.01)
    await engine.start(hub)
    services = ManualServices(hub, Limits(**limits))
    transport = MemoryTransport()
    conn = hub.connect(transport, dialect.fmt, 1 << 20)
    values = dict(part.split("=", 1) for part in query.split("&") if part)
    hs = Handshake("/toy", {k: [v] for k, v in values.items()})
    core = ConnectionCore(services, dialect(hs), conn)
    try:
        yield Rig(engine, hub, services, transport, conn, core)
    finally:
        core.finish()
        await hub.close()


class Counting(Toy):
    finished_calls = 0

    def finished(self) -> None:
        Counting.finished_calls += 1


async def test_the_dialect_is_told_once_that_the_connection_ended() -> None:
    async with rig(Counting) as r:
        assert await r.core.open()
        assert Counting.finished_calls == 0
        r.core.close(1000)
        r.core.finish()
        r.core.finish()
        assert Counting.finished_calls == 1


async def test_subscribe_replies_then_streams_the_channel() -> None:
    async with rig() as r:
        assert await r.core.open()
        await r.core.receive('{"sub": ["trades:BTC-USD"]}')
        assert await r.out() == [{"event": "Subscribed"}]
        await r.engine.publish("trades:BTC-USD", b'{"p": 1}')
        [pub] = await r.out()
        assert (pub["type"], pub["channel"], pub["seq"], pub["data"]) == (
            "pub",
            "trades:BTC-USD",
            1,
            {"p": 1},
        )


async def test_subscribe_is_all_or_nothing() -> None:
    async with rig() as r:
        await r.core.receive('{"sub": ["trades:BTC-USD", "trades:DOGE-USD"]}')
        [err] = await r.out()
        assert err["error"] == "unknown_channel" and "DOGE-USD" in err["message"]
        assert r.conn.channels == set() and r.hub.channel_count == 0


async def test_engine_failure_on_a_later_channel_leaves_no_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with rig() as r:
        real = MemoryEngine.subscribe

        async def second_fails(self: MemoryEngine, channels: list[str]) -> None:
            if channels == ["trades:ETH-USD"]:
                raise EngineUnavailable("down")
            await real(self, channels)

        monkeypatch.setattr(MemoryEngine, "subscribe", second_fails)
        await r.core.receive('{"sub": ["trades:BTC-USD", "trades:ETH-USD"]}')
        [err] = await r.out()
        assert err["error"] == "unavailable"
        assert r.conn.channels == set() and r.hub.channel_count == 0
        await r.engine.publish("trades:BTC-USD", b"{}")
        assert await r.out() == []


async def test_the_rate_limit_answers_rate_limited_until_tokens_refill() -> None:
    async with rig(requests_per_second=1.0, request_burst=3.0) as r:
        for _ in range(4):
            await r.core.receive('{"unsub": ["trades:BTC-USD"]}')
        msgs = await r.out()
        assert [m.get("error") for m in msgs] == [None, None, None, "rate_limited"]
        r.services.advance(1.0)
        await r.core.receive('{"unsub": ["trades:BTC-USD"]}')
        assert await r.out() == [{"event": "Unsubscribed"}]


async def test_errors_in_a_row_close_with_3503_after_the_errors() -> None:
    async with rig() as r:
        for _ in range(Toy.max_errors_in_a_row):
            await r.core.receive('{"sub": ["nonsense"]}')
        assert r.core.closed and r.core.state is State.CLOSED
        await next_iteration()
        assert r.close_code() == 3503
        errors = [m for m in r.transport.messages() if "error" in m]
        assert len(errors) == Toy.max_errors_in_a_row
        assert {e["error"] for e in errors} == {"unknown_channel"}


async def test_a_good_request_resets_the_error_count() -> None:
    async with rig() as r:
        for _ in range(Toy.max_errors_in_a_row - 1):
            await r.core.receive('{"sub": ["nonsense"]}')
        await r.core.receive('{"unsub": ["trades:BTC-USD"]}')
        await r.core.receive('{"sub": ["nonsense"]}')
        assert not r.core.closed and r.core.errors_in_a_row == 1


async def test_oversized_frame_gets_frame_too_large() -> None:
    async with rig(max_frame_bytes=256) as r:
        await r.core.receive(json.dumps({"sub": ["x" * 300]}))
        [err] = await r.out()
        assert err["error"] == "frame_too_large" and "256" in err["message"]


async def test_a_parser_bug_answers_internal_and_the_connection_survives() -> None:
    async with rig() as r:
        await r.core.receive("not json")  # the toy parser lets json's error escape
        [err] = await r.out()
        assert err["error"] == "internal" and not r.core.closed
        await r.core.receive('{"sub": ["trades:BTC-USD"]}')
        assert await r.out() == [{"event": "Subscribed"}]


async def test_a_bad_handshake_credential_is_told_then_closed_3500() -> None:
    async with rig(query="token=mallory") as r:
        assert not await r.core.open()
        await next_iteration()
        assert r.transport.messages()[0]["error"] == "bad_signature"
        assert r.close_code() == 3500


class Mute(Toy):
    """A dialect that tells nothing of an error (as Socket.IO before its connect)."""

    def render_error(self, error: ProtocolError) -> bytes:
        return b""


async def test_a_dialect_that_tells_nothing_gets_no_empty_frame() -> None:
    async with rig(Mute, query="token=mallory") as r:
        assert not await r.core.open()  # a bad credential: told nothing, closed 3500
        await next_iteration()
        data = b"".join(r.transport.writes)
        assert data[:1] == b"\x88" and r.close_code() == 3500  # the close frame only
    async with rig(Mute) as r:
        assert await r.core.open()
        await r.core.receive("not json")  # an error told nothing, counted
        await next_iteration()
        assert r.transport.writes == [] and r.core.errors_in_a_row == 1


async def test_private_channels_follow_the_identity() -> None:
    async with rig(query="token=alice") as r:
        assert await r.core.open()
        assert r.core.state is State.AUTHENTICATED and r.core.principal.user_id == "alice"
        await r.core.receive('{"sub": ["user:alice:orders"]}')
        await r.core.receive('{"sub": ["user:bob:orders"]}')
        msgs = await r.out()
        assert msgs[0] == {"event": "Authenticated"}
        assert msgs[1] == {"event": "Subscribed"}
        assert msgs[2]["error"] == "forbidden" and "user:bob:orders" in msgs[2]["message"]
        # switching identity drops what the new one may not read
        await r.core.receive('{"auth": "bob"}')
        assert await r.out() == [{"event": "Authenticated"}]
        assert r.conn.channels == set()


async def test_expiry_warns_then_closes_3005_unless_refreshed() -> None:
    async with rig(query="token=alice:30", token_expiry_grace=10.0) as r:
        await r.core.open()
        await r.out()
        r.services.advance(30)
        assert r.core.state is State.EXPIRING
        assert await r.out() == [{"event": "Expiring"}]
        await r.core.receive('{"refresh": "alice:30"}')
        # mypy keeps the narrowing to EXPIRING across the await
        assert r.core.state is State.AUTHENTICATED  # type: ignore[comparison-overlap]
        r.services.advance(20)  # the old grace timer is gone
        assert not r.core.closed
        r.services.advance(30)
        r.services.advance(10)
        assert r.core.closed
        await next_iteration()
        assert r.close_code() == 3005


async def test_a_credential_accepted_inside_the_leeway_is_honoured_until_it_ends() -> None:
    """The verifier accepts a token up to ``leeway`` past its ``exp``; the core does not
    warn such a connection at once but when the leeway is over too."""
    async with rig(query="token=alice:-2", token_leeway=5.0, token_expiry_grace=10.0) as r:
        await r.core.open()
        assert await r.out() == [{"event": "Authenticated"}]
        r.services.advance(2.5)
        assert r.core.state is State.AUTHENTICATED
        r.services.advance(0.5)  # exp + leeway reached
        assert r.core.state is State.EXPIRING  # type: ignore[comparison-overlap]
        assert await r.out() == [{"event": "Expiring"}]


async def test_refresh_for_another_user_or_without_identity_is_refused() -> None:
    async with rig() as r:
        await r.core.receive('{"refresh": "alice"}')
        [err] = await r.out()
        assert err["error"] == "unauthorized" and "no identity" in err["message"]
        await r.core.receive('{"auth": "alice"}')
        await r.core.receive('{"refresh": "bob"}')
        msgs = await r.out()
        assert msgs[1]["error"] == "forbidden" and r.core.principal.user_id == "alice"


class Impatient(Toy):
    name = "impatient"
    subscribe_within = 5.0


async def test_subscribe_within_closes_an_idle_connection() -> None:
    async with rig(Impatient) as r:
        await r.core.open()
        r.services.advance(5)
        assert r.core.closed
        await next_iteration()
        assert r.close_code() == 3503
    async with rig(Impatient) as r:
        await r.core.open()
        await r.core.receive('{"sub": ["trades:BTC-USD"]}')
        r.services.advance(5)
        assert not r.core.closed


def test_the_state_table_is_the_only_way_to_move() -> None:
    for state in State:
        for trigger in Trigger:
            nxt = TRANSITIONS.get((state, trigger))
            if trigger is Trigger.CLOSED:
                assert nxt is State.CLOSED  # every state can close
            if state is State.CLOSED:
                assert nxt in (None, State.CLOSED)  # nothing reopens
    assert (State.ANONYMOUS, Trigger.REFRESHED) not in TRANSITIONS
    assert (State.ANONYMOUS, Trigger.EXPIRED) not in TRANSITIONS


# -- views: several renderings of one channel on one connection ---------------------------


class Tagged:
    """A view's wire format: each publication as ``{"view": name, "seq": n}``."""

    compressed = False

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def base(self) -> Tagged:
        return self

    def pub(self, pub: Publication) -> bytes:
        return json.dumps({"view": self.name, "seq": pub.seq}).encode()

    def snapshot(self, snap: Snapshot) -> bytes:
        return json.dumps({"view": self.name, "snapshot": snap.seq}).encode()

    def reset(self, channel: str, position: Position) -> bytes:
        return b""


@dataclass(frozen=True, eq=False)
class TagView:
    fmt: Tagged
    #: the one user who may read this view (None: anyone who may read the channel)
    only: str | None = None

    def denied(self, principal: Principal, channel: Channel) -> ProtocolError | None:
        if self.only is not None and principal.user_id != self.only:
            return ProtocolError("forbidden", f"view {self.fmt.name!r} is {self.only}'s only")
        return None


VIEWS = {
    "loud": TagView(Tagged("loud")),
    "quiet": TagView(Tagged("quiet")),
    "alice": TagView(Tagged("alice's"), only="alice"),
}


class Viewing(Toy):
    """The toy with ``"view": name`` on sub/unsub (unsub strict), ``{"resume": [[view,
    channel, epoch, seq], ...]}`` and a farewell before every close."""

    name = "viewing"

    def parse(self, frame: str) -> list[Command]:
        msg = json.loads(frame)
        view = VIEWS.get(msg.get("view"))
        if "sub" in msg:
            return [Subscribe(None, [(parse_channel(c), None) for c in msg["sub"]], view=view)]
        if "unsub" in msg:
            channels = [parse_channel(c) for c in msg["unsub"]]
            return [Unsubscribe(None, channels, view=view, strict=True)]
        if "resume" in msg:
            items = [
                (VIEWS.get(v), parse_channel(c), Position(e, n) if e else None)
                for v, c, e, n in msg["resume"]
            ]
            return [Resume(None, items)]
        return super().parse(frame)

    def render(self, event: Event) -> bytes:
        if isinstance(event, Resumed):
            channels = [c.channel for c in event.channels]
            return json.dumps({"resumed": channels, "recovered": event.recovered}).encode()
        return super().render(event)

    def farewell(self, code: int) -> list[bytes]:
        return [json.dumps({"bye": code}).encode()]


def by_view(msgs: list[dict[str, Any]]) -> dict[str, list[int]]:
    """The publications' seqs each view got (the views' lanes are written apart)."""
    got: dict[str, list[int]] = {}
    for m in msgs:
        if "view" in m:
            got.setdefault(m["view"], []).append(m.get("seq", m.get("snapshot", -1)))
        elif m.get("type") == "pub":
            got.setdefault("own", []).append(m["seq"])
    return got


async def test_views_of_one_channel_stream_apart_and_count_against_one_limit() -> None:
    async with rig(Viewing, max_channels=3) as r:
        for view in ("loud", "quiet"):
            await r.core.receive(json.dumps({"sub": ["trades:BTC-USD"], "view": view}))
        await r.core.receive('{"sub": ["trades:BTC-USD"]}')  # the dialect's own format
        assert await r.out() == [{"event": "Subscribed"}] * 3
        assert r.core.channel_count == 3 and len(r.core.lanes) == 2
        await r.engine.publish("trades:BTC-USD", b"{}")
        assert by_view(await r.out()) == {"loud": [1], "quiet": [1], "own": [1]}
        # a fourth (view, channel) is over the limit, whichever view it names
        await r.core.receive('{"sub": ["trades:ETH-USD"], "view": "loud"}')
        [err] = await r.out()
        assert err["error"] == "too_many_channels" and "limit of 3" in err["message"]
        assert r.core.lanes[VIEWS["loud"].fmt].channels == {"trades:BTC-USD"}


async def test_unsubscribing_one_view_leaves_the_others_and_strict_names_what_is_not_held() -> None:
    async with rig(Viewing) as r:
        await r.core.receive('{"unsub": ["trades:BTC-USD"], "view": "loud"}')
        [err] = await r.out()
        assert err["error"] == "not_subscribed" and not r.core.lanes  # no lane made for it
        for view in ("loud", "quiet"):
            await r.core.receive(json.dumps({"sub": ["trades:BTC-USD"], "view": view}))
        await r.core.receive('{"unsub": ["trades:BTC-USD"], "view": "loud"}')
        await r.out()
        await r.engine.publish("trades:BTC-USD", b"{}")
        assert by_view(await r.out()) == {"quiet": [1]}
        await r.core.receive('{"unsub": ["trades:BTC-USD", "trades:ETH-USD"], "view": "quiet"}')
        [err] = await r.out()
        assert err["error"] == "not_subscribed" and "trades:ETH-USD" in err["message"]
        assert r.core.subscriptions() == [(VIEWS["quiet"], "trades:BTC-USD")]  # all or nothing
        assert r.core.errors_in_a_row == 1  # the good unsubscribe in between reset it


async def test_a_views_own_rule_is_checked_and_followed_across_identities() -> None:
    async with rig(Viewing) as r:
        await r.core.receive('{"sub": ["trades:BTC-USD"], "view": "alice"}')
        [err] = await r.out()
        assert err["error"] == "forbidden" and "alice's only" in err["message"]
        await r.core.receive('{"auth": "alice"}')
        await r.core.receive('{"sub": ["trades:BTC-USD"], "view": "alice"}')
        await r.core.receive('{"sub": ["trades:BTC-USD"], "view": "loud"}')
        assert [m["event"] for m in await r.out()] == ["Authenticated", "Subscribed", "Subscribed"]
        await r.core.receive('{"auth": "bob"}')  # bob may read the channel, not alice's view
        assert await r.out() == [{"event": "Authenticated"}]
        assert r.core.subscriptions() == [(VIEWS["loud"], "trades:BTC-USD")]


async def test_resume_restores_each_item_on_its_own_and_says_whether_all_recovered() -> None:
    async with rig(Viewing) as r:
        pubs = [await r.engine.publish("trades:BTC-USD", b"{}") for _ in range(3)]
        epoch = pubs[0].epoch
        await r.core.receive(
            json.dumps(
                {
                    "resume": [
                        ["loud", "trades:BTC-USD", epoch, 1],
                        ["quiet", "trades:DOGE-USD", epoch, 1],  # no such market any more
                    ]
                }
            )
        )
        msgs = await r.out()
        assert msgs[0] == {"resumed": ["trades:BTC-USD"], "recovered": False}
        assert by_view(msgs[1:]) == {"loud": [2, 3]}  # missed since seq 1, after the reply
        await r.core.receive(json.dumps({"resume": [["quiet", "trades:BTC-USD", epoch, 3]]}))
        assert await r.out() == [{"resumed": ["trades:BTC-USD"], "recovered": True}]
        assert r.core.channel_count == 2 and r.core.errors_in_a_row == 0


async def test_close_says_the_dialects_farewell_and_ends_every_view() -> None:
    async with rig(Viewing) as r:
        await r.core.receive('{"sub": ["trades:BTC-USD"], "view": "loud"}')
        await r.out()
        r.core.close(3504)
        await next_iteration()
        assert r.transport.messages() == [{"bye": 3504}] and r.close_code() == 3504
        assert all(lane.closed for lane in r.core.lanes.values())
        assert r.hub.channel_count == 0


class Unrefreshable(Toy):
    name = "unrefreshable"
    refreshable = False


async def test_a_dialect_that_cannot_refresh_is_closed_at_expiry_without_grace() -> None:
    async with rig(Unrefreshable, query="token=alice:30", token_expiry_grace=10.0) as r:
        assert await r.core.open()
        await r.out()
        r.services.advance(30)
        assert r.core.closed
        await next_iteration()
        assert r.transport.messages() == [{"event": "Expiring"}] and r.close_code() == 3005


# -- the same toy dialect mounted on a real server ----------------------------------------


class Gated(Toy):
    name = "gated"

    def __init__(self, handshake: Handshake) -> None:
        super().__init__(handshake)
        if handshake.first("token") is None:
            raise Refused(401, "unauthorized", "token required", b"token required", "text/plain")


@asynccontextmanager
async def toy_server(**overrides: Any) -> AsyncIterator[tuple[str, web.Application]]:
    flags = {"host": "127.0.0.1", "port": 0, "key_store": ":memory:", **overrides}
    app = build_app(load_config(flags, env={}))
    mount(app, app[NODE_KEY], Toy, ["/toy"])
    mount(app, app[NODE_KEY], Gated, ["/gated"])
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}", app
    finally:
        await runner.cleanup()


async def test_a_mounted_toy_dialect_streams_and_is_closed_by_the_shared_policy() -> None:
    async with toy_server() as (addr, app), aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://{addr}/toy")
        await ws.send_str('{"sub": ["trades:BTC-USD"]}')
        assert json.loads((await ws.receive(timeout=5)).data) == {"event": "Subscribed"}
        await app[NODE_KEY].engine.publish("trades:BTC-USD", b'{"n": 7}')
        pub = json.loads((await ws.receive(timeout=5)).data)
        assert (pub["seq"], pub["data"]) == (1, {"n": 7})
        # binary frames are not part of the toy protocol: the core's default answers
        await ws.send_bytes(b"\x00")
        err = json.loads((await ws.receive(timeout=5)).data)
        assert err["error"] == "binary_not_supported"
        for _ in range(Toy.max_errors_in_a_row):
            await ws.send_str('{"sub": ["nonsense"]}')
        codes = set()
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            codes.add(json.loads(msg.data)["error"])
        assert codes == {"bad_channel", "binary_not_supported"} or codes == {"unknown_channel"}
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 3503


async def test_a_dialect_can_refuse_the_handshake_with_http() -> None:
    async with toy_server() as (addr, _), aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"ws://{addr}/gated")
        assert info.value.status == 401


class Verified(Toy):
    """A toy that needs its handshake credential verified before the upgrade, and follows
    every authentication by subscribing the user's own order stream."""

    name = "verified-toy"

    def credential_required(self) -> bool:
        return True

    def after(self, event: Event) -> list[Command]:
        if isinstance(event, Authenticated) and event.principal.user_id is not None:
            channel = parse_channel(f"user:{event.principal.user_id}:orders")
            return [Subscribe("auto", [(channel, None)])]
        return []


async def test_open_with_a_verified_principal_runs_the_dialects_follow_up() -> None:
    async with rig(Verified) as r:
        assert await r.core.open(Principal("alice", expires_at=r.services.clock + 60))
        assert await r.out() == [{"event": "Authenticated"}, {"event": "Subscribed"}]
        assert r.conn.channels == {"user:alice:orders"}
        # authenticating in-band as another user: the old user's stream is dropped and the
        # new one's subscribed by the follow-up
        await r.core.receive('{"auth": "bob"}')
        assert await r.out() == [{"event": "Authenticated"}, {"event": "Subscribed"}]
        assert r.conn.channels == {"user:bob:orders"}


async def test_credential_required_is_checked_before_the_upgrade() -> None:
    config = load_config({"host": "127.0.0.1", "port": 0, "key_store": ":memory:"}, env={})
    app = build_app(config)
    node = app[NODE_KEY]
    verified: list[str] = []

    async def verify_token(token: str) -> Principal:
        if token != "alice":
            raise AuthError("bad_signature", "token signature does not verify")
        verified.append(token)
        return Principal("alice")

    node.verify_token = verify_token
    mount(app, node, Verified, ["/must"])
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/must"
    try:
        async with aiohttp.ClientSession() as http:
            for query in ("", "?token=mallory"):
                async with http.get(base + query) as resp:
                    assert resp.status == 401
                    assert (await resp.json())["error"] in ("unauthorized", "bad_signature")
            ws = await http.ws_connect(base.replace("http", "ws") + "?token=alice")
            got = [json.loads((await ws.receive(timeout=5)).data) for _ in range(2)]
            assert got == [{"event": "Authenticated"}, {"event": "Subscribed"}]
            assert verified == ["alice"]  # verified once, before the upgrade
            await ws.close()
    finally:
        await runner.cleanup()

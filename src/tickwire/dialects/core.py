"""The connection core every dialect shares: identity, limits, errors, subscriptions.

A server shell gives each connection a :class:`ConnectionCore` with the dialect's
per-connection :class:`~tickwire.dialects.base.Dialect` and the hub's
:class:`~tickwire.hub.Connection`, then feeds it frames. The core imports no asyncio and
no aiohttp: it awaits only the hub and the credential verifier it is given, and the shell
supplies its timers and clocks (:class:`Services`), so it is unit-tested with bytes.

Everything that changes a connection's state is in :data:`TRANSITIONS` below.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from tickwire.auth import ANONYMOUS, AuthError, Principal, authorize
from tickwire.dialects.base import (
    Authenticate,
    Authenticated,
    Close,
    Command,
    Credential,
    Dialect,
    Event,
    Expiring,
    Ping,
    Pong,
    Reply,
    RequestId,
    Resume,
    Resumed,
    Subscribe,
    Subscribed,
    SubscribedChannel,
    Unsubscribe,
    Unsubscribed,
    View,
    dialect_error,
)
from tickwire.dialects.errors import ProtocolError
from tickwire.engine.base import EngineError
from tickwire.hub import (
    CLOSE_KEY_REVOKED,
    CLOSE_POLICY,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_UNAUTHORIZED,
    Catchup,
    Connection,
    Hub,
    WireFormat,
)
from tickwire.model.channels import Channel, parse_channel
from tickwire.model.errors import TickwireError
from tickwire.model.publication import Position
from tickwire.model.ratelimit import TokenBucket

log = logging.getLogger(__name__)


class State(enum.Enum):
    """Where a connection stands with its identity."""

    #: open, no identity: public channels only
    ANONYMOUS = "anonymous"
    #: acting as a verified principal
    AUTHENTICATED = "authenticated"
    #: the principal's credential expired: a refresh within the grace period, or close
    EXPIRING = "expiring"
    #: closed: nothing more is read or sent
    CLOSED = "closed"


class Trigger(enum.Enum):
    AUTHENTICATED = "authenticated"
    REFRESHED = "refreshed"
    EXPIRED = "expired"
    CLOSED = "closed"


#: The whole state machine: (state, trigger) -> next state. A pair not listed is refused
#: (:meth:`ConnectionCore._move` raises), so a new rule is one line here.
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.ANONYMOUS, Trigger.AUTHENTICATED): State.AUTHENTICATED,
    (State.AUTHENTICATED, Trigger.AUTHENTICATED): State.AUTHENTICATED,
    (State.AUTHENTICATED, Trigger.REFRESHED): State.AUTHENTICATED,
    (State.AUTHENTICATED, Trigger.EXPIRED): State.EXPIRING,
    (State.EXPIRING, Trigger.AUTHENTICATED): State.AUTHENTICATED,
    (State.EXPIRING, Trigger.REFRESHED): State.AUTHENTICATED,
    (State.ANONYMOUS, Trigger.CLOSED): State.CLOSED,
    (State.AUTHENTICATED, Trigger.CLOSED): State.CLOSED,
    (State.EXPIRING, Trigger.CLOSED): State.CLOSED,
    (State.CLOSED, Trigger.CLOSED): State.CLOSED,
}


class Cancellable(Protocol):
    def cancel(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may do (from the config's one schema)."""

    max_channels: int = 1000
    #: frames over this many bytes get ``frame_too_large`` (larger ones the shell refuses)
    max_frame_bytes: int = 65_536
    requests_per_second: float = 100.0
    request_burst: float = 200.0
    token_expiry_grace: float = 10.0
    #: the clock skew the verifier tolerates on ``exp`` (``auth_leeway``): a credential it
    #: accepted is honoured until then, so one accepted inside the leeway is not warned at once
    token_leeway: float = 0.0


class Services(Protocol):
    """What the core needs from the node; the server shell provides it."""

    @property
    def hub(self) -> Hub: ...

    @property
    def limits(self) -> Limits: ...

    def channel_exists(self, channel: Channel) -> bool: ...

    def verify(self, credential: Credential) -> Awaitable[Principal]:
        """The principal of a credential; raises :class:`AuthError`."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable: ...

    def time(self) -> float:
        """Wall-clock seconds (credential expiry)."""

    def monotonic(self) -> float:
        """Monotonic seconds (rate limiting)."""

    def now_ms(self) -> int:
        """Wall-clock milliseconds (pong timestamps)."""


class ConnectionCore:
    """One client connection's protocol state, the same for every dialect."""

    def __init__(self, services: Services, dialect: Dialect, conn: Connection) -> None:
        self.services = services
        self.hub = services.hub
        self.limits = services.limits
        self.dialect = dialect
        self.conn = conn
        self.state = State.ANONYMOUS
        self.principal: Principal = ANONYMOUS
        self.errors_in_a_row = 0
        self._bucket = TokenBucket(
            self.limits.requests_per_second, self.limits.request_burst, services.monotonic()
        )
        self._expiry: Cancellable | None = None
        self._deadline: Cancellable | None = None
        self._finished = False
        self._ticker: Cancellable | None = None
        #: one hub connection per view format, on ``conn``'s transport (see :class:`View`)
        self.lanes: dict[WireFormat, Connection] = {}
        self._views: dict[WireFormat, View] = {}

    # -- the shell's calls ------------------------------------------------------------

    async def open(self, principal: Principal | None = None) -> bool:
        """Greet, check the handshake's credential and run the dialect's opening commands.
        False when the connection was closed (a handshake credential that fails).

        ``principal`` is the handshake credential's identity when the shell verified it
        before the upgrade (:meth:`Dialect.credential_required`)."""
        for payload in self.dialect.greeting():
            self.send(payload)
        credential = self.dialect.credential()
        if principal is not None:
            await self._after(self._become(principal, None, refresh=False))
        elif credential is not None:
            try:
                principal = await self.services.verify(credential)
            except AuthError as exc:
                self.send(self.dialect.render_error(dialect_error(exc)))
                self.close(CLOSE_UNAUTHORIZED)
                return False
            await self._after(self._become(principal, None, refresh=False))
        within = self.dialect.subscribe_within
        if within is not None:
            self._deadline = self.services.call_later(within, self._no_subscription)
        self._arm_tick()
        for cmd in self.dialect.opening():
            if not await self._run(cmd):
                break
        return not self.closed

    async def receive(self, frame: str) -> None:
        """One inbound text frame."""
        if self.closed:
            return
        limit = self.limits.max_frame_bytes
        if len(frame) > limit or (4 * len(frame) > limit and len(frame.encode()) > limit):
            self.fail(ProtocolError("frame_too_large", f"frame exceeds {limit} bytes"))
            return
        await self._frame(lambda: self.dialect.parse(frame))

    async def receive_binary(self, frame: bytes) -> None:
        """One inbound binary frame."""
        if self.closed:
            return
        limit = self.limits.max_frame_bytes
        if len(frame) > limit:
            self.fail(ProtocolError("frame_too_large", f"frame exceeds {limit} bytes"))
            return
        await self._frame(lambda: self.dialect.parse_binary(frame))

    def finish(self) -> None:
        """The connection ended (either side): cancel timers, leave every channel, tell
        the dialect (once)."""
        self._cancel_timers()
        self.state = TRANSITIONS[(self.state, Trigger.CLOSED)]
        for conn in (self.conn, *self.lanes.values()):
            if not conn.closed:
                self.hub.disconnect(conn)
        if not self._finished:
            self._finished = True
            self.dialect.finished()

    # -- sending and closing ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED or self.conn.closed

    def send(self, payload: bytes) -> None:
        """Queue one message; ``b""`` is nothing to say (a dialect that tells nothing
        now), never an empty frame: Socket.IO's WebSocket path writes the hub's frames
        as they are and an empty message is not an Engine.IO packet."""
        if payload:
            self.hub.send(self.conn, payload)

    def emit(self, event: Event) -> None:
        payload = self.dialect.render(event)
        if isinstance(payload, list):
            for part in payload:
                self.send(part)
        elif payload is not None:
            self.send(payload)

    def fail(self, error: ProtocolError) -> None:
        """Tell the client; too many errors in a row close the connection."""
        self.send(self.dialect.render_error(error))  # b"": nothing (Socket.IO before connect)
        self.errors_in_a_row += 1
        if self.errors_in_a_row >= self.dialect.max_errors_in_a_row:
            self.close(CLOSE_POLICY, "too many errors")

    def close(self, code: int, reason: str | None = None) -> None:
        """Close after what is queued (and the dialect's :meth:`~Dialect.farewell`), with
        ``code``; the views' streams end at once."""
        self._cancel_timers()
        if not self.closed:
            for payload in self.dialect.farewell(code):
                self.send(payload)
        self.state = TRANSITIONS[(self.state, Trigger.CLOSED)]
        self.conn.close(code, reason)
        for lane in self.lanes.values():
            if not lane.closed:
                self.hub.disconnect(lane)

    def revoked(self, key_names: Collection[str]) -> bool:
        """Close with :data:`CLOSE_KEY_REVOKED` if this connection acts with one of
        ``key_names`` (revoked in the key store); True if it did."""
        name = self.principal.key_name
        if self.closed or name is None or name not in key_names:
            return False
        self.close(CLOSE_KEY_REVOKED)
        return True

    # -- frames and commands ----------------------------------------------------------

    async def _frame(self, parse: Callable[[], list[Command]]) -> None:
        if not self._bucket.take(self.services.monotonic()):
            self.fail(ProtocolError("rate_limited", "too many requests: slow down"))
            return
        try:
            commands = parse()
        except TickwireError as exc:  # any client-visible error: its own code and message
            self.fail(dialect_error(exc))
            return
        except Exception:
            # a bug of ours in a parser: the client is told, the connection goes on
            log.exception("%s: parsing a frame failed", self.dialect.name)
            self.fail(ProtocolError("internal", "the server failed to read the request"))
            return
        ok = True
        for cmd in commands:
            ok = await self._run(cmd) and ok
            if self.closed:
                return
        if ok:
            self.errors_in_a_row = 0
        self._arm_tick()

    async def _run(self, cmd: Command) -> bool:
        """Execute one command; False when it failed (the client was told)."""
        rid = getattr(cmd, "id", None)
        try:
            await self._execute(cmd)
        except TickwireError as exc:
            self.fail(dialect_error(exc, rid))
            return False
        except Exception:
            log.exception("%s: a request failed", self.dialect.name)
            self.fail(ProtocolError("internal", "the server failed to serve the request", rid))
            return False
        return True

    async def _execute(self, cmd: Command) -> None:
        if isinstance(cmd, Subscribe):
            await self._subscribe(cmd)
        elif isinstance(cmd, Unsubscribe):
            self._unsubscribe(cmd)
        elif isinstance(cmd, Ping):
            self.emit(Pong(cmd.id, self.services.now_ms()))
        elif isinstance(cmd, Authenticate):
            await self._authenticate(cmd)
        elif isinstance(cmd, Reply):
            self.send(cmd.payload)
        elif isinstance(cmd, Close):
            self.close(cmd.code, cmd.reason)
        elif isinstance(cmd, Resume):
            await self._resume(cmd)
        else:  # pragma: no cover - Command is a closed union
            raise TypeError(f"unknown command {cmd!r}")

    # -- identity ---------------------------------------------------------------------

    async def _verify(self, credential: Credential, rid: RequestId) -> Principal:
        try:
            return await self.services.verify(credential)
        except AuthError as exc:
            raise dialect_error(exc, rid) from None

    async def _authenticate(self, cmd: Authenticate) -> None:
        if cmd.refresh and self.state is State.ANONYMOUS:
            raise ProtocolError(
                "unauthorized", "refresh: this connection has no identity to refresh", cmd.id
            )
        principal = await self._verify(cmd.credential, cmd.id)
        if self.closed:
            return
        if cmd.refresh and principal.user_id != self.principal.user_id:
            raise ProtocolError("forbidden", "refresh token is for another user", cmd.id)
        await self._after(self._become(principal, cmd.id, refresh=cmd.refresh))

    async def _after(self, event: Event) -> None:
        """Run the dialect's follow-up commands of ``event``."""
        for cmd in self.dialect.after(event):
            if self.closed or not await self._run(cmd):
                break

    def _become(self, principal: Principal, rid: RequestId, *, refresh: bool) -> Authenticated:
        """Act as ``principal`` from now on (its credential verified)."""
        self._move(Trigger.REFRESHED if refresh else Trigger.AUTHENTICATED)
        self.principal = principal
        dropped = []
        for view, conn in self._held():
            for name in sorted(conn.channels):
                if self._denied(view, parse_channel(name), principal) is not None:
                    self.hub.unsubscribe(conn, name)
                    dropped.append(name)
        self._schedule_expiry(principal.expires_at)
        event = Authenticated(rid, principal, tuple(dropped), refresh)
        self.emit(event)
        return event

    def _schedule_expiry(self, expires_at: float | None) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if expires_at is not None:
            delay = max(0.0, expires_at + self.limits.token_leeway - self.services.time())
            self._expiry = self.services.call_later(delay, self._expired)

    def _expired(self) -> None:
        if self.closed:
            return
        self._move(Trigger.EXPIRED)
        grace = self.limits.token_expiry_grace if self.dialect.refreshable else 0.0
        self.emit(Expiring(grace))
        if grace <= 0:
            self.close(CLOSE_TOKEN_EXPIRED)
        else:
            self._expiry = self.services.call_later(grace, self._grace_over)

    def _grace_over(self) -> None:
        if self.state is State.EXPIRING:
            self.close(CLOSE_TOKEN_EXPIRED)

    def _move(self, trigger: Trigger) -> None:
        nxt = TRANSITIONS.get((self.state, trigger))
        if nxt is None:
            raise ProtocolError(
                "bad_request", f"not possible now: {trigger.value} while {self.state.value}"
            )
        self.state = nxt

    # -- subscriptions ----------------------------------------------------------------

    def check(
        self, channel: Channel, principal: Principal, rid: RequestId, view: View | None = None
    ) -> None:
        """Raise :class:`ProtocolError` unless ``principal`` may read ``channel`` (in
        ``view``: the view's own rule first)."""
        if view is not None:
            refused = view.denied(principal, channel)
            if refused is not None:
                raise dialect_error(refused, rid)
        if not channel.private and not self.services.channel_exists(channel):
            raise ProtocolError(
                "unknown_channel",
                f"channel {channel.name!r}: unknown symbol {channel.symbol!r}",
                rid,
            )
        denied = authorize(principal, channel)
        if denied is not None:
            raise ProtocolError(denied.code, denied.message, rid)

    async def _subscribe(self, cmd: Subscribe) -> None:
        rid = cmd.id
        principal = self.principal
        if cmd.credential is not None:
            principal = await self._verify(cmd.credential, rid)
        items = list(cmd.items)
        if cmd.own:
            if principal.user_id is None:
                raise ProtocolError(
                    "unauthorized", "this subscription needs credentials: a user's own data", rid
                )
            items += [(parse_channel(f"user:{principal.user_id}:{s}"), None) for s in cmd.own]
        seen: dict[str, tuple[Channel, Position | None]] = {}
        view = cmd.view
        for channel, since in items:
            self.check(channel, principal, rid, view)
            seen[channel.name] = (channel, since)
        conn = self._conn_of(view)
        new = [name for name in seen if name not in conn.channels]
        self._within_limit(len(new), rid)
        catchups = await self._hub_subscribe(conn, list(seen.values()), rid)
        if self.closed:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        reply = tuple(
            SubscribedChannel(
                c.channel,
                c.position.epoch,
                c.position.seq,
                c.recovered if seen[c.channel][1] is not None else None,
            )
            for c in catchups
        )
        self.emit(Subscribed(rid, reply, tuple(sorted(conn.channels))))
        for catchup in catchups:  # synchronous: nothing slips in between reply and data
            self.hub.go_live(conn, catchup)

    def _within_limit(self, more: int, rid: RequestId) -> None:
        """The channel limit counts every view's channels: one per (view, channel)."""
        limit = self.limits.max_channels
        if self.channel_count + more > limit:
            raise ProtocolError(
                "too_many_channels",
                f"subscribing to {more} more channels would exceed the limit of "
                f"{limit} per connection",
                rid,
            )

    @property
    def channel_count(self) -> int:
        """Channels held, in every view."""
        return sum(len(conn.channels) for _, conn in self._held())

    def subscriptions(self) -> list[tuple[View | None, str]]:
        """Every (view, channel) held (None: the dialect's own format), e.g. to save a
        session for :class:`Resume`."""
        return [(view, name) for view, conn in self._held() for name in sorted(conn.channels)]

    def _held(self) -> list[tuple[View | None, Connection]]:
        return [(None, self.conn), *((self._views[f], c) for f, c in self.lanes.items())]

    def _denied(self, view: View | None, channel: Channel, principal: Principal) -> object:
        if view is not None:
            refused = view.denied(principal, channel)
            if refused is not None:
                return refused
        return authorize(principal, channel)

    def _conn_of(self, view: View | None) -> Connection:
        """The hub connection of ``view`` (made at its first use)."""
        if view is None:
            return self.conn
        fmt = view.fmt
        lane = self.lanes.get(fmt)
        if lane is None:
            lane = self.lanes[fmt] = self.hub.connect(self.conn.transport, fmt, self.conn.cap)
            self._views[fmt] = view
        return lane

    async def _resume(self, cmd: Resume) -> None:
        resumed: list[tuple[Connection, Catchup]] = []
        recovered = True
        for view, channel, since in cmd.items:
            conn = self._conn_of(view)
            try:
                self.check(channel, self.principal, cmd.id, view)
                if channel.name not in conn.channels:
                    self._within_limit(1, cmd.id)
                catchup = await self.hub.subscribe(conn, channel.name, channel.stateful, since)
            except (TickwireError, EngineError, ConnectionError) as exc:
                log.info("%s: not resumed: %s: %s", self.dialect.name, channel.name, exc)
                self.hub.abandon(conn, channel.name)
                recovered = False
                continue
            if self.closed:
                return
            recovered = recovered and bool(catchup.recovered)
            resumed.append((conn, catchup))
        reply = tuple(
            SubscribedChannel(c.channel, c.position.epoch, c.position.seq, c.recovered)
            for _, c in resumed
        )
        self.emit(Resumed(cmd.id, reply, recovered))
        for conn, catchup in resumed:  # after the reply, with nothing in between
            self.hub.go_live(conn, catchup)

    async def _hub_subscribe(
        self, conn: Connection, items: list[tuple[Channel, Position | None]], rid: RequestId
    ) -> list[Catchup]:
        """All or nothing: on any failure no channel of the request leaves a trace (no
        pending entry, engine membership or buffer), and a channel the connection had
        already goes on from where it stood (:meth:`Hub.abandon`)."""
        catchups: list[Catchup] = []
        try:
            for channel, since in items:
                catchups.append(
                    await self.hub.subscribe(conn, channel.name, channel.stateful, since)
                )
        except EngineError as exc:
            self._abandon(conn, items)
            # the engine's own message names internal hosts: log it, tell the client less
            log.warning("subscribe failed: %s", exc)
            raise ProtocolError(
                "unavailable", "cannot subscribe now: the data store is unreachable; retry", rid
            ) from None
        except BaseException:
            self._abandon(conn, items)
            raise
        return catchups

    def _abandon(self, conn: Connection, items: list[tuple[Channel, Position | None]]) -> None:
        for channel, _ in items:
            self.hub.abandon(conn, channel.name)

    def _unsubscribe(self, cmd: Unsubscribe) -> None:
        view = cmd.view
        # a view never subscribed gets no hub connection just to find nothing there
        conn = self.conn if view is None else self.lanes.get(view.fmt)
        held: set[str] = set() if conn is None else conn.channels
        if cmd.channels is None:
            names = sorted(held)
        else:
            names = [ch.name for ch in cmd.channels]
        if cmd.strict:
            missing = [name for name in names if name not in held]
            if missing:
                raise ProtocolError("not_subscribed", f"not subscribed to {missing[0]!r}", cmd.id)
        removed = tuple(
            name for name in names if conn is not None and self.hub.unsubscribe(conn, name)
        )
        self.emit(Unsubscribed(cmd.id, removed, tuple(sorted(held))))

    def _arm_tick(self) -> None:
        """Start the periodic timer when the dialect has something to send."""
        interval = self.dialect.tick_interval
        if interval is not None and self._ticker is None and not self.closed:
            if self.dialect.ticking():
                self._ticker = self.services.call_later(interval, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        if self.closed:
            return
        try:
            payloads = self.dialect.tick()
        except Exception:
            log.exception("%s: a periodic message failed", self.dialect.name)
            payloads = []
        for payload in payloads:
            self.send(payload)
        self._arm_tick()

    def _no_subscription(self) -> None:
        self._deadline = None
        if not self.closed and not self.channel_count:
            self.close(CLOSE_POLICY, "no subscription")

    def _cancel_timers(self) -> None:
        for timer in (self._expiry, self._deadline, self._ticker):
            if timer is not None:
                timer.cancel()
        self._expiry = self._deadline = self._ticker = None

"""The asyncio client of the native protocol (docs/protocol.md): one WebSocket that
stays up, and a gap-free stream per channel.

What it does for you:

- reconnects with exponential backoff and full jitter (:class:`Backoff`), to the next
  URL of the list; close codes 3000-3499 and abnormal closes (1006) reconnect and
  recover, 3500 and above stop with :class:`ServerClosed`;
- resubscribes every channel with ``since`` = the last message it delivered, so the
  server replays what was missed (:class:`Recovered`) or says it cannot and a fresh
  snapshot follows (:class:`Resynced`);
- refreshes the token in-band (``refresh``) before it expires, with ``token_provider``;
- checks every push: a duplicate is dropped, a skipped seq or a new epoch makes it
  resubscribe ``since`` the last message, and a book whose checksum differs from the
  server's is rebuilt from a fresh snapshot. The user never gets a duplicate, and never
  a gap without an event that says so.

Backpressure: each subscription has a bounded queue. When the code reading it falls
behind, the client stops reading the socket, the server eventually cuts it as a slow
consumer (3008), and the client reconnects and recovers from history.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from tickwire.client.backoff import Backoff
from tickwire.client.book import BookMismatch, LocalBook
from tickwire.client.errors import (
    ConnectError,
    Forbidden,
    InvalidChannel,
    InvalidURL,
    RequestError,
    ServerClosed,
    TickwireError,
    TokenProviderError,
    Unauthorized,
)
from tickwire.client.messages import (
    MESSAGE_TYPES,
    PAYLOAD_TYPES,
    BookUpdate,
    Connected,
    Event,
    Item,
    Malformed,
    Message,
    Reconnecting,
    Recovered,
    Resynced,
    TokenRefreshed,
    message_kind,
)
from tickwire.model.channels import ChannelError, parse_channel
from tickwire.model.publication import Position

log = logging.getLogger("tickwire.client")

#: An async callable that returns a fresh token (e.g. from ``POST /jwt``).
TokenProvider = Callable[[], Awaitable[str]]
#: Called with every connection event (a plain or an async function).
EventHandler = Callable[[Event], Any]

#: Close codes after which the client does not reconnect (besides 3500 and above).
STOP_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 1010})
#: Server error codes that mean "try that again later".
RETRYABLE_ERRORS = frozenset({"unavailable", "internal", "rate_limited"})
#: Fewest seconds between two token refreshes.
MIN_REFRESH_INTERVAL = 1.0
_CHANNEL_IN_MESSAGE = re.compile(r"channel '([^']+)'")


def check_url(url: str) -> str:
    """``url`` if it is a ``ws://`` or ``wss://`` URL with a host; else :class:`InvalidURL`."""
    if not isinstance(url, str):
        raise InvalidURL(f"the URL must be a string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidURL(f"{url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("ws", "wss") or not host:
        shown = f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else url[:80]
        raise InvalidURL(
            f"{shown!r} is not a WebSocket URL: expected ws://HOST[:PORT]/ws or wss://HOST/ws"
        )
    return url


def close_means_stop(code: int) -> bool:
    """True for close codes after which reconnecting as is cannot help."""
    return code >= 3500 or code in STOP_CLOSE_CODES


def refresh_margin(lifetime: float) -> float:
    """Seconds before expiry at which a token is refreshed: a fifth of its lifetime,
    at least half a second and at most a minute."""
    return min(60.0, max(0.5, lifetime / 5))


@dataclass
class ClientStats:
    """What the client counted since it started."""

    messages: int = 0
    duplicates: int = 0
    gaps: int = 0
    malformed: int = 0
    reconnects: int = 0
    recovered: int = 0
    resynced: int = 0
    refreshes: int = 0
    checksum_mismatches: int = 0


class _Frame(msgspec.Struct):
    """Any frame of the server; which fields are set depends on ``type``."""

    type: str = ""
    id: int | str | None = None
    channel: str | None = None
    seq: int | None = None
    epoch: str | None = None
    ts: int = 0
    data: msgspec.Raw = msgspec.Raw(b"")
    code: str | None = None
    message: str | None = None
    channels: list[Any] | None = None
    user: str | None = None
    expires_at: float | None = None
    unsubscribed: list[str] | None = None


_decode_frame = msgspec.json.Decoder(_Frame).decode
_encode = msgspec.json.Encoder().encode


class _Retry(Exception):
    """This connection attempt failed in a way another attempt may not."""


class _End:
    """The end of a subscription's stream; ``error`` is raised to its reader."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class _Chan:
    """One subscribed channel: where its stream stands and what is being fixed."""

    def __init__(self, name: str, sub: Subscription, since: Position | None) -> None:
        ch = parse_channel(name)
        self.name = name
        self.kind = message_kind(ch.kind, ch.private)
        self.stateful = ch.stateful
        self.sub = sub
        self.book = LocalBook(name) if self.kind == "book" else None
        #: the last message delivered (None: nothing yet)
        self.position: Position | None = since if self.book is None else None
        #: a state channel that must start from a (fresh) snapshot
        self.need_snapshot = self.stateful and self.position is None
        #: the subscribe request this channel waits on; pushes are dropped meanwhile
        self.pending: int | str | None = None
        self.since: Position | None = None
        #: why the stream was restarted, reported with the subscribe reply
        self.reason: str | None = None
        self.retries = 0
        #: the subscription drops this book's messages until the resync it asked for
        self.dropping = False

    def since_for_resubscribe(self) -> Position | None:
        if self.need_snapshot:
            return None
        return self.position


@dataclass
class _Request:
    op: str
    chans: list[_Chan]
    sub: Subscription | None = None


class Subscription:
    """The stream of some channels: ``async for item in sub`` yields their messages
    (:data:`~tickwire.client.messages.AnyMessage`) and the events
    (:data:`~tickwire.client.messages.Event`) of the connection and of these channels,
    in order. Raises what stopped the client (e.g. :class:`Forbidden`,
    :class:`ServerClosed`); ends after :meth:`close`."""

    def __init__(
        self,
        client: Client,
        channels: Sequence[str],
        since: Mapping[str, Position],
        queue_size: int,
    ) -> None:
        self.client = client
        self.channels = tuple(channels)
        self._since = dict(since)
        self._queue: asyncio.Queue[Item | _End] = asyncio.Queue(maxsize=queue_size)
        self._ready: asyncio.Future[None] | None = None
        self._chans: list[_Chan] = []
        self._ended = False

    def __aiter__(self) -> AsyncIterator[Item]:
        return self

    async def __anext__(self) -> Item:
        if self._ready is None:
            await self.start()
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                self._queue.put_nowait(item)  # every later call ends the same way
                if item.error is not None:
                    raise item.error
                raise StopAsyncIteration
            if isinstance(item, BookUpdate | Resynced) and not await self._book(item):
                continue
            return item

    async def _book(self, item: BookUpdate | Resynced) -> bool:
        """Apply a book channel's message to its :class:`LocalBook` as it is handed over;
        False drops it (a mismatch, and what was queued behind it until the resync)."""
        ch = next((c for c in self._chans if c.name == item.channel), None)
        book = None if ch is None else ch.book
        if ch is None or book is None:
            return True
        if isinstance(item, Resynced):
            book.clear()  # a snapshot follows
            ch.dropping = False
            return True
        if ch.dropping:
            return False
        try:
            if item.snapshot:
                book.load(item.data, item.epoch, item.seq)
            else:
                book.apply(item.data, item.epoch, item.seq)
        except BookMismatch as exc:
            log.warning("%s", exc)
            book.resyncs += 1
            self.client.stats.checksum_mismatches += 1
            ch.dropping = True
            await self.client._restart(ch, "checksum_mismatch", fresh=True)
            return False
        return True

    async def __aenter__(self) -> Subscription:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Subscribe now and wait for the server's answer (iterating does this
        itself); raises :class:`Forbidden`, :class:`RequestError`, … when refused."""
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            await self.client._add(self)
        await asyncio.shield(self._ready)

    async def run(self, callback: Callable[[Item], Any]) -> None:
        """The callback style: call ``callback(item)`` (a plain or an async function) for
        every item until the subscription ends."""
        async for item in self:
            result = callback(item)
            if inspect.isawaitable(result):
                await result

    async def close(self) -> None:
        """Unsubscribe these channels; iteration then ends."""
        await self.client._remove(self)
        self._end(None)

    def _end(self, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        if self._ready is not None and not self._ready.done():
            if error is not None:
                self._ready.set_exception(error)
            else:
                self._ready.set_result(None)
        # never blocks: drop what is unread when the queue is full, the end must get in
        while self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(_End(error))

    async def _put(self, item: Item) -> None:
        if not self._ended:
            await self._queue.put(item)


class Client:
    """A connection to a tickwire server (or a list of nodes) that stays up.

    Use ``async with tickwire.connect(url, …) as client`` (or ``await``); then
    :meth:`subscribe`. See :func:`connect` for the options.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        backoff: Backoff | None = None,
        on_event: EventHandler | None = None,
        connect_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        ping_interval: float | None = 20.0,
        queue_size: int = 10_000,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise InvalidURL("no URL given")
        self.urls = [check_url(u) for u in urls]
        if token is not None and token_provider is not None:
            raise ValueError("give token or token_provider, not both")
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("token must be a non-empty string")
        self.backoff = backoff or Backoff()
        self.stats = ClientStats()
        self.user: str | None = None
        self.expires_at: float | None = None
        self.url: str | None = None
        self._token = token
        self._provider = token_provider
        self._on_event = on_event
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._ping_interval = ping_interval
        self._queue_size = queue_size
        self._session = session
        self._own_session = session is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._chans: dict[str, _Chan] = {}
        self._subs: list[Subscription] = []
        self._requests: dict[int | str, _Request] = {}
        self._next_id = 0
        self._url_index = 0
        self._failures = 0
        self._connected_at = 0.0
        self._last_refresh = -MIN_REFRESH_INTERVAL
        self._started = False
        self._closing = False
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._retry_tasks: set[asyncio.Task[None]] = set()

    # -- life cycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __await__(self) -> Generator[Any, None, Client]:
        async def started() -> Client:
            await self.start()
            return self

        return started().__await__()

    async def start(self) -> None:
        """Connect (retrying as :attr:`backoff` allows) and keep the connection up."""
        if self._started:
            return
        self._started = True
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            try:
                await self._open(reconnect=False)
            except _Retry as exc:
                await self._reconnect(str(exc), None, first=True)
        except BaseException:
            await self.close()
            raise
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Close the connection; every subscription ends."""
        if self._closing:
            return
        self._closing = True
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._stop_background()
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            try:
                async with asyncio.timeout(2):
                    await ws.close()
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
        if self._own_session and self._session is not None:
            await self._session.close()
        for sub in list(self._subs):
            sub._end(self._error)

    def _stop_background(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        for t in self._retry_tasks:
            t.cancel()
        self._retry_tasks.clear()

    @property
    def connected(self) -> bool:
        """True while a connection is up."""
        return self._ws is not None and not self._ws.closed

    # -- public API ---------------------------------------------------------------------------

    def subscribe(
        self,
        *channels: str,
        since: Mapping[str, Position | tuple[str, int]] | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        """A subscription to ``channels``: iterate it (or ``await sub.start()``) to
        subscribe. ``since`` resumes channels from a position you stored (``{channel:
        (epoch, seq)}``); it is ignored for book channels, whose
        :class:`LocalBook` must start from a snapshot. A channel is held by at most
        one subscription of a client at a time."""
        if not channels:
            raise InvalidChannel("bad_request", "subscribe needs at least one channel")
        for name in channels:
            try:
                parse_channel(name)
            except ChannelError as exc:
                raise InvalidChannel(exc.code, exc.message) from None
            if name in self._chans:
                raise InvalidChannel("already_subscribed", f"channel {name!r} is already held")
        if len(set(channels)) != len(channels):
            raise InvalidChannel("bad_request", "a channel is named twice")
        positions: dict[str, Position] = {}
        for name, pos in (since or {}).items():
            if name not in channels:
                raise InvalidChannel("bad_since", f"since names {name!r}, not subscribed here")
            epoch, seq = (pos.epoch, pos.seq) if isinstance(pos, Position) else pos
            if not isinstance(epoch, str) or not epoch or not isinstance(seq, int) or seq < 0:
                raise InvalidChannel(
                    "bad_since", f"channel {name!r}: since must be (epoch, seq >= 0)"
                )
            positions[name] = Position(epoch, seq)
        return Subscription(self, channels, positions, queue_size or self._queue_size)

    def book(self, channel: str) -> LocalBook:
        """The :class:`LocalBook` of a subscribed ``book:<market>`` channel, as of the
        last message of that channel the subscription handed you."""
        ch = self._chans.get(channel)
        if ch is None or ch.book is None:
            raise InvalidChannel("not_subscribed", f"channel {channel!r} is not a held book")
        return ch.book

    def position(self, channel: str) -> Position | None:
        """Where a subscribed channel's stream stands (the last message delivered)."""
        ch = self._chans.get(channel)
        if ch is None:
            raise InvalidChannel("not_subscribed", f"channel {channel!r} is not held")
        return ch.position

    # -- subscriptions ---------------------------------------------------------------------

    async def _add(self, sub: Subscription) -> None:
        if not self._started:
            await self.start()  # a subscription on a client not yet started starts it
        if self._error is not None:
            sub._end(self._error)
            return
        if self._closing:
            sub._end(None)
            return
        for name in sub.channels:
            if name in self._chans:
                sub._end(InvalidChannel("already_subscribed", f"channel {name!r} is held"))
                return
        chans = [_Chan(name, sub, sub._since.get(name)) for name in sub.channels]
        sub._chans = chans
        self._subs.append(sub)
        for ch in chans:
            self._chans[ch.name] = ch
        if self.connected:
            await self._send_subscribe(chans, sub)
        # else: the connection being made subscribes it

    async def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        names = [ch.name for ch in sub._chans if self._chans.get(ch.name) is ch]
        for name in names:
            del self._chans[name]
        if names and self.connected:
            await self._send({"id": self._rid(), "op": "unsubscribe", "channels": names})

    def _rid(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _send(self, msg: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        try:
            await ws.send_str(_encode(msg).decode())
        except (aiohttp.ClientError, OSError, RuntimeError) as exc:
            log.debug("send failed (the connection is going down): %s", exc)

    async def _send_subscribe(
        self, chans: list[_Chan], sub: Subscription | None = None, *, fresh: bool = False
    ) -> None:
        rid = self._rid()
        specs: list[Any] = []
        for ch in chans:
            since = None if fresh else ch.since_for_resubscribe()
            ch.pending = rid
            ch.since = since
            if since is None:
                specs.append(ch.name)
            else:
                specs.append(
                    {"channel": ch.name, "since": {"epoch": since.epoch, "seq": since.seq}}
                )
        self._requests[rid] = _Request("subscribe", chans, sub)
        await self._send({"id": rid, "op": "subscribe", "channels": specs})

    async def _restart(self, ch: _Chan, reason: str, *, fresh: bool) -> None:
        """Fix a channel's stream: resubscribe ``since`` its last message (the server
        replays or resyncs) or, ``fresh``, from a new snapshot."""
        if fresh:
            ch.need_snapshot = ch.stateful
            ch.position = None
        ch.reason = reason
        await self._send_subscribe([ch], fresh=fresh)

    # -- connecting ---------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                ws = self._ws
                assert ws is not None
                code, reason = await self._read(ws)
                self._ws = None
                self._stop_background()
                if self._closing:
                    return
                if close_means_stop(code):
                    raise ServerClosed(code, reason)
                if code == 3005 and self._provider is None:
                    raise Unauthorized(
                        "token_expired",
                        "the token expired (close 3005) and there is no token_provider "
                        "to get a new one",
                    )
                lived = time.monotonic() - self._connected_at
                self._failures = 0 if lived >= self.backoff.stable_after else self._failures + 1
                self.stats.reconnects += 1
                what = f"closed {code} {reason}".strip() if code != 1006 else "connection lost"
                await self._reconnect(what, code)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._error = exc
            log.warning("tickwire client stopped: %s", exc)
            for sub in list(self._subs):
                sub._end(exc)
            await self.close()

    async def _reconnect(self, reason: str, code: int | None, *, first: bool = False) -> None:
        last: BaseException | None = None
        if first:
            self._failures = 1
        while True:
            limit = self.backoff.max_attempts
            if limit is not None and self._failures >= limit:
                if isinstance(last, TokenProviderError):
                    raise last
                raise ConnectError(
                    f"gave up after {self._failures} failed connection attempts to "
                    f"{', '.join(self.urls)}: {reason}",
                    self._failures,
                ) from last
            attempt = self._failures + 1
            delay = self.backoff.delay(attempt)
            await self._emit(Reconnecting(attempt, delay, reason, code))
            await asyncio.sleep(delay)
            try:
                await self._open(reconnect=True)
                return
            except _Retry as exc:
                self._failures += 1
                last = exc.__cause__ if isinstance(exc.__cause__, TokenProviderError) else exc
                reason, code = str(exc), None

    async def _get_token(self) -> str | None:
        if self._provider is None:
            return self._token
        try:
            token = await self._provider()
        except Exception as exc:
            raise TokenProviderError(f"token_provider raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(token, str) or not token:
            raise TokenProviderError(
                f"token_provider returned {type(token).__name__}, expected a non-empty str"
            )
        return token

    async def _open(self, *, reconnect: bool) -> None:
        """One connection attempt: connect, authenticate, resubscribe. Raises
        :class:`_Retry` when another attempt may succeed, a :class:`TickwireError` when
        none can."""
        url = self.urls[self._url_index % len(self.urls)]
        self._url_index += 1
        try:
            token = await self._get_token()
        except TokenProviderError as exc:
            raise _Retry(exc.message) from exc
        assert self._session is not None
        try:
            async with asyncio.timeout(self._connect_timeout):
                ws = await self._session.ws_connect(
                    url,
                    autoclose=False,
                    autoping=True,
                    heartbeat=self._ping_interval,
                    max_msg_size=64 * 1024 * 1024,
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 429 or exc.status >= 500:
                raise _Retry(f"{url}: handshake refused with HTTP {exc.status}") from exc
            raise ConnectError(
                f"{url}: the server answered the WebSocket handshake with HTTP {exc.status} "
                "(is this the /ws URL of a tickwire server?)",
                self._failures + 1,
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _Retry(f"cannot connect to {url}: {exc or type(exc).__name__}") from exc
        try:
            user, expires_at = None, None
            if token is not None:
                user, expires_at = await self._authenticate(ws, token)
        except BaseException:
            await ws.close()
            raise
        self._ws = ws
        self.url, self.user, self.expires_at = url, user, expires_at
        self._requests.clear()
        for ch in self._chans.values():
            ch.pending = None
        self._connected_at = time.monotonic()
        await self._emit(Connected(url, user, expires_at, reconnect))
        self._schedule_refresh(expires_at)
        for sub in list(self._subs):
            await self._send_subscribe(sub._chans, sub)

    async def _authenticate(
        self, ws: aiohttp.ClientWebSocketResponse, token: str
    ) -> tuple[str | None, float | None]:
        rid = self._rid()
        await ws.send_str(_encode({"id": rid, "op": "auth", "token": token}).decode())
        while True:
            try:
                msg = await ws.receive(timeout=self._connect_timeout)
            except TimeoutError as exc:
                raise _Retry("no answer to auth") from exc
            if msg.type != aiohttp.WSMsgType.TEXT:
                close = ws.close_code or (msg.data if isinstance(msg.data, int) else 1006)
                if close_means_stop(close):
                    raise ServerClosed(close, str(msg.extra or ""))
                raise _Retry(f"closed {close} during auth")
            try:
                frame = _decode_frame(msg.data)
            except msgspec.DecodeError:
                self.stats.malformed += 1
                continue
            if frame.id != rid:
                continue
            if frame.type == "authenticated":
                return frame.user, frame.expires_at
            code, message = frame.code or "unauthorized", frame.message or "auth refused"
            if code in RETRYABLE_ERRORS:
                raise _Retry(f"auth: {code}: {message}")
            if code in ("token_expired", "token_not_yet_valid") and self._provider is not None:
                raise _Retry(f"auth: {code}: {message}")
            raise Unauthorized(code, message)

    # -- token refresh --------------------------------------------------------------------

    def _schedule_refresh(self, expires_at: float | None, *, now: bool = False) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        if expires_at is None or self._provider is None:
            return
        self._refresh = asyncio.create_task(self._refresh_later(expires_at, now))

    async def _refresh_later(self, expires_at: float, now: bool) -> None:
        lifetime = expires_at - time.time()
        # at most one refresh a second: a provider handing out tokens that expire no
        # later than the current one must not make this loop
        wait = 0.0 if now else lifetime - refresh_margin(lifetime)
        wait = max(wait, self._last_refresh + MIN_REFRESH_INTERVAL - time.monotonic())
        await asyncio.sleep(max(0.0, wait))
        self._last_refresh = time.monotonic()
        attempt = 0
        while True:
            try:
                token = await self._get_token()
                break
            except TokenProviderError as exc:
                attempt += 1
                log.warning("token refresh: %s (attempt %d)", exc.message, attempt)
                # past expiry the server closes with 3005 and the reconnect asks again
                await asyncio.sleep(self.backoff.delay(attempt))
        assert token is not None
        rid = self._rid()
        self._requests[rid] = _Request("refresh", [])
        await self._send({"id": rid, "op": "refresh", "token": token})

    # -- reading ------------------------------------------------------------------------------

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
        """Handle frames until the connection ends; returns (close code, reason)."""
        while True:
            try:
                msg = await ws.receive(timeout=self._idle_timeout)
            except TimeoutError:
                log.warning("no frame for %g s: the connection is dead", self._idle_timeout)
                await self._drop(ws)
                return 1006, f"no data for {self._idle_timeout:g} s"
            if msg.type == aiohttp.WSMsgType.TEXT:
                await self._on_frame(msg.data)
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                code, reason = int(msg.data), str(msg.extra or "")
                await self._drop(ws)
                return code, reason
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self.stats.malformed += 1
                log.warning("ignored a binary frame (the native protocol has none)")
            else:  # CLOSING, CLOSED, ERROR: the connection is gone
                return ws.close_code or 1006, "connection lost"

    @staticmethod
    async def _drop(ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async with asyncio.timeout(2):
                await ws.close()
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass

    async def _on_frame(self, text: str) -> None:
        try:
            frame = _decode_frame(text)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.stats.malformed += 1
            log.warning("ignored a malformed frame: %s", exc)
            return
        kind = frame.type
        if kind in ("pub", "snapshot"):
            await self._on_push(frame)
        elif kind == "reset":
            await self._on_reset(frame)
        elif kind == "heartbeat":
            return
        elif kind == "subscribed":
            await self._on_subscribed(frame)
        elif kind == "authenticated":
            await self._on_authenticated(frame)
        elif kind == "error":
            await self._on_error(frame)
        elif kind in ("unsubscribed", "pong"):
            self._requests.pop(frame.id, None) if frame.id is not None else None
        else:
            self.stats.malformed += 1
            log.warning("ignored a frame of unknown type %r", kind[:32])

    async def _on_push(self, frame: _Frame) -> None:
        name, seq, epoch = frame.channel, frame.seq, frame.epoch
        if name is None or seq is None or epoch is None:
            self.stats.malformed += 1
            log.warning("ignored a %s without channel, seq or epoch", frame.type)
            return
        ch = self._chans.get(name)
        if ch is None or ch.pending is not None:
            return  # not ours (any more), or from before the resubscribe we wait on
        snapshot = frame.type == "snapshot"
        if snapshot:
            if not ch.stateful:
                self.stats.malformed += 1
                log.warning("ignored a snapshot on %s, which is not a state channel", name)
                return
        elif ch.need_snapshot:
            return  # a state channel starts from its snapshot: nothing to apply this to
        else:
            pos = ch.position
            if pos is not None:
                if epoch == pos.epoch and seq <= pos.seq:
                    self.stats.duplicates += 1
                    return
                if epoch != pos.epoch or seq != pos.seq + 1:
                    self.stats.gaps += 1
                    log.info(
                        "%s: expected %s:%d, got %s:%d", name, pos.epoch, pos.seq + 1, epoch, seq
                    )
                    reason = "reset" if epoch != pos.epoch else "gap"
                    await self._restart(ch, reason, fresh=False)
                    return
        try:
            data = msgspec.json.decode(frame.data, type=PAYLOAD_TYPES[ch.kind])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.stats.malformed += 1
            log.warning("%s: malformed %s at seq %d: %s", name, frame.type, seq, exc)
            if ch.stateful:  # state cannot go on from a message it could not read
                await self._restart(ch, "malformed", fresh=True)
                return
            ch.position = Position(epoch, seq)
            await ch.sub._put(Malformed(name, seq, str(exc)))
            return
        # a book is applied and verified when the subscription hands the message over
        # (Subscription._book), so client.book() is the state as of the last message read
        ch.position = Position(epoch, seq)
        ch.need_snapshot = False
        self.stats.messages += 1
        cls = MESSAGE_TYPES[ch.kind]
        message: Message = cls(
            channel=name,
            seq=seq,
            epoch=epoch,
            ts=frame.ts,
            snapshot=snapshot,
            data=data,  # type: ignore[call-arg]
        )
        await ch.sub._put(message)  # type: ignore[arg-type]

    async def _on_reset(self, frame: _Frame) -> None:
        name, seq, epoch = frame.channel, frame.seq, frame.epoch
        if name is None or seq is None or epoch is None:
            self.stats.malformed += 1
            return
        ch = self._chans.get(name)
        if ch is None or ch.pending is not None:
            return
        self.stats.resynced += 1
        if ch.stateful:
            ch.need_snapshot = True
            ch.position = None
        else:
            ch.position = Position(epoch, seq)
        await ch.sub._put(Resynced(name, "reset"))

    async def _on_subscribed(self, frame: _Frame) -> None:
        req = self._requests.pop(frame.id, None) if frame.id is not None else None
        if req is None or req.op != "subscribe":
            return
        entries: dict[str, dict[str, Any]] = {}
        for entry in frame.channels or []:
            if isinstance(entry, dict) and isinstance(entry.get("channel"), str):
                entries[entry["channel"]] = entry
        for ch in req.chans:
            if ch.pending != frame.id or self._chans.get(ch.name) is not ch:
                continue
            ch.pending = None
            ch.retries = 0
            entry = entries.get(ch.name)
            epoch, seq = (entry or {}).get("epoch"), (entry or {}).get("seq")
            if not isinstance(epoch, str) or not isinstance(seq, int):
                self.stats.malformed += 1
                await self._restart(ch, "malformed", fresh=True)
                continue
            since, reason = ch.since, ch.reason
            ch.since, ch.reason = None, None
            if since is not None and entry is not None and entry.get("recovered") is True:
                self.stats.recovered += 1
                await ch.sub._put(Recovered(ch.name, max(0, seq - since.seq)))
                continue
            if since is not None or reason is not None:
                if reason is None:
                    reason = "reset" if epoch != since.epoch else "history_lost"  # type: ignore[union-attr]
                self.stats.resynced += 1
                await ch.sub._put(Resynced(ch.name, reason))
            if ch.stateful:
                ch.need_snapshot = True
                ch.position = None
            else:
                ch.position = Position(epoch, seq)
        if req.sub is not None and req.sub._ready is not None and not req.sub._ready.done():
            req.sub._ready.set_result(None)

    async def _on_authenticated(self, frame: _Frame) -> None:
        req = self._requests.pop(frame.id, None) if frame.id is not None else None
        if req is None or req.op != "refresh":
            return
        self.stats.refreshes += 1
        self.expires_at = frame.expires_at
        self._schedule_refresh(frame.expires_at)
        await self._emit(TokenRefreshed(frame.expires_at))
        for name in frame.unsubscribed or []:
            ch = self._chans.get(name)
            if ch is not None:
                await self._fail_sub(
                    ch.sub,
                    Forbidden(
                        "forbidden", f"channel {name!r}: the refreshed token may not read it", name
                    ),
                )

    async def _on_error(self, frame: _Frame) -> None:
        code, message = frame.code or "internal", frame.message or ""
        req = self._requests.pop(frame.id, None) if frame.id is not None else None
        if req is None:
            if code == "token_expired" and self._provider is not None:
                log.info("token expired before it was refreshed: refreshing now")
                self._schedule_refresh(self.expires_at or time.time(), now=True)
            else:
                log.warning("server error %s: %s", code, message)
            return
        if req.op == "refresh":
            log.warning("token refresh refused: %s: %s", code, message)
            return
        if req.op != "subscribe":
            return
        mine = [ch for ch in req.chans if ch.pending == frame.id]
        for ch in mine:
            ch.pending = None
        if code in RETRYABLE_ERRORS:
            for ch in mine:
                ch.pending = frame.id  # still waiting: drop pushes until the retry lands
            self._retry_later(mine, req.sub, code)
            return
        named = _CHANNEL_IN_MESSAGE.search(message)
        channel = named.group(1) if named else (mine[0].name if mine else "?")
        exc: TickwireError
        if code in ("forbidden", "unauthorized"):
            exc = Forbidden(code, message, channel)
        else:
            exc = RequestError(code, message)
        subs = {ch.sub for ch in mine} | ({req.sub} if req.sub is not None else set())
        for sub in subs:
            await self._fail_sub(sub, exc)

    def _retry_later(self, chans: list[_Chan], sub: Subscription | None, code: str) -> None:
        retries = max((ch.retries for ch in chans), default=0) + 1
        for ch in chans:
            ch.retries = retries
        delay = self.backoff.delay(retries)
        log.info("subscribe refused (%s): retrying in %.2f s", code, delay)

        async def retry() -> None:
            await asyncio.sleep(delay)
            live = [ch for ch in chans if self._chans.get(ch.name) is ch]
            if live and self.connected:
                await self._send_subscribe(live, sub)

        task = asyncio.create_task(retry())
        self._retry_tasks.add(task)
        task.add_done_callback(self._retry_tasks.discard)

    async def _fail_sub(self, sub: Subscription, exc: BaseException) -> None:
        for ch in sub._chans:
            if self._chans.get(ch.name) is ch:
                del self._chans[ch.name]
        if sub in self._subs:
            self._subs.remove(sub)
        sub._end(exc)

    async def _emit(self, event: Event) -> None:
        if self._on_event is not None:
            try:
                result = self._on_event(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_event handler failed")
        for sub in list(self._subs):
            await sub._put(event)


def connect(
    url: str | Sequence[str],
    *,
    token: str | None = None,
    token_provider: TokenProvider | None = None,
    backoff: Backoff | None = None,
    on_event: EventHandler | None = None,
    connect_timeout: float = 10.0,
    idle_timeout: float = 60.0,
    ping_interval: float | None = 20.0,
    queue_size: int = 10_000,
    session: aiohttp.ClientSession | None = None,
) -> Client:
    """A :class:`Client` for ``url`` (``ws://HOST:PORT/ws``), or a list of nodes tried in
    turn. Use it as ``async with connect(...) as client`` or ``client = await
    connect(...)``.

    - ``token``: a token (``POST /jwt``); ``token_provider``: an async callable returning
      a fresh one, called at every connect and before the token expires.
    - ``backoff``: reconnect delays and the attempt limit (:class:`Backoff`).
    - ``on_event``: called with every connection event (:class:`Connected`,
      :class:`Reconnecting`, :class:`TokenRefreshed`); subscriptions get them too.
    - ``idle_timeout``: a connection silent for this long is taken as dead (the server
      sends a heartbeat every 15 s); ``ping_interval``: WebSocket pings (None: off).
    - ``queue_size``: items buffered per subscription before reading pauses.

    Raises :class:`InvalidURL` at once for a URL that is not ``ws://``/``wss://``.
    """
    return Client(
        url,
        token=token,
        token_provider=token_provider,
        backoff=backoff,
        on_event=on_event,
        connect_timeout=connect_timeout,
        idle_timeout=idle_timeout,
        ping_interval=ping_interval,
        queue_size=queue_size,
        session=session,
    )

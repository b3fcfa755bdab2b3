"""What a dialect is: a sans-I/O translator between one wire protocol and the core.

A dialect supplies only what differs between protocols — how a client presents its
credential, how frames parse into :data:`Command`\\ s, how core :data:`Event`\\ s and
errors render, and the :class:`~tickwire.hub.WireFormat` of publications. Everything the
dialects share (identity and its expiry, channel limits, rate limiting, the
errors-in-a-row policy, entitlements, all-or-nothing subscribe) lives once in
:class:`tickwire.dialects.core.ConnectionCore`; the server mounts every dialect with one
generic WebSocket shell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import msgspec

from tickwire.auth import Principal
from tickwire.dialects.errors import ProtocolError
from tickwire.hub import WireFormat
from tickwire.model.channels import Channel, ChannelError, parse_channel
from tickwire.model.errors import TickwireError
from tickwire.model.publication import Position

RequestId = int | str | None

#: The largest seq (and integer id) a client may name: 64-bit signed.
MAX_SEQ = 2**63 - 1

# -- credentials -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Token:
    """A JWT: a gateway token, a client-signed (Coinbase) JWT or an identity provider's."""

    value: str

    def __repr__(self) -> str:  # never print a credential
        return "Token(***)"


@dataclass(frozen=True, slots=True, repr=False)
class Digest:
    """An InstaMrkt-style ``id``/``nonce``/``sha256(id + nonce + session key)`` triple."""

    user_id: str
    nonce: str
    digest: str

    def __repr__(self) -> str:
        return f"Digest(user_id={self.user_id!r}, ***)"


@dataclass(frozen=True, slots=True, repr=False)
class Bearer:
    """A JWT that only the identity provider's keys may verify (Peatio's Barong tokens):
    unlike :class:`Token` it is never tried as a gateway token."""

    value: str

    def __repr__(self) -> str:  # never print a credential
        return "Bearer(***)"


Credential = Token | Digest | Bearer

# -- views: one channel shown several ways on one connection ---------------------------------


class View(Protocol):
    """A way of showing a channel other than the dialect's own :attr:`Dialect.fmt`, for a
    protocol where one connection streams several renderings of one channel (Market
    Prophit's endpoints: crowd sentiment, MP sentiment and chart data are all views of
    ``sentiment:<ticker>``). A :class:`Subscribe` or :class:`Unsubscribe` naming a view
    acts on that view only; the core keeps one hub connection per view format on the
    connection's transport, so each rendering is encoded once for every subscriber, and
    counts each (view, channel) once against the connection's channel limit."""

    @property
    def fmt(self) -> WireFormat:
        """How the hub renders this view's publications, snapshots and resets."""

    def denied(self, principal: Principal, channel: Channel) -> TickwireError | None:
        """Why ``principal`` may not read ``channel`` in this view (checked before the
        channel's own entitlements), or None."""


# -- commands: what a dialect's parser asks of the core -------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Subscribe to every item or to none. ``credential``, when given, authorizes this
    request only (Coinbase sends a JWT with each subscribe). ``own`` names private streams
    (``orders``, ``trades``) of the user the request acts for — the credential's, else the
    connection's — which the core adds as ``user:<uid>:<stream>`` items; without an
    identity the request is refused ``unauthorized``. ``view``: the items are shown in
    that :class:`View` (None: in the dialect's own format)."""

    id: RequestId
    items: Sequence[tuple[Channel, Position | None]]
    credential: Credential | None = None
    own: Sequence[str] = ()
    view: View | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Unsubscribe ``channels`` (of ``view``, when given), or every channel when
    ``channels`` is None. ``strict``: a channel not held fails the request
    (``not_subscribed``) and nothing is unsubscribed."""

    id: RequestId
    channels: Sequence[Channel] | None
    view: View | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Present a credential; ``refresh`` replaces an identity's credential before it
    expires (it must name the same user)."""

    id: RequestId
    credential: Credential
    refresh: bool = False


@dataclass(frozen=True, slots=True)
class Ping:
    id: RequestId


@dataclass(frozen=True, slots=True)
class Reply:
    """A message the dialect composed itself (``pong``, a list of opcodes, ...)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with ``code`` (after what is already queued)."""

    code: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Resume:
    """Resubscribe what a dropped connection held (the protocol's own session recovery:
    Socket.IO's): each item from its position, on its own. An item this connection may
    not read now, or cannot get (the store is unreachable, the limit is reached), is left
    out rather than failing the others; :class:`Resumed` says whether every item resumed
    exactly where it stood."""

    id: RequestId
    items: Sequence[tuple[View | None, Channel, Position | None]]


Command = Subscribe | Unsubscribe | Authenticate | Ping | Reply | Close | Resume

# -- events: what the core asks a dialect to render ------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscribedChannel:
    """Where one subscribed channel's stream starts. ``recovered`` is None unless the
    client asked to resume ``since`` a position."""

    channel: str
    epoch: str
    seq: int
    recovered: bool | None = None


@dataclass(frozen=True, slots=True)
class Subscribed:
    """``channels`` were subscribed; ``current`` is every channel the connection holds."""

    id: RequestId
    channels: tuple[SubscribedChannel, ...]
    current: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """``channels`` were unsubscribed (those that were held); ``current`` remains."""

    id: RequestId
    channels: tuple[str, ...]
    current: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The connection acts as ``principal`` now; ``dropped`` are channels it held that the
    new identity may not read (they were unsubscribed)."""

    id: RequestId
    principal: Principal
    dropped: tuple[str, ...]
    refresh: bool = False


@dataclass(frozen=True, slots=True)
class Pong:
    id: RequestId
    ts: int


@dataclass(frozen=True, slots=True)
class Expiring:
    """The identity's credential expired: the connection closes (3005) unless a refresh
    arrives within ``grace`` seconds."""

    grace: float


@dataclass(frozen=True, slots=True)
class Resumed:
    """What a :class:`Resume` restored (``channels``: each its own view's), and whether
    every item it named resumed with nothing missed (``recovered``); their streams start
    right after this event."""

    id: RequestId
    channels: tuple[SubscribedChannel, ...]
    recovered: bool


Event = Subscribed | Unsubscribed | Authenticated | Pong | Expiring | Resumed

# -- the handshake and the dialect itself ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    """The WebSocket upgrade request as a dialect sees it (no sockets)."""

    path: str
    #: every query parameter's values, in order (``?stream=a&stream=b``)
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: header names in lower case
    headers: Mapping[str, str] = field(default_factory=dict)

    def first(self, name: str) -> str | None:
        """The first value of query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else None


class Refused(TickwireError):
    """The handshake is refused before the upgrade, with HTTP ``status`` and ``body``."""

    def __init__(
        self, status: int, code: str, message: str, body: bytes, content_type: str
    ) -> None:
        super().__init__(code, message)
        self.status = status
        self.body = body
        self.content_type = content_type


class Dialect:
    """One client connection's translator. A dialect is a subclass of this; the server
    makes one instance per connection from its :class:`Handshake` (a constructor that
    raises :class:`Refused` refuses the upgrade).

    Override :meth:`parse`, :meth:`render` and :meth:`render_error`; set :attr:`name` and
    :attr:`fmt`; the rest has defaults every dialect may keep.
    """

    #: Names the dialect in config, metrics and logs.
    name: ClassVar[str]
    #: How the hub renders publications, snapshots and resets for this dialect.
    fmt: ClassVar[WireFormat]
    #: Seconds to the first subscription before the connection is closed (None: never).
    subscribe_within: ClassVar[float | None] = None
    #: Errors in a row after which the connection is closed for policy violation.
    max_errors_in_a_row: ClassVar[int] = 50
    #: Seconds between calls of :meth:`tick` (None: never).
    tick_interval: ClassVar[float | None] = None
    #: Whether a credential can be refreshed in-band: if not, an expired identity closes
    #: the connection (3005) at once instead of after ``token_expiry_grace``.
    refreshable: ClassVar[bool] = True

    def __init__(self, handshake: Handshake) -> None:
        self.handshake = handshake

    def credential(self) -> Credential | None:
        """The credential presented with the handshake, if any."""
        return None

    def credential_required(self) -> bool:
        """True when the upgrade needs a valid :meth:`credential`: the shell verifies it
        before upgrading and answers HTTP 401 (:meth:`refusal`) when it is missing or
        does not verify (rango's ``/private`` endpoint)."""
        return False

    def refusal(self, error: ProtocolError) -> Refused:
        """The HTTP answer to an upgrade refused for ``error`` (a missing or bad credential)."""
        return Refused(401, error.code, error.message, self.render_error(error), "application/json")

    def opening(self) -> list[Command]:
        """Commands to run once the connection is open (e.g. ``?stream=`` subscriptions)."""
        return []

    def after(self, event: Event) -> list[Command]:
        """Commands the core runs after it sent ``event`` (only :class:`Authenticated` for
        now: e.g. subscribe the new identity to its own private streams)."""
        return []

    def greeting(self) -> list[bytes]:
        """Messages sent as soon as the connection opens (before any credential check)."""
        return []

    def parse(self, frame: str) -> list[Command]:
        """Commands of one inbound text frame; raises :class:`ProtocolError`."""
        raise NotImplementedError

    def parse_binary(self, frame: bytes) -> list[Command]:
        """Commands of one inbound binary frame; most protocols have none."""
        raise ProtocolError("binary_not_supported", "binary frames are not supported")

    def render(self, event: Event) -> bytes | list[bytes] | None:
        """The message (or messages, in order) telling the client about ``event`` (None:
        nothing to send)."""
        raise NotImplementedError

    def render_error(self, error: ProtocolError) -> bytes:
        """The message telling the client about ``error``."""
        raise NotImplementedError

    def farewell(self, code: int) -> list[bytes]:
        """Messages sent just before the core closes the connection with ``code`` (after
        what is queued): a protocol whose clients do not see close codes says why here
        (Socket.IO: an ``err`` event and a server disconnect). The default sends none."""
        return []

    def finished(self) -> None:
        """The connection ended (either side); release what it holds outside itself, such
        as an entry in a node-wide registry. Called once; the default does nothing."""

    def tick(self) -> list[bytes]:
        """Messages to send now, every :attr:`tick_interval` seconds while the connection
        is open and :meth:`ticking` (per-connection heartbeats)."""
        return []

    def ticking(self) -> bool:
        """Whether :meth:`tick` has anything to send (checked after every frame and tick:
        no timer runs for a connection that needs none)."""
        return True

    @classmethod
    def heartbeat(cls, ts: int) -> bytes | None:
        """The heartbeat message sent to every connection of this dialect (None: none)."""
        return None


def dialect_error(exc: TickwireError, request_id: RequestId = None) -> ProtocolError:
    """Any client-visible error as the :class:`ProtocolError` a dialect renders."""
    if isinstance(exc, ProtocolError):
        if exc.request_id is None and request_id is not None:
            exc.request_id = request_id  # raised without it: it is this request's error
        return exc
    return ProtocolError(exc.code, exc.message, request_id)


# -- parsing helpers every JSON dialect shares ---------------------------------------------


class Since(msgspec.Struct, forbid_unknown_fields=True):
    """A client's ``since`` position as it arrives: ``{"epoch": …, "seq": …}``."""

    epoch: str
    seq: int


def channel_named(raw: object, rid: RequestId) -> Channel:
    """The channel a client named, or :class:`ProtocolError` with the channel's own code."""
    try:
        return parse_channel(raw)
    except ChannelError as exc:
        raise ProtocolError(exc.code, exc.message, rid) from None


def parse_since(raw: object, name: str, rid: RequestId) -> Position:
    """A client's ``since`` for channel ``name``; ``bad_since`` naming what is wrong."""
    try:
        since = msgspec.convert(raw, Since)
    except msgspec.ValidationError as exc:
        raise ProtocolError(
            "bad_since", f"channel {name!r}: since must be {{epoch, seq}}: {exc}", rid
        ) from None
    if not 0 <= since.seq <= MAX_SEQ or not 0 < len(since.epoch) <= 64:
        raise ProtocolError(
            "bad_since", f"channel {name!r}: since.seq must be >= 0 and epoch non-empty", rid
        )
    return Position(since.epoch, since.seq)

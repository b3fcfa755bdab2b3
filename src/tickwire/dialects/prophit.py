"""The Market Prophit dialect: ``/real-time/`` endpoints as REST answers and Socket.IO
events, sans-I/O (docs/dialects.md, "Market Prophit").

Every real-time endpoint is a *view* of a tickwire channel: ``crowd-sentiment`` is the
``crowd`` points of ``sentiment:<ticker>`` with one field, ``trades`` is
``trades:<market>``. :class:`Endpoint` says which channel, which publications and which
fields; :func:`results` renders them as the original did (every value a string). The
same function answers ``GET /real-time/<name>`` and renders the streamed events, so the
two agree by construction.

:class:`ProphitFormat` is the hub's encoder for one endpoint: it renders each
publication once into Socket.IO ``EVENT`` packets shared by every subscriber of that
endpoint and ticker (per event style and recovery mode). Publications a view does not
show render as ``b""``, which the Socket.IO shell drops before anything is written.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from tickwire.auth import Principal, authorize
from tickwire.dialects.errors import ProtocolError
from tickwire.dialects.socketio import sio_event
from tickwire.hub import Framed, text_frame
from tickwire.model.channels import Channel, ChannelError, parse_channel
from tickwire.model.publication import Position, Publication, Snapshot

PREFIX = "/real-time/"
ErrorType = Literal["invalid_request_error", "api_error"]


class EndpointError(ProtocolError):
    """An endpoint request that cannot be served, in the original REST error shape:
    HTTP ``status``, ``type`` ``invalid_request_error`` or ``api_error``, stable ``code``
    (over Socket.IO ``request_id`` is the ack id of the event it answers)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        type: ErrorType = "invalid_request_error",
        request_id: object = None,
    ) -> None:
        super().__init__(code, message, request_id)
        self.status = status
        self.type = type

    def body(self) -> dict[str, Any]:
        """The error object: ``{"type", "code", "message", "status"}``."""
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ``/real-time/<name>`` endpoint: a view of a channel kind."""

    name: str
    #: the tickwire channel kind it reads (``sentiment``, ``trades``, ``ticker``, ``book``)
    kind: str
    #: for sentiment: which series (``crowd``, ``mp``, ``user``)
    series: str | None
    #: the fields of each result besides ``ts`` and ``ticker``
    fields: tuple[str, ...]
    #: REST answers every point of the last minute instead of the latest one
    last_minute: bool = False

    @property
    def path(self) -> str:
        return PREFIX + self.name


_CROWD = "crowd_sentiment"
_MP = "mp_sentiment"


def _sentiment_endpoints() -> list[Endpoint]:
    out = []
    for prefix, base, series in (
        ("crowd-sentiment", _CROWD, "crowd"),
        ("market-prophit-sentiment", _MP, "mp"),
    ):
        chart: tuple[str, ...] = (
            base,
            f"{base}_moving_average",
            f"{base}_z_score",
            f"{base}_z_score_moving_average",
        )
        if series == "crowd":
            chart += ("volume", "buzz")
        out += [
            Endpoint(prefix, "sentiment", series, (base,)),
            Endpoint(f"{prefix}-chart-data", "sentiment", series, chart),
            Endpoint(f"{prefix}-moving-average", "sentiment", series, (f"{base}_moving_average",)),
            Endpoint(f"{prefix}-z-score", "sentiment", series, (f"{base}_z_score",)),
            Endpoint(
                f"{prefix}-z-score-moving-average",
                "sentiment",
                series,
                (f"{base}_z_score_moving_average",),
            ),
        ]
    return out


#: Every real-time endpoint by name.
ENDPOINTS: dict[str, Endpoint] = {
    e.name: e
    for e in [
        *_sentiment_endpoints(),
        Endpoint("tweet-volume", "sentiment", "crowd", ("volume",)),
        Endpoint("tweet-buzz", "sentiment", "crowd", ("buzz",)),
        Endpoint("user-sentiment", "sentiment", "user", ("user_id", "sentiment", "user_score")),
        Endpoint(
            "user-sentiment-last-minute",
            "sentiment",
            "user",
            ("user_id", "sentiment", "user_score"),
            last_minute=True,
        ),
        Endpoint("trades", "trades", None, ("id", "price", "size", "side")),
        Endpoint(
            "ticker",
            "ticker",
            None,
            (
                "last",
                "last_size",
                "best_bid",
                "best_bid_size",
                "best_ask",
                "best_ask_size",
                "open_24h",
                "high_24h",
                "low_24h",
                "volume_24h",
                "quote_volume_24h",
                "change_24h",
                "change_pct_24h",
            ),
        ),
        Endpoint("book", "book", None, ("bids", "asks", "checksum")),
    ]
}

#: The one parameter every endpoint takes: a sentiment ticker or a market id.
PARAMS = ("ticker",)


def endpoint_name(path: object) -> str:
    """``/real-time/crowd-sentiment`` or (v1) ``crowd-sentiment`` → ``crowd-sentiment``."""
    if not isinstance(path, str) or not path:
        raise EndpointError(400, "bad_path", "path must be a non-empty string")
    name = path[len(PREFIX) :] if path.startswith(PREFIX) else path.lstrip("/")
    if name not in ENDPOINTS:
        shown = path[:80]
        raise EndpointError(
            404,
            "unknown_path",
            f"unknown path {shown!r}: expected /real-time/ and one of {', '.join(ENDPOINTS)}",
        )
    return name


@dataclass(frozen=True, slots=True)
class Request:
    """A resolved request: the endpoint and the channel it reads."""

    endpoint: Endpoint
    ticker: str
    channel: Channel

    @property
    def params(self) -> dict[str, str]:
        return {"ticker": self.ticker}


def resolve(path: object, params: object, exists: Callable[[Channel], bool]) -> Request:
    """Check ``path`` and ``params`` (``{"ticker": …}``); ``exists`` says whether a
    channel is served here. Raises :class:`EndpointError`."""
    endpoint = ENDPOINTS[endpoint_name(path)]
    if not isinstance(params, Mapping):
        raise EndpointError(
            400, "bad_params", 'params must be an object such as {"ticker": "AAPL"}'
        )
    foreign = sorted(str(k) for k in params if k not in PARAMS)
    if foreign:
        raise EndpointError(
            400, "unknown_param", f"params: unknown parameter {foreign[0][:40]!r} (expected ticker)"
        )
    ticker = params.get("ticker")
    if ticker is None:
        raise EndpointError(400, "missing_param", "params.ticker is required")
    if not isinstance(ticker, str):
        raise EndpointError(400, "bad_param", "params.ticker must be a string")
    try:
        channel = parse_channel(f"{endpoint.kind}:{ticker}")
    except ChannelError:
        raise EndpointError(
            400, "bad_param", f"params.ticker {ticker[:40]!r} is malformed"
        ) from None
    if not exists(channel):
        what = "ticker" if endpoint.kind == "sentiment" else "market"
        raise EndpointError(
            404, "unknown_ticker", f"params.ticker: unknown {what} {ticker!r} for {endpoint.path}"
        )
    return Request(endpoint, ticker, channel)


def check_method(method: object) -> None:
    """``method`` is optional and case-insensitive; only GET streams."""
    if method is None:
        return
    if not isinstance(method, str) or method.upper() != "GET":
        shown = method[:16] if isinstance(method, str) else type(method).__name__
        raise EndpointError(
            400, "method_not_allowed", f"method {shown!r}: only GET endpoints can be streamed"
        )


def entitle(principal: Principal, request: Request, *, streaming: bool) -> None:
    """Raise a 403 :class:`EndpointError` unless ``principal`` may read ``request``
    (over REST, or as a stream when ``streaming``)."""
    ents = principal.entitlements
    name = request.endpoint.name
    if streaming and not ents.streaming:
        raise EndpointError(403, "forbidden", "this key has no streaming access")
    paths = ents.streaming_paths if streaming else ents.paths
    if paths is not None and name not in paths:
        which = "streaming paths" if streaming else "endpoint paths"
        raise EndpointError(
            403, "forbidden", f"path {request.endpoint.path!r} is not among this key's {which}"
        )
    denied = authorize(principal, request.channel)
    if denied is not None:
        message = denied.message
        if ents.symbols is not None and request.ticker not in ents.symbols:
            message = f"ticker {request.ticker!r} is not among this key's tickers"
        raise EndpointError(403, "forbidden", message)


# -- rendering ------------------------------------------------------------------------


def iso(ms: int) -> str:
    """UNIX milliseconds as ``2014-09-15T09:04:00.000Z``."""
    t = _dt.datetime.fromtimestamp(ms / 1000, _dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _text(value: Any) -> Any:
    """Every value as a string, as the original served them (null stays null)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return value  # lists of levels: already strings


def result(endpoint: Endpoint, ticker: str, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """One result row of ``endpoint`` from a publication's decoded data, or None when
    the publication is not part of this view."""
    if endpoint.series is not None and data.get("type") != endpoint.series:
        return None
    ts = data.get("ts", data.get("start"))
    row: dict[str, Any] = {"ts": iso(ts) if isinstance(ts, int) else None, "ticker": ticker}
    for f in endpoint.fields:
        row[f] = _text(data.get(f))
    return row


def response(
    request: Request, rows: list[dict[str, Any]], now_ms: int, *, v1: bool = False
) -> dict[str, Any]:
    """``{params, path, results, timestamp}``; the v1 ``data`` event names the path
    without the ``/real-time/`` prefix, as the v1 docs show."""
    return {
        "params": request.params,
        "path": request.endpoint.name if v1 else request.endpoint.path,
        "results": rows,
        "timestamp": iso(now_ms),
    }


_decode = msgspec.json.decode

#: How results are pushed: the v1 ``data`` event, the v2 ``res`` event, or both.
EventStyle = Literal["data", "res", "both"]


#: what a view renders of a publication it does not show: no frame
NOTHING = Framed(b"")


class ProphitFormat:
    """The hub's encoder for one endpoint, event style and recovery mode: each
    publication rendered once for every subscriber of the same (endpoint, ticker).

    With ``offsets`` every event ends with the publication's offset
    (``<channel>|<epoch>|<seq>``), which socket.io-client ≥ 4.6 hands back on reconnect
    to recover what it missed. The format frames its events itself (:class:`Framed`):
    ``both`` is two frames (the shell sends them as two WebSocket messages or two polling
    packets) and a publication the view does not show is no frame at all."""

    compressed = False

    def __init__(self, endpoint: Endpoint, style: EventStyle, offsets: bool) -> None:
        self.endpoint = endpoint
        self.style = style
        self.offsets = offsets
        self.name = f"prophit:{endpoint.name}:{style}{':offsets' if offsets else ''}"

    @property
    def base(self) -> ProphitFormat:
        return self

    def _render(self, channel: str, epoch: str, seq: int, ts: int, data: bytes) -> bytes:
        decoded = _decode(data)
        if not isinstance(decoded, dict):
            return NOTHING
        ticker = channel.partition(":")[2]
        row = result(self.endpoint, ticker, decoded)
        if row is None:
            return NOTHING
        extra = (f"{channel}|{epoch}|{seq}",) if self.offsets else ()
        req_params = {"ticker": ticker}
        packets = []
        for name in ("data", "res") if self.style == "both" else (self.style,):
            body = {
                "params": req_params,
                "path": self.endpoint.name if name == "data" else self.endpoint.path,
                "results": [row],
                "timestamp": iso(ts),
            }
            packets.append(text_frame(sio_event(name, body, *extra)))
        return Framed(b"".join(packets))

    def pub(self, pub: Publication) -> bytes:
        return self._render(pub.channel, pub.epoch, pub.seq, pub.ts, pub.data)

    def snapshot(self, snap: Snapshot) -> bytes:
        return self._render(snap.channel, snap.epoch, snap.seq, snap.ts, snap.data)

    def reset(self, channel: str, position: Position) -> bytes:
        return b""  # the stream goes on from the snapshot (state channels) or the next point


_FORMATS: dict[tuple[str, str, bool], ProphitFormat] = {}


def prophit_format(endpoint: Endpoint, style: EventStyle, offsets: bool) -> ProphitFormat:
    """The one shared format of an endpoint, style and recovery mode."""
    key = (endpoint.name, style, offsets)
    fmt = _FORMATS.get(key)
    if fmt is None:
        fmt = _FORMATS[key] = ProphitFormat(endpoint, style, offsets)
    return fmt


def parse_offset(offset: object) -> tuple[str, Position] | None:
    """``<channel>|<epoch>|<seq>`` → (channel, position); None when it is not one."""
    if not isinstance(offset, str) or len(offset) > 256:
        return None
    parts = offset.split("|")
    if len(parts) != 3 or not parts[2].isdigit() or not parts[1]:
        return None
    return parts[0], Position(parts[1], int(parts[2]))


class ChannelFormat:
    """tickwire channels over Socket.IO (``subscribe {channels: [...]}``, the form
    ``tickwire bench --dialect eio4`` and the python-socketio peer use): each publication
    as a ``pub`` event with the native envelope, encoded once per channel."""

    compressed = False
    name = "prophit:channels"

    @property
    def base(self) -> ChannelFormat:
        return self

    def _render(self, kind: str, channel: str, epoch: str, seq: int, ts: int, data: bytes) -> bytes:
        env = {
            "type": kind,
            "channel": channel,
            "seq": seq,
            "epoch": epoch,
            "ts": ts,
            "data": msgspec.Raw(data),
        }
        return sio_event("pub", env)

    def pub(self, pub: Publication) -> bytes:
        return self._render("pub", pub.channel, pub.epoch, pub.seq, pub.ts, pub.data)

    def snapshot(self, snap: Snapshot) -> bytes:
        return self._render("snapshot", snap.channel, snap.epoch, snap.seq, snap.ts, snap.data)

    def reset(self, channel: str, position: Position) -> bytes:
        return sio_event(
            "pub",
            {"type": "reset", "channel": channel, "epoch": position.epoch, "seq": position.seq},
        )


CHANNEL_FORMAT = ChannelFormat()

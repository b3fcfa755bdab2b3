"""Typed messages (one msgspec struct per channel kind) and the events that tell what
the connection did.

A :class:`Subscription` yields :data:`Item` values: a message of its channels, or an
:data:`Event`. Every message carries ``channel``, ``seq``, ``epoch``, ``ts`` (server time,
ms) and ``snapshot`` (True for the snapshot a state channel starts from); ``data`` is the
channel kind's payload from :mod:`tickwire.model.payloads`.
"""

from __future__ import annotations

import msgspec

from tickwire.model.payloads import (
    BookData,
    CandleData,
    OrderData,
    SentimentData,
    TickerData,
    TradeData,
    UserTradeData,
)


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """Fields every channel message has."""

    channel: str
    seq: int
    epoch: str
    ts: int
    snapshot: bool = False


class BookUpdate(Message, frozen=True, kw_only=True):
    """``book:<market>``: changed levels (or, with ``snapshot``, every level). The
    client's :class:`~tickwire.client.LocalBook` has already applied and verified it."""

    data: BookData


class Trade(Message, frozen=True, kw_only=True):
    """``trades:<market>``: one public trade."""

    data: TradeData


class Ticker(Message, frozen=True, kw_only=True):
    """``ticker:<market>``: the whole ticker."""

    data: TickerData


class Candle(Message, frozen=True, kw_only=True):
    """``candles:<market>:<interval>``: the open candle."""

    data: CandleData


class Sentiment(Message, frozen=True, kw_only=True):
    """``sentiment:<ticker>``: a user, crowd or market (``mp``) sentiment point."""

    data: SentimentData


class Order(Message, frozen=True, kw_only=True):
    """``user:<uid>:orders``: the full current state of one of the user's orders."""

    data: OrderData


class UserTrade(Message, frozen=True, kw_only=True):
    """``user:<uid>:trades``: a fill of one of the user's orders."""

    data: UserTradeData


#: Message class per channel kind (``user:<uid>:trades`` is ``user_trades``).
MESSAGE_TYPES: dict[str, type[Message]] = {
    "book": BookUpdate,
    "trades": Trade,
    "ticker": Ticker,
    "candles": Candle,
    "sentiment": Sentiment,
    "orders": Order,
    "user_trades": UserTrade,
}

#: The payload type per channel kind, as :data:`MESSAGE_TYPES`.
PAYLOAD_TYPES: dict[str, object] = {
    "book": BookData,
    "trades": TradeData,
    "ticker": TickerData,
    "candles": CandleData,
    "sentiment": SentimentData,
    "orders": OrderData,
    "user_trades": UserTradeData,
}

AnyMessage = BookUpdate | Trade | Ticker | Candle | Sentiment | Order | UserTrade


# -- events --------------------------------------------------------------------------------


class Connected(msgspec.Struct, frozen=True, tag=True):
    """A connection is up and authenticated. ``user`` is None when anonymous;
    ``expires_at`` (UNIX seconds) is the token's expiry; ``reconnect`` is False for the
    first connection."""

    url: str
    user: str | None
    expires_at: float | None
    reconnect: bool


class Reconnecting(msgspec.Struct, frozen=True, tag=True):
    """The connection is down; attempt ``attempt`` follows in ``delay`` seconds.
    ``reason`` says why (``closed 3001 shutdown``, ``connection lost``, ``refused: …``);
    ``code`` is the close code when the server sent one (1006 when it did not)."""

    attempt: int
    delay: float
    reason: str
    code: int | None = None


class Recovered(msgspec.Struct, frozen=True, tag=True):
    """``channel`` resumed where it left off: the ``replayed`` publications it missed
    follow (0: it missed none). Its sequence is contiguous across the break."""

    channel: str
    replayed: int


class Resynced(msgspec.Struct, frozen=True, tag=True):
    """``channel`` could not continue where it was: the messages since the last one are
    lost. A state channel's fresh snapshot follows; any other channel continues from
    the server's position. ``reason``: ``history_lost`` (history no longer reaches
    back), ``reset`` (the server's stream restarted in a new epoch), ``gap`` (a seq was
    skipped and could not be replayed), ``checksum_mismatch`` (the local book differed
    from the server's), ``malformed`` (a book message could not be read)."""

    channel: str
    reason: str


class TokenRefreshed(msgspec.Struct, frozen=True, tag=True):
    """The token was replaced in-band (``refresh``) before it expired; the new one expires
    at ``expires_at`` (UNIX seconds)."""

    expires_at: float | None


class Malformed(msgspec.Struct, frozen=True, tag=True):
    """A message on ``channel`` at ``seq`` could not be read (``error`` says why); it is
    counted and skipped, so the next message's seq is not contiguous with the last one."""

    channel: str
    seq: int
    error: str


Event = Connected | Reconnecting | Recovered | Resynced | TokenRefreshed | Malformed
#: What a subscription yields.
Item = AnyMessage | Event


def message_kind(kind: str, private: bool) -> str:
    """The :data:`MESSAGE_TYPES` key of a channel kind."""
    return "user_trades" if private and kind == "trades" else kind

"""Errors the SDK raises. Every one has a stable ``code`` and a message naming what was
wrong (the URL, the channel, the close code)."""

from __future__ import annotations


class TickwireError(Exception):
    """Base of every SDK error: ``code`` is stable, ``message`` says what was wrong."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidURL(TickwireError, ValueError):
    """The URL is not a ``ws://`` or ``wss://`` URL (code ``bad_url``)."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_url", message)


class InvalidChannel(TickwireError, ValueError):
    """A channel name that does not parse (``bad_channel``, ``unknown_channel``), or one
    this client already holds (``already_subscribed``)."""


class ConnectError(TickwireError):
    """No connection could be made within the backoff's ``max_attempts`` (code
    ``unreachable``); ``attempts`` were made, the last failure is the ``__cause__``."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__("unreachable", message)
        self.attempts = attempts


class ServerClosed(TickwireError):
    """The server closed the connection with a code that means "do not reconnect as
    is" (3500 and above, 1002, 1003, 1007, 1008, 1009, 1010); code ``closed``."""

    def __init__(self, close_code: int, reason: str) -> None:
        what = f"server closed the connection with {close_code}"
        super().__init__("closed", f"{what} ({reason})" if reason else what)
        self.close_code = close_code
        self.reason = reason


class Unauthorized(TickwireError):
    """The server refused the credentials; ``code`` is the server's (``bad_signature``,
    ``token_expired``, ``key_revoked``, ``unauthorized``, …, see docs/protocol.md)."""


class TokenProviderError(TickwireError):
    """The ``token_provider`` raised or returned something that is not a token (code
    ``token_provider``); the provider's exception is the ``__cause__``."""

    def __init__(self, message: str) -> None:
        super().__init__("token_provider", message)


class RequestError(TickwireError):
    """The server refused a request (``unknown_channel``, ``too_many_channels``, …)."""


class Forbidden(RequestError):
    """The credentials do not entitle a channel (code ``forbidden``, or ``unauthorized``
    for a private channel without credentials); ``channel`` names it."""

    def __init__(self, code: str, message: str, channel: str) -> None:
        super().__init__(code, message)
        self.channel = channel

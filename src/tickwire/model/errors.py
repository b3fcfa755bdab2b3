"""The one base of every error a client, a publisher or an operator can be shown."""

from __future__ import annotations


class TickwireError(Exception):
    """An error with a stable ``code`` and a ``message`` naming what was wrong.

    Every layer's client-visible errors derive from this, so a shell renders any of them
    the same way (``code`` and ``message``) without translating between classes. A
    ``message`` never contains a secret.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"

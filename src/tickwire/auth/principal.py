"""Who is connected and what they may read."""

from __future__ import annotations

from dataclasses import dataclass, field

from tickwire.model.channels import Channel
from tickwire.model.errors import TickwireError


class AuthError(TickwireError):
    """Authentication or authorization failed. ``code`` is stable; ``message`` names what
    was wrong and never contains a secret."""


@dataclass(frozen=True, slots=True)
class Entitlements:
    """What a key or token may read. ``None`` for kinds or symbols means "any"."""

    kinds: frozenset[str] | None = None
    symbols: frozenset[str] | None = None
    private: bool = True
    #: Market Prophit ``/real-time/`` endpoint names readable over REST (None: all).
    paths: frozenset[str] | None = None
    #: Endpoint names that may be streamed over Socket.IO (None: all).
    streaming_paths: frozenset[str] | None = None
    #: Whether the key may stream over Socket.IO at all.
    streaming: bool = True
    #: Prefixes of the role-gated ``scoped:<prefix>:…`` channels readable (rango's RBAC:
    #: given by the role of an identity provider's token, ``ranger_rbac``); none by default.
    prefixes: frozenset[str] = frozenset()


PUBLIC_ONLY = Entitlements(private=False)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated (or anonymous) party. ``expires_at`` is UNIX seconds or None.

    ``key_name`` names the API key the credential came from (None for tokens of an external
    identity provider); ``role`` is the provider's role claim, when it has one.
    """

    user_id: str | None
    entitlements: Entitlements = field(default_factory=Entitlements)
    expires_at: float | None = None
    key_name: str | None = None
    role: str | None = None

    @property
    def anonymous(self) -> bool:
        """True for the unauthenticated principal."""
        return self.user_id is None


ANONYMOUS = Principal(user_id=None, entitlements=PUBLIC_ONLY)


def authorize(principal: Principal, channel: Channel) -> AuthError | None:
    """None when ``principal`` may read ``channel``; otherwise the error to send."""
    if channel.private:
        if principal.anonymous:
            return AuthError(
                "unauthorized", f"channel {channel.name!r} is private: authenticate first"
            )
        if not principal.entitlements.private:
            return AuthError(
                "forbidden", f"channel {channel.name!r}: this key may not read private streams"
            )
        if channel.user_id != principal.user_id:
            return AuthError("forbidden", f"channel {channel.name!r} belongs to another user")
        return None
    ents = principal.entitlements
    if channel.kind == "scoped":  # role-gated: the prefix decides, nothing else
        if channel.symbol in ents.prefixes:
            return None
        return AuthError(
            "forbidden",
            f"channel {channel.name!r}: no role permitted for prefix {channel.symbol!r}",
        )
    if ents.kinds is not None and channel.kind not in ents.kinds:
        return AuthError(
            "forbidden", f"channel {channel.name!r}: kind {channel.kind!r} is not entitled"
        )
    if ents.symbols is not None and channel.symbol not in ents.symbols:
        return AuthError(
            "forbidden", f"channel {channel.name!r}: symbol {channel.symbol!r} is not entitled"
        )
    return None

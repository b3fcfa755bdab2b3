"""API keys: what is stored, how secrets are hashed, and the key store interface.

A key belongs to one user and has a kind:

- ``secret``: a random high-entropy secret (Market Prophit ``POST /jwt``, InstaMrkt login).
  Stored as ``sha256:<hex>``, which is safe for a 256-bit random secret and can be looked up.
- ``publisher``: like ``secret``, for the HTTP publish API.
- ``password``: a user's password (InstaMrkt login). Stored as a salted scrypt hash;
  looked up by user, at most one active per user.
- ``ec`` / ``ed25519``: a public key (PEM) whose private half signs Coinbase-style JWTs.

Secrets are returned once, by :func:`create_key`, and never stored.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import enum
import hashlib
import hmac
import json
import re
import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tickwire.auth.principal import Entitlements
from tickwire.model.channels import PUBLIC_KINDS
from tickwire.model.errors import TickwireError


class KeyKind(enum.StrEnum):
    """What a key is and which credential style it serves."""

    SECRET = "secret"
    PUBLISHER = "publisher"
    PASSWORD = "password"
    EC = "ec"
    ED25519 = "ed25519"


#: Kinds whose credential is a secret the server keeps only as a hash.
SECRET_KINDS = frozenset({KeyKind.SECRET, KeyKind.PUBLISHER})
#: Kinds whose credential is a public key that verifies client-signed JWTs.
PUBLIC_KEY_KINDS = frozenset({KeyKind.EC, KeyKind.ED25519})


class KeyState(enum.StrEnum):
    """Whether a key may still be used."""

    ACTIVE = "active"
    REVOKED = "revoked"


class KeyStoreError(TickwireError, ValueError):
    """A key could not be created or changed; ``code`` is stable, the message names the field."""


_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@:-]{0,127}$")
_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SECRET_PREFIX = {KeyKind.SECRET: "twsk_", KeyKind.PUBLISHER: "twpk_"}


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One stored key. ``secret_hash`` is ``sha256:…`` or ``scrypt$…``; ``public_key`` is PEM."""

    name: str
    user_id: str
    kind: KeyKind
    entitlements: Entitlements
    state: KeyState
    created_at: float
    secret_hash: str | None = None
    public_key: str | None = None
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        """True unless the key was revoked."""
        return self.state is KeyState.ACTIVE

    def describe(self) -> dict[str, object]:
        """A JSON-ready description without the secret hash (safe to print or log)."""
        out: dict[str, object] = {
            "name": self.name,
            "user": self.user_id,
            "kind": self.kind.value,
            "state": self.state.value,
            "created_at": self.created_at,
            "entitlements": entitlements_to_json(self.entitlements),
        }
        if self.revoked_at is not None:
            out["revoked_at"] = self.revoked_at
        if self.public_key is not None:
            out["public_key"] = self.public_key
        return out


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A freshly created key and its credential, shown once.

    ``secret`` is the API secret, the password, or the private key (PEM for ``ec``,
    Coinbase-style base64 for ``ed25519``); None when the caller supplied a public key.
    """

    record: KeyRecord
    secret: str | None

    def __repr__(self) -> str:  # never let the secret reach a log line by accident
        return f"CreatedKey(record={self.record!r}, secret=<{'hidden' if self.secret else None}>)"


@dataclass(frozen=True, slots=True)
class Session:
    """An InstaMrkt-style login session: the current salt of one user's session key."""

    user_id: str
    salt: str
    key_name: str
    expires_at: float


# --- entitlements -------------------------------------------------------------------------


def entitlements_to_json(ents: Entitlements) -> dict[str, object]:
    """``{"kinds": [...]|null, "symbols": [...]|null, "private": bool}``, plus the Market
    Prophit fields ``paths``, ``streaming_paths`` and ``streaming`` when not the default."""
    out: dict[str, object] = {
        "kinds": None if ents.kinds is None else sorted(ents.kinds),
        "symbols": None if ents.symbols is None else sorted(ents.symbols),
        "private": ents.private,
    }
    if ents.paths is not None:
        out["paths"] = sorted(ents.paths)
    if ents.streaming_paths is not None:
        out["streaming_paths"] = sorted(ents.streaming_paths)
    if not ents.streaming:
        out["streaming"] = False
    return out


def _str_set(value: object, field: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise KeyStoreError("bad_entitlements", f"entitlements.{field} must be a list of strings")
    if len(value) > 1000:
        raise KeyStoreError("bad_entitlements", f"entitlements.{field}: at most 1000 entries")
    return frozenset(value)


def entitlements_from_json(value: object) -> Entitlements:
    """Parse :func:`entitlements_to_json`'s shape; :class:`KeyStoreError` names the field."""
    if not isinstance(value, dict):
        raise KeyStoreError("bad_entitlements", "entitlements must be an object")
    unknown = set(value) - set(_ENTITLEMENT_FIELDS)
    if unknown:
        raise KeyStoreError(
            "bad_entitlements", f"entitlements: unknown field {sorted(unknown)[0]!r}"
        )
    private = value.get("private", True)
    if not isinstance(private, bool):
        raise KeyStoreError("bad_entitlements", "entitlements.private must be true or false")
    streaming = value.get("streaming", True)
    if not isinstance(streaming, bool):
        raise KeyStoreError("bad_entitlements", "entitlements.streaming must be true or false")
    kinds = _str_set(value.get("kinds"), "kinds")
    if kinds is not None:
        bad = sorted(kinds - set(PUBLIC_KINDS))
        if bad:
            raise KeyStoreError(
                "bad_entitlements",
                f"entitlements.kinds: unknown kind {bad[0]!r} "
                f"(expected some of {', '.join(PUBLIC_KINDS)})",
            )
    return Entitlements(
        kinds=kinds,
        symbols=_str_set(value.get("symbols"), "symbols"),
        private=private,
        paths=_paths(value.get("paths"), "paths"),
        streaming_paths=_paths(value.get("streaming_paths"), "streaming_paths"),
        streaming=streaming,
    )


#: Fields of the entitlements object (docs/auth.md).
_ENTITLEMENT_FIELDS = ("kinds", "symbols", "private", "paths", "streaming_paths", "streaming")
_REAL_TIME = "/real-time/"


def _paths(value: object, field: str) -> frozenset[str] | None:
    """Endpoint names, given with or without the ``/real-time/`` prefix."""
    names = _str_set(value, field)
    if names is None:
        return None
    return frozenset(n[len(_REAL_TIME) :] if n.startswith(_REAL_TIME) else n for n in names)


_YES = {"yes", "true", "1", "on"}
_NO = {"no", "false", "0", "off"}


def parse_entitlements_spec(spec: str) -> Entitlements:
    """Parse the command line's ``--entitlements``.

    ``all`` (everything, the default), ``public`` (no private streams), a JSON object, or
    ``kinds=trades,book;symbols=BTC-USD,ETH-USD;private=no`` (any subset of the three).
    """
    spec = spec.strip()
    if spec in ("", "all"):
        return Entitlements()
    if spec == "public":
        return Entitlements(private=False)
    if spec.startswith("{"):
        try:
            return entitlements_from_json(json.loads(spec))
        except json.JSONDecodeError as exc:
            raise KeyStoreError(
                "bad_entitlements", f"entitlements: invalid JSON ({exc.msg})"
            ) from exc
    obj: dict[str, object] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        field, sep, raw = part.partition("=")
        field = field.strip()
        if not sep or field not in _ENTITLEMENT_FIELDS:
            raise KeyStoreError(
                "bad_entitlements",
                "entitlements: expected kinds=…;symbols=…;private=yes|no (or paths=…;"
                f"streaming_paths=…;streaming=yes|no), got {part.strip()!r}",
            )
        raw = raw.strip()
        if field in ("private", "streaming"):
            if raw.lower() not in _YES | _NO:
                raise KeyStoreError("bad_entitlements", f"entitlements: {field} must be yes or no")
            obj[field] = raw.lower() in _YES
        else:
            obj[field] = (
                None if raw in ("", "*") else [v.strip() for v in raw.split(",") if v.strip()]
            )
    return entitlements_from_json(obj)


# --- secrets and hashes -------------------------------------------------------------------

#: scrypt cost: n=2**14, r=8, p=1 uses 16 MiB and ~50 ms per hash on this kind of machine.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1


def hash_secret(secret: str) -> str:
    """The lookup hash of a high-entropy API secret."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """A salted scrypt hash: ``scrypt$n$r$p$salt$hash`` (base64url parts)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 2**20
    )
    b64 = base64.urlsafe_b64encode
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time compare). CPU-bound: ~50 ms."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.urlsafe_b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 2**20,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


async def verify_password_async(password: str, stored: str) -> bool:
    """:func:`verify_password` in a worker thread, so the event loop keeps serving."""
    return await asyncio.to_thread(verify_password, password, stored)


def generate_secret(kind: KeyKind) -> str:
    """A new API secret: a kind prefix and 256 random bits, base64url."""
    return _SECRET_PREFIX.get(kind, "tw_") + secrets.token_urlsafe(32)


def _pem_public(key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key_pem(kind: KeyKind, pem: str) -> str:
    """Validate a public key of ``kind`` given as PEM and return its canonical PEM."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise KeyStoreError("bad_public_key", "public key: not a PEM public key") from exc
    if kind is KeyKind.EC:
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise KeyStoreError(
                "bad_public_key", "public key: kind ec needs a P-256 (secp256r1) key"
            )
        return _pem_public(key)
    if kind is KeyKind.ED25519:
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise KeyStoreError("bad_public_key", "public key: kind ed25519 needs an Ed25519 key")
        return _pem_public(key)
    raise KeyStoreError("bad_kind", f"kind {kind.value!r} takes no public key")


def _generate_key_pair(kind: KeyKind) -> tuple[str, str]:
    """(public PEM, private credential) for ``ec`` or ``ed25519``.

    The private credential is in the form Coinbase hands out and its SDK reads: a SEC1
    ``EC PRIVATE KEY`` PEM for ``ec``; base64 of seed + public key (64 bytes) for ``ed25519``.
    """
    if kind is KeyKind.EC:
        priv = ec.generate_private_key(ec.SECP256R1())
        private = priv.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode("ascii")
        return _pem_public(priv.public_key()), private
    ed = ed25519.Ed25519PrivateKey.generate()
    raw = ed.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    ) + ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _pem_public(ed.public_key()), base64.b64encode(raw).decode("ascii")


def validate_user_id(user_id: str) -> str:
    """Check a user id has the shape channel names accept (``user:<uid>:orders``)."""
    if not isinstance(user_id, str) or not _USER_ID.match(user_id):
        raise KeyStoreError(
            "bad_user",
            "user: 1 to 64 characters of letters, digits and ._@- (starting alphanumeric)",
        )
    return user_id


def validate_key_name(name: str) -> str:
    """Check a key name: 1 to 128 characters of letters, digits and ``._/@:-``."""
    if not isinstance(name, str) or not _KEY_NAME.match(name):
        raise KeyStoreError(
            "bad_name",
            "name: 1 to 128 characters of letters, digits and ._/@:- (starting alphanumeric)",
        )
    return name


# --- the store ----------------------------------------------------------------------------


class KeyStore(ABC):
    """Where keys and login sessions live. SQLite (embedded) or PostgreSQL (clusters).

    All methods are coroutines; :meth:`open` creates the schema when missing.
    """

    @abstractmethod
    async def open(self) -> None:
        """Connect and create the tables if they do not exist."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""

    @abstractmethod
    async def add(self, record: KeyRecord) -> None:
        """Store a new key; raises :class:`KeyStoreError` ``key_exists`` if the name is taken."""

    @abstractmethod
    async def get(self, name: str) -> KeyRecord | None:
        """The key called ``name``, active or revoked."""

    @abstractmethod
    async def find_by_secret_hash(self, secret_hash: str) -> KeyRecord | None:
        """The key whose stored secret hash is ``secret_hash``."""

    @abstractmethod
    async def list(self, user_id: str | None = None) -> list[KeyRecord]:
        """All keys (of one user), oldest first."""

    @abstractmethod
    async def revoke(self, name: str, at: float) -> KeyRecord | None:
        """Mark a key revoked (idempotent); returns it, or None if there is no such key."""

    async def revoked_since(self, since: float) -> builtins.list[tuple[str, float]]:
        """``(name, revoked_at)`` of every key revoked at or after ``since`` (UNIX seconds):
        what a node polls to close the connections of keys revoked elsewhere."""
        return [
            (r.name, r.revoked_at)
            for r in await self.list()
            if r.revoked_at is not None and r.revoked_at >= since
        ]

    @abstractmethod
    async def find_password(self, user_id: str) -> KeyRecord | None:
        """The user's active ``password`` key."""

    @abstractmethod
    async def put_session(self, session: Session) -> None:
        """Replace the user's login session."""

    @abstractmethod
    async def get_session(self, user_id: str) -> Session | None:
        """The user's login session, expired or not."""

    async def __aenter__(self) -> KeyStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def create_key(
    store: KeyStore,
    *,
    kind: KeyKind,
    user_id: str,
    entitlements: Entitlements | None = None,
    name: str | None = None,
    public_key: str | None = None,
    password: str | None = None,
    now: float | None = None,
) -> CreatedKey:
    """Create and store a key; the returned :class:`CreatedKey` holds the only copy of its
    credential. A new ``password`` key revokes the user's previous one."""
    validate_user_id(user_id)
    created = time.time() if now is None else now
    name = validate_key_name(name) if name is not None else f"{kind.value}-{secrets.token_hex(6)}"
    ents = entitlements if entitlements is not None else Entitlements()
    record = KeyRecord(
        name=name,
        user_id=user_id,
        kind=kind,
        entitlements=ents,
        state=KeyState.ACTIVE,
        created_at=created,
    )
    secret: str | None
    if kind in SECRET_KINDS:
        if public_key is not None or password is not None:
            raise KeyStoreError(
                "bad_kind", f"kind {kind.value!r} takes neither public key nor password"
            )
        secret = generate_secret(kind)
        record = replace(record, secret_hash=hash_secret(secret))
    elif kind is KeyKind.PASSWORD:
        if public_key is not None:
            raise KeyStoreError("bad_kind", "kind 'password' takes no public key")
        if password is not None and not 8 <= len(password) <= 1024:
            raise KeyStoreError("bad_password", "password: 8 to 1024 characters")
        secret = password if password is not None else secrets.token_urlsafe(18)
        record = replace(record, secret_hash=await asyncio.to_thread(hash_password, secret))
    else:
        if password is not None:
            raise KeyStoreError("bad_kind", f"kind {kind.value!r} takes no password")
        if public_key is not None:
            record = replace(record, public_key=load_public_key_pem(kind, public_key))
            secret = None
        else:
            pub, secret = _generate_key_pair(kind)
            record = replace(record, public_key=pub)
    previous = await store.find_password(user_id) if kind is KeyKind.PASSWORD else None
    await store.add(record)
    if previous is not None:
        await store.revoke(previous.name, created)
    # a password the caller chose is not shown back
    return CreatedKey(record=record, secret=None if password is not None else secret)

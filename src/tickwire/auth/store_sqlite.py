"""The embedded key store: one SQLite file, the standard library's sqlite3.

Queries are small and indexed; each runs in a worker thread so a slow disk never stalls the
event loop. WAL mode and a busy timeout let ``tickwire keys`` write while a server reads.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tickwire.auth.keys import (
    KeyKind,
    KeyRecord,
    KeyState,
    KeyStore,
    KeyStoreError,
    Session,
    entitlements_from_json,
    entitlements_to_json,
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    entitlements TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL,
    secret_hash TEXT UNIQUE,
    public_key TEXT
);
CREATE INDEX IF NOT EXISTS keys_user ON keys (user_id, kind);
CREATE INDEX IF NOT EXISTS keys_revoked ON keys (revoked_at);
CREATE TABLE IF NOT EXISTS sessions (
    user_id TEXT PRIMARY KEY,
    salt TEXT NOT NULL,
    key_name TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""
_COLUMNS = (
    "name, user_id, kind, entitlements, state, created_at, revoked_at, secret_hash, public_key"
)


def _record(row: tuple[Any, ...]) -> KeyRecord:
    name, user_id, kind, ents, state, created_at, revoked_at, secret_hash, public_key = row
    return KeyRecord(
        name=name,
        user_id=user_id,
        kind=KeyKind(kind),
        entitlements=entitlements_from_json(json.loads(ents)),
        state=KeyState(state),
        created_at=created_at,
        revoked_at=revoked_at,
        secret_hash=secret_hash,
        public_key=public_key,
    )


class SqliteKeyStore(KeyStore):
    """Keys in a SQLite file at ``path`` (``:memory:`` for a private in-memory database)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteKeyStore({self.path!r})"

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise RuntimeError("key store is not open")

        def call() -> T:
            with self._lock:
                return fn(conn)

        return await asyncio.to_thread(call)

    async def open(self) -> None:
        """Open (creating if needed) the file and its tables."""
        if self._conn is not None:
            return

        def connect() -> sqlite3.Connection:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 5000")
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(_SCHEMA)
            return conn

        self._conn = await asyncio.to_thread(connect)

    async def close(self) -> None:
        """Close the file."""
        conn, self._conn = self._conn, None
        if conn is None:
            return

        def shut() -> None:
            # under the lock: a query still running in another thread (the revocation
            # poll, say) finishes first; closing under it crashed the process (SIGSEGV)
            with self._lock:
                conn.close()

        await asyncio.to_thread(shut)

    async def add(self, record: KeyRecord) -> None:
        """Insert ``record``; ``key_exists`` if its name is taken."""

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.name,
                    record.user_id,
                    record.kind.value,
                    json.dumps(entitlements_to_json(record.entitlements)),
                    record.state.value,
                    record.created_at,
                    record.revoked_at,
                    record.secret_hash,
                    record.public_key,
                ),
            )

        try:
            await self._run(insert)
        except sqlite3.IntegrityError as exc:
            raise KeyStoreError("key_exists", f"name: a key called {record.name!r} exists") from exc

    async def _one(self, where: str, args: tuple[Any, ...]) -> KeyRecord | None:
        def query(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = conn.execute(
                f"SELECT {_COLUMNS} FROM keys WHERE {where} LIMIT 1", args
            ).fetchone()
            return row

        row = await self._run(query)
        return None if row is None else _record(row)

    async def get(self, name: str) -> KeyRecord | None:
        """The key called ``name``."""
        return await self._one("name = ?", (name,))

    async def find_by_secret_hash(self, secret_hash: str) -> KeyRecord | None:
        """The key with this secret hash."""
        return await self._one("secret_hash = ?", (secret_hash,))

    async def find_password(self, user_id: str) -> KeyRecord | None:
        """The user's active password key (the newest if several)."""
        return await self._one(
            "user_id = ? AND kind = 'password' AND state = 'active' ORDER BY created_at DESC",
            (user_id,),
        )

    async def list(self, user_id: str | None = None) -> list[KeyRecord]:
        """Keys, oldest first."""

        def query(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            if user_id is None:
                cur = conn.execute(f"SELECT {_COLUMNS} FROM keys ORDER BY created_at, name")
            else:
                cur = conn.execute(
                    f"SELECT {_COLUMNS} FROM keys WHERE user_id = ? ORDER BY created_at, name",
                    (user_id,),
                )
            return cur.fetchall()

        return [_record(r) for r in await self._run(query)]

    async def revoked_since(self, since: float) -> builtins.list[tuple[str, float]]:
        """``(name, revoked_at)`` of the keys revoked at or after ``since`` (by an index:
        every node polls this twice a second)."""

        def query(conn: sqlite3.Connection) -> list[tuple[str, float]]:
            cur = conn.execute(
                "SELECT name, revoked_at FROM keys WHERE revoked_at >= ? ORDER BY revoked_at",
                (since,),
            )
            return [(str(name), float(at)) for name, at in cur.fetchall()]

        return await self._run(query)

    async def revoke(self, name: str, at: float) -> KeyRecord | None:
        """Revoke ``name`` (keeping the first revocation time)."""

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE keys SET state = 'revoked', revoked_at = COALESCE(revoked_at, ?) "
                "WHERE name = ?",
                (at, name),
            )

        await self._run(update)
        return await self.get(name)

    async def put_session(self, session: Session) -> None:
        """Replace the user's session."""

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO sessions (user_id, salt, key_name, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET salt = excluded.salt, "
                "key_name = excluded.key_name, expires_at = excluded.expires_at",
                (session.user_id, session.salt, session.key_name, session.expires_at),
            )

        await self._run(upsert)

    async def get_session(self, user_id: str) -> Session | None:
        """The user's session."""

        def query(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = conn.execute(
                "SELECT user_id, salt, key_name, expires_at FROM sessions WHERE user_id = ?",
                (user_id,),
            ).fetchone()
            return row

        row = await self._run(query)
        return None if row is None else Session(*row)

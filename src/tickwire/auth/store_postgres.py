"""The clustered key store: PostgreSQL through asyncpg.

Tables live in one schema (``tickwire`` unless the URL says ``?schema=NAME``), so several
deployments, or test runs, can share a database without touching each other.
"""

from __future__ import annotations

import builtins
import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

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

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_COLUMNS = (
    "name, user_id, kind, entitlements, state, created_at, revoked_at, secret_hash, public_key"
)


def split_schema(url: str, default: str = "tickwire") -> tuple[str, str]:
    """(URL without ``schema=``, schema name) for a ``postgresql://…[?schema=NAME]`` URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = default
    rest = []
    for k, v in query:
        if k == "schema":
            schema = v
        else:
            rest.append((k, v))
    if not _SCHEMA_NAME.match(schema):
        raise KeyStoreError(
            "bad_store", "store: schema must be lowercase letters, digits and _ (max 63)"
        )
    return urlunsplit(parts._replace(query=urlencode(rest))), schema


def _record(row: asyncpg.Record) -> KeyRecord:
    return KeyRecord(
        name=row["name"],
        user_id=row["user_id"],
        kind=KeyKind(row["kind"]),
        entitlements=entitlements_from_json(json.loads(row["entitlements"])),
        state=KeyState(row["state"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        secret_hash=row["secret_hash"],
        public_key=row["public_key"],
    )


class PostgresKeyStore(KeyStore):
    """Keys in PostgreSQL at ``url`` (``postgresql://user@host:port/db[?schema=NAME]``)."""

    def __init__(self, url: str, *, schema: str | None = None, max_connections: int = 4) -> None:
        dsn, url_schema = split_schema(url)
        self._dsn = dsn
        self.schema = schema if schema is not None else url_schema
        if not _SCHEMA_NAME.match(self.schema):
            raise KeyStoreError("bad_store", "store: invalid schema name")
        self._max = max_connections
        self._pool: Any = None

    def __repr__(self) -> str:
        parts = urlsplit(self._dsn)
        host = parts.hostname or ""
        return f"PostgresKeyStore(host={host!r}, schema={self.schema!r})"  # no password

    @property
    def _t(self) -> str:
        return f'"{self.schema}"'

    async def open(self) -> None:
        """Connect and create the schema and tables (serialized by an advisory lock)."""
        if self._pool is not None:
            return
        pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._max)
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.schema)
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._t}")
                await conn.execute(
                    f"""
                    CREATE TABLE IF NOT EXISTS {self._t}.keys (
                        name TEXT PRIMARY KEY,
                        user_id TEXT NOT NULL,
                        kind TEXT NOT NULL,
                        entitlements TEXT NOT NULL,
                        state TEXT NOT NULL,
                        created_at DOUBLE PRECISION NOT NULL,
                        revoked_at DOUBLE PRECISION,
                        secret_hash TEXT UNIQUE,
                        public_key TEXT
                    )"""
                )
                await conn.execute(
                    f"CREATE INDEX IF NOT EXISTS keys_user ON {self._t}.keys (user_id, kind)"
                )
                await conn.execute(
                    f"CREATE INDEX IF NOT EXISTS keys_revoked ON {self._t}.keys (revoked_at)"
                )
                await conn.execute(
                    f"""
                    CREATE TABLE IF NOT EXISTS {self._t}.sessions (
                        user_id TEXT PRIMARY KEY,
                        salt TEXT NOT NULL,
                        key_name TEXT NOT NULL,
                        expires_at DOUBLE PRECISION NOT NULL
                    )"""
                )
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        """Close the pool."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def drop_schema(self) -> None:
        """Drop this store's schema and everything in it (tests; irreversible)."""
        async with self._acquire() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {self._t} CASCADE")

    def _acquire(self) -> Any:
        if self._pool is None:
            raise RuntimeError("key store is not open")
        return self._pool.acquire()

    async def add(self, record: KeyRecord) -> None:
        """Insert ``record``; ``key_exists`` if its name is taken."""
        try:
            async with self._acquire() as conn:
                await conn.execute(
                    f"INSERT INTO {self._t}.keys ({_COLUMNS}) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    record.name,
                    record.user_id,
                    record.kind.value,
                    json.dumps(entitlements_to_json(record.entitlements)),
                    record.state.value,
                    record.created_at,
                    record.revoked_at,
                    record.secret_hash,
                    record.public_key,
                )
        except asyncpg.UniqueViolationError as exc:
            raise KeyStoreError("key_exists", f"name: a key called {record.name!r} exists") from exc

    async def _one(self, where: str, *args: object) -> KeyRecord | None:
        async with self._acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM {self._t}.keys WHERE {where} LIMIT 1", *args
            )
        return None if row is None else _record(row)

    async def get(self, name: str) -> KeyRecord | None:
        """The key called ``name``."""
        return await self._one("name = $1", name)

    async def find_by_secret_hash(self, secret_hash: str) -> KeyRecord | None:
        """The key with this secret hash."""
        return await self._one("secret_hash = $1", secret_hash)

    async def find_password(self, user_id: str) -> KeyRecord | None:
        """The user's active password key (the newest if several)."""
        return await self._one(
            "user_id = $1 AND kind = 'password' AND state = 'active' ORDER BY created_at DESC",
            user_id,
        )

    async def list(self, user_id: str | None = None) -> list[KeyRecord]:
        """Keys, oldest first."""
        async with self._acquire() as conn:
            if user_id is None:
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM {self._t}.keys ORDER BY created_at, name"
                )
            else:
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM {self._t}.keys WHERE user_id = $1 "
                    "ORDER BY created_at, name",
                    user_id,
                )
        return [_record(r) for r in rows]

    async def revoked_since(self, since: float) -> builtins.list[tuple[str, float]]:
        """``(name, revoked_at)`` of the keys revoked at or after ``since`` (by an index:
        every node polls this twice a second)."""
        async with self._acquire() as conn:
            rows = await conn.fetch(
                f"SELECT name, revoked_at FROM {self._t}.keys WHERE revoked_at >= $1 "
                "ORDER BY revoked_at",
                since,
            )
        return [(str(r["name"]), float(r["revoked_at"])) for r in rows]

    async def revoke(self, name: str, at: float) -> KeyRecord | None:
        """Revoke ``name`` (keeping the first revocation time)."""
        async with self._acquire() as conn:
            await conn.execute(
                f"UPDATE {self._t}.keys SET state = 'revoked', "
                "revoked_at = COALESCE(revoked_at, $1) WHERE name = $2",
                at,
                name,
            )
        return await self.get(name)

    async def put_session(self, session: Session) -> None:
        """Replace the user's session."""
        async with self._acquire() as conn:
            await conn.execute(
                f"INSERT INTO {self._t}.sessions (user_id, salt, key_name, expires_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET "
                "salt = excluded.salt, key_name = excluded.key_name, "
                "expires_at = excluded.expires_at",
                session.user_id,
                session.salt,
                session.key_name,
                session.expires_at,
            )

    async def get_session(self, user_id: str) -> Session | None:
        """The user's session."""
        async with self._acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT user_id, salt, key_name, expires_at FROM {self._t}.sessions "
                "WHERE user_id = $1",
                user_id,
            )
        if row is None:
            return None
        return Session(row["user_id"], row["salt"], row["key_name"], row["expires_at"])

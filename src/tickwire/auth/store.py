"""Choosing a key store from one setting: a file path, or a ``postgresql://`` URL."""

from __future__ import annotations

from tickwire.auth.keys import KeyStore, KeyStoreError


def open_key_store(location: str) -> KeyStore:
    """A (not yet opened) key store for ``location``.

    ``postgresql://…`` or ``postgres://…`` (optionally ``?schema=NAME``) → PostgreSQL;
    anything else is a SQLite file path (``:memory:`` for a throwaway in-memory store).
    """
    if location.startswith(("postgresql://", "postgres://")):
        try:
            from tickwire.auth.store_postgres import PostgresKeyStore
        except ModuleNotFoundError as exc:  # asyncpg is optional: tickwire[postgres]
            raise KeyStoreError(
                "missing_dependency",
                f"key_store: a PostgreSQL key store needs the {exc.name!r} package: "
                "pip install 'tickwire[postgres]'",
            ) from None

        return PostgresKeyStore(location)
    from tickwire.auth.store_sqlite import SqliteKeyStore

    return SqliteKeyStore(location)

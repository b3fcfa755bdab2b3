"""The key store suite: one set of tests, run against SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tickwire.auth import Entitlements
from tickwire.auth.keys import (
    KeyKind,
    KeyState,
    KeyStore,
    KeyStoreError,
    Session,
    create_key,
    entitlements_from_json,
    entitlements_to_json,
    hash_password,
    hash_secret,
    parse_entitlements_spec,
    verify_password,
)
from tickwire.auth.store import open_key_store
from tickwire.auth.store_postgres import PostgresKeyStore, split_schema
from tickwire.auth.store_sqlite import SqliteKeyStore

from .services import POSTGRES_DSN, require


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    if request.param == "sqlite":
        s: KeyStore = SqliteKeyStore(tmp_path / "keys.sqlite3")
        await s.open()
        yield s
        await s.close()
        return
    require("PostgreSQL", "127.0.0.1", 5432)
    schema = f"tw_test_{secrets.token_hex(6)}"
    pg = PostgresKeyStore(POSTGRES_DSN, schema=schema)
    await pg.open()
    try:
        yield pg
    finally:
        await pg.drop_schema()
        await pg.close()


async def test_secret_key_is_shown_once_and_stored_as_hash(store: KeyStore) -> None:
    made = await create_key(store, kind=KeyKind.SECRET, user_id="alice")
    assert made.secret is not None and made.secret.startswith("twsk_")
    stored = await store.get(made.record.name)
    assert stored is not None
    assert stored.secret_hash == hash_secret(made.secret)
    assert made.secret not in repr(stored) and made.secret not in json.dumps(stored.describe())
    assert made.secret not in repr(made)
    assert (await store.find_by_secret_hash(hash_secret(made.secret))) == stored
    assert await store.find_by_secret_hash(hash_secret(made.secret + "x")) is None


async def test_round_trip_of_every_field(store: KeyStore) -> None:
    ents = Entitlements(kinds=frozenset({"trades", "book"}), symbols=frozenset({"BTC-USD"}))
    made = await create_key(
        store, kind=KeyKind.PUBLISHER, user_id="bob", entitlements=ents, name="feed-1", now=1000.5
    )
    got = await store.get("feed-1")
    assert got == made.record
    assert got is not None
    assert (got.user_id, got.kind, got.entitlements, got.state, got.created_at) == (
        "bob",
        KeyKind.PUBLISHER,
        ents,
        KeyState.ACTIVE,
        1000.5,
    )


async def test_duplicate_name_is_refused(store: KeyStore) -> None:
    await create_key(store, kind=KeyKind.SECRET, user_id="alice", name="dup")
    with pytest.raises(KeyStoreError) as err:
        await create_key(store, kind=KeyKind.SECRET, user_id="carol", name="dup")
    assert err.value.code == "key_exists"
    got = await store.get("dup")
    assert got is not None and got.user_id == "alice"


async def test_list_and_revoke(store: KeyStore) -> None:
    a = await create_key(store, kind=KeyKind.SECRET, user_id="alice", now=1.0)
    b = await create_key(store, kind=KeyKind.EC, user_id="alice", now=2.0)
    c = await create_key(store, kind=KeyKind.SECRET, user_id="bob", now=3.0)
    assert [k.name for k in await store.list()] == [a.record.name, b.record.name, c.record.name]
    assert [k.name for k in await store.list("alice")] == [a.record.name, b.record.name]
    revoked = await store.revoke(a.record.name, 50.0)
    assert revoked is not None and revoked.state is KeyState.REVOKED
    assert revoked.revoked_at == 50.0 and not revoked.active
    again = await store.revoke(a.record.name, 99.0)  # idempotent, keeps the first time
    assert again is not None and again.revoked_at == 50.0
    assert await store.revoke("no-such-key", 1.0) is None
    other = await store.get(b.record.name)
    assert other is not None and other.active


async def test_revoked_since_lists_only_later_revocations(store: KeyStore) -> None:
    keys = [await create_key(store, kind=KeyKind.SECRET, user_id="u", now=1.0) for _ in range(4)]
    a, b, c, _ = (k.record.name for k in keys)
    assert await store.revoked_since(0.0) == []
    await store.revoke(a, 10.0)
    await store.revoke(b, 20.0)
    await store.revoke(c, 30.0)
    assert await store.revoked_since(20.0) == [(b, 20.0), (c, 30.0)]
    assert await store.revoked_since(31.0) == []
    assert await store.revoked_since(0.0) == [(a, 10.0), (b, 20.0), (c, 30.0)]


async def test_the_revocation_poll_reads_an_index_not_the_table(tmp_path: Path) -> None:
    store = SqliteKeyStore(tmp_path / "keys.sqlite3")
    await store.open()
    try:
        plan = await store._run(
            lambda conn: conn.execute(
                "EXPLAIN QUERY PLAN SELECT name, revoked_at FROM keys WHERE revoked_at >= ? "
                "ORDER BY revoked_at",
                (0.0,),
            ).fetchall()
        )
    finally:
        await store.close()
    assert any("USING INDEX keys_revoked" in str(row[-1]) for row in plan), plan


async def test_public_keys_are_stored_as_pem(store: KeyStore) -> None:
    ec_key = await create_key(store, kind=KeyKind.EC, user_id="alice")
    assert ec_key.secret is not None and "BEGIN EC PRIVATE KEY" in ec_key.secret
    pub = serialization.load_pem_public_key(ec_key.record.public_key.encode())  # type: ignore[union-attr]
    assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1"
    assert ec_key.record.secret_hash is None

    ed_key = await create_key(store, kind=KeyKind.ED25519, user_id="alice")
    assert ed_key.secret is not None
    raw = base64.b64decode(ed_key.secret)
    assert len(raw) == 64  # Coinbase's form: seed + public key
    priv = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    stored = await store.get(ed_key.record.name)
    assert stored is not None and stored.public_key is not None
    assert (
        stored.public_key
        == priv.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def test_supplied_public_key_is_validated(store: KeyStore) -> None:
    priv = ec.generate_private_key(ec.SECP256R1())
    pem = priv.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    made = await create_key(store, kind=KeyKind.EC, user_id="dave", public_key=pem.decode())
    assert made.secret is None and made.record.public_key == pem.decode()
    wrong_curve = ec.generate_private_key(ec.SECP384R1()).public_key()
    rsa_pub = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    bad_keys: list[tuple[KeyKind, ec.EllipticCurvePublicKey | rsa.RSAPublicKey]]
    bad_keys = [(KeyKind.EC, wrong_curve), (KeyKind.ED25519, rsa_pub)]
    for bad_kind, bad in bad_keys:
        text = bad.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        with pytest.raises(KeyStoreError) as err:
            await create_key(store, kind=bad_kind, user_id="dave", public_key=text)
        assert err.value.code == "bad_public_key"
    with pytest.raises(KeyStoreError):
        await create_key(store, kind=KeyKind.EC, user_id="dave", public_key="not a key")
    assert [k.name for k in await store.list("dave")] == [made.record.name]


async def test_password_keys_use_scrypt_and_replace_the_previous(store: KeyStore) -> None:
    first = await create_key(store, kind=KeyKind.PASSWORD, user_id="erin", password="hunter22!")
    assert first.secret is None  # a chosen password is not echoed back
    assert first.record.secret_hash is not None
    assert (
        first.record.secret_hash.startswith("scrypt$")
        and "hunter22" not in first.record.secret_hash
    )
    assert verify_password("hunter22!", first.record.secret_hash)
    assert not verify_password("hunter22?", first.record.secret_hash)
    second = await create_key(store, kind=KeyKind.PASSWORD, user_id="erin")
    assert second.secret is not None and len(second.secret) >= 20
    current = await store.find_password("erin")
    assert current is not None and current.name == second.record.name
    old = await store.get(first.record.name)
    assert old is not None and old.state is KeyState.REVOKED
    assert await store.find_password("nobody") is None


async def test_sessions_are_replaced(store: KeyStore) -> None:
    assert await store.get_session("alice") is None
    await store.put_session(Session("alice", "salt1", "k1", 100.0))
    await store.put_session(Session("alice", "salt2", "k2", 200.0))
    await store.put_session(Session("bob", "salt3", "k3", 300.0))
    assert await store.get_session("alice") == Session("alice", "salt2", "k2", 200.0)
    assert await store.get_session("bob") == Session("bob", "salt3", "k3", 300.0)


async def test_bad_input_names_the_field(store: KeyStore) -> None:
    cases = [
        ({"user_id": "no spaces"}, "bad_user"),
        ({"user_id": "ok", "name": "bad name"}, "bad_name"),
        ({"user_id": "ok", "password": "short"}, "bad_password"),
    ]
    for kwargs, code in cases:
        kind = KeyKind.PASSWORD if "password" in kwargs else KeyKind.SECRET
        with pytest.raises(KeyStoreError) as err:
            await create_key(store, kind=kind, **kwargs)  # type: ignore[arg-type]
        assert err.value.code == code
    with pytest.raises(KeyStoreError) as err:
        await create_key(store, kind=KeyKind.SECRET, user_id="ok", password="long enough")
    assert err.value.code == "bad_kind"
    assert await store.list() == []


def test_entitlements_spec() -> None:
    assert parse_entitlements_spec("all") == Entitlements()
    assert parse_entitlements_spec("public") == Entitlements(private=False)
    assert parse_entitlements_spec("kinds=trades,book;symbols=BTC-USD;private=no") == Entitlements(
        kinds=frozenset({"trades", "book"}), symbols=frozenset({"BTC-USD"}), private=False
    )
    assert parse_entitlements_spec('{"symbols": ["AAPL"]}') == Entitlements(
        symbols=frozenset({"AAPL"})
    )
    for bad, fragment in [
        ("kinds=nope", "kinds"),
        ("private=maybe", "private"),
        ("colour=red", "expected"),
        ("{bad json", "JSON"),
        ('{"private": "yes"}', "private"),
    ]:
        with pytest.raises(KeyStoreError) as err:
            parse_entitlements_spec(bad)
        assert fragment in err.value.message
    ents = Entitlements(kinds=frozenset({"ticker"}), private=False)
    assert entitlements_from_json(entitlements_to_json(ents)) == ents


def test_password_hash_is_salted() -> None:
    a, b = hash_password("same-password", n=2**10), hash_password("same-password", n=2**10)
    assert a != b and verify_password("same-password", a) and verify_password("same-password", b)
    assert not verify_password("same-password", "sha256:abc")
    assert not verify_password("same-password", "scrypt$garbage")


def test_open_key_store_chooses_by_location(tmp_path: Path) -> None:
    assert isinstance(open_key_store(str(tmp_path / "k.db")), SqliteKeyStore)
    pg = open_key_store("postgresql://u:pw@db.example:5432/x?schema=deploy_a&sslmode=disable")
    assert isinstance(pg, PostgresKeyStore) and pg.schema == "deploy_a"
    assert "pw" not in repr(pg)
    assert split_schema("postgresql://h/db?sslmode=disable") == (
        "postgresql://h/db?sslmode=disable",
        "tickwire",
    )
    with pytest.raises(KeyStoreError):
        split_schema("postgresql://h/db?schema=Robert');DROP")

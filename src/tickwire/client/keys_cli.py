"""``tickwire keys create|list|revoke|show``: manage API keys in the key store.

The store is ``--store`` (a SQLite path or a ``postgresql://`` URL), else the server
configuration's ``key_store`` (``TICKWIRE_KEY_STORE``, the config file, or the default
``tickwire-keys.sqlite3``). A key's credential is printed once, by ``create``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

from tickwire.auth import (
    KeyKind,
    KeyRecord,
    KeyStore,
    KeyStoreError,
    create_key,
    open_key_store,
    parse_entitlements_spec,
)
from tickwire.auth.keys import entitlements_to_json

KEYS_EPILOG = """\
examples:
  tickwire keys create --kind secret --user alice          # prints the secret once
  tickwire keys create --kind publisher --user feed1       # for POST /api/v1/publish
  tickwire keys create --kind ec --user bob --public-key bob-public.pem
  tickwire keys list --user alice --json
  tickwire keys revoke secret-b3392767ecf0
  tickwire keys create --kind secret --user alice --store postgresql://postgres@127.0.0.1/test
"""

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2


def add_parser(subparsers: Any) -> None:
    """Add ``keys`` and its subcommands to the ``tickwire`` command line."""
    keys = subparsers.add_parser(
        "keys",
        help="manage API keys (create, list, revoke, show)",
        description="Manage API keys in the key store (docs/auth.md).",
        epilog=KEYS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = keys.add_subparsers(dest="keys_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", help="SQLite file or postgresql:// URL (default: key_store)")
        p.add_argument("--config", help="TOML config file to read key_store from")
        p.add_argument("--json", action="store_true", help="print JSON for scripts")

    create = sub.add_parser("create", help="create a key and print its credential once")
    create.add_argument(
        "--kind",
        required=True,
        choices=[k.value for k in KeyKind],
        help="secret (POST /jwt, /login), publisher (publish API), password (/login), "
        "ec or ed25519 (client-signed JWTs)",
    )
    create.add_argument("--user", required=True, help="owner user id (user:<id>:* channels)")
    create.add_argument("--name", help="key name (default: <kind>-<random>); kid for ec/ed25519")
    create.add_argument(
        "--entitlements",
        default="all",
        help="all (default), public (no private streams), a JSON object, or "
        "'kinds=trades,book;symbols=BTC-USD;private=no'",
    )
    create.add_argument(
        "--public-key", metavar="PEM_FILE", help="ec/ed25519: register this public key instead"
    )
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="password: read it from standard input (default: generate one)",
    )
    common(create)
    create.set_defaults(func=_run, action=_create)

    listing = sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--user", help="only this user's keys")
    common(listing)
    listing.set_defaults(func=_run, action=_list)

    for name, action, text in (
        ("revoke", "_revoke", "revoke a key (its tokens and sessions stop working)"),
        ("show", "_show", "show one key"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("name", help="key name")
        common(p)
        p.set_defaults(func=_run, action=globals()[action])


def _store_location(args: argparse.Namespace) -> str:
    if args.store:
        return str(args.store)
    from tickwire.server.config import load_config

    return load_config({}, file=args.config).auth.key_store


def _run(args: argparse.Namespace) -> int:
    try:
        location = _store_location(args)
    except ValueError as exc:
        print(f"tickwire keys: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    code: int = asyncio.run(_with_store(location, args))
    return code


async def _with_store(location: str, args: argparse.Namespace) -> int:
    try:
        store = open_key_store(location)
        await store.open()
    except (KeyStoreError, OSError) as exc:
        print(f"tickwire keys: cannot open store: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        code: int = await args.action(store, args)
        return code
    except KeyStoreError as exc:
        print(f"tickwire keys: {exc.message} ({exc.code})", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        await store.close()


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _ents_text(record: KeyRecord) -> str:
    e = entitlements_to_json(record.entitlements)
    parts = []
    if e["kinds"] is not None:
        parts.append("kinds=" + ",".join(e["kinds"]))  # type: ignore[arg-type]
    if e["symbols"] is not None:
        parts.append("symbols=" + ",".join(e["symbols"]))  # type: ignore[arg-type]
    if not e["private"]:
        parts.append("private=no")
    return ";".join(parts) or "all"


def _print_record(record: KeyRecord) -> None:
    print(f"name:         {record.name}")
    print(f"user:         {record.user_id}")
    print(f"kind:         {record.kind.value}")
    print(f"state:        {record.state.value}")
    print(f"created:      {_when(record.created_at)} UTC")
    if record.revoked_at is not None:
        print(f"revoked:      {_when(record.revoked_at)} UTC")
    print(f"entitlements: {_ents_text(record)}")
    if record.public_key:
        print("public key:")
        print(record.public_key.rstrip())


_CREDENTIAL = {
    KeyKind.SECRET: "secret key",
    KeyKind.PUBLISHER: "publisher secret",
    KeyKind.PASSWORD: "password",
    KeyKind.EC: "private key (EC P-256, PEM)",
    KeyKind.ED25519: "private key (Ed25519, base64 seed + public key)",
}


async def _create(store: KeyStore, args: argparse.Namespace) -> int:
    kind = KeyKind(args.kind)
    public_key = None
    if args.public_key:
        try:
            public_key = await asyncio.to_thread(Path(args.public_key).read_text, "ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyStoreError("bad_public_key", f"--public-key: cannot read: {exc}") from exc
    password = None
    if args.password_stdin:
        if kind is not KeyKind.PASSWORD:
            raise KeyStoreError("bad_kind", "--password-stdin: only for --kind password")
        if sys.stdin.isatty():
            password = getpass.getpass("password: ")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
    made = await create_key(
        store,
        kind=kind,
        user_id=args.user,
        entitlements=parse_entitlements_spec(args.entitlements),
        name=args.name,
        public_key=public_key,
        password=password,
    )
    if args.json:
        out: dict[str, Any] = {"key": made.record.describe(), "secret": made.secret}
        print(json.dumps(out, indent=2))
        return EXIT_OK
    _print_record(made.record)
    if made.secret is not None:
        print()
        print(f"{_CREDENTIAL[kind]} (shown once; it is not stored, keep it now):")
        print(made.secret.rstrip())
    return EXIT_OK


async def _list(store: KeyStore, args: argparse.Namespace) -> int:
    records = await store.list(args.user)
    if args.json:
        print(json.dumps([r.describe() for r in records], indent=2))
        return EXIT_OK
    if not records:
        print("no keys")
        return EXIT_OK
    width = max(len(r.name) for r in records)
    head = f"{'NAME':<{width}}  {'USER':<16} {'KIND':<9} {'STATE':<7} {'CREATED (UTC)':<19}"
    print(head + "  ENTITLEMENTS")
    for r in records:
        print(
            f"{r.name:<{width}}  {r.user_id:<16} {r.kind.value:<9} {r.state.value:<7} "
            f"{_when(r.created_at):<19}  {_ents_text(r)}"
        )
    return EXIT_OK


async def _show(store: KeyStore, args: argparse.Namespace) -> int:
    record = await store.get(args.name)
    if record is None:
        print(f"tickwire keys: no key named {args.name!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print(json.dumps(record.describe(), indent=2))
    else:
        _print_record(record)
    return EXIT_OK


async def _revoke(store: KeyStore, args: argparse.Namespace) -> int:
    record = await store.revoke(args.name, time.time())
    if record is None:
        print(f"tickwire keys: no key named {args.name!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print(json.dumps(record.describe(), indent=2))
    else:
        print(f"revoked {record.name} (user {record.user_id}) at {_when(record.revoked_at)} UTC")
    return EXIT_OK

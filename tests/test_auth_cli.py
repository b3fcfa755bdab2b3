"""``tickwire keys``: create, list, show, revoke, with text and JSON output."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tickwire.auth import AuthSettings
from tickwire.client.cli import main
from tickwire.server.config import load_config

from .authkit import load_private, new_ec, public_pem


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_show_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "keys.sqlite3")
    code, out, _ = run(
        capsys, "keys", "create", "--kind", "secret", "--user", "alice", "--store", store,
        "--entitlements", "kinds=trades,book;symbols=BTC-USD;private=no", "--json",
    )  # fmt: skip
    assert code == 0
    made = json.loads(out)
    assert made["secret"].startswith("twsk_")
    assert made["key"]["entitlements"] == {
        "kinds": ["book", "trades"],
        "symbols": ["BTC-USD"],
        "private": False,
    }
    name = made["key"]["name"]

    code, out, _ = run(capsys, "keys", "create", "--kind", "ec", "--user", "bob", "--name",
                       "organizations/o/apiKeys/k1", "--store", store)  # fmt: skip
    assert code == 0 and "BEGIN EC PRIVATE KEY" in out and "shown once" in out
    pem = out[out.index("-----BEGIN EC PRIVATE KEY") :]
    assert load_private(pem.strip()) is not None

    code, out, _ = run(capsys, "keys", "list", "--store", store, "--json")
    listed = json.loads(out)
    assert [k["name"] for k in listed] == [name, "organizations/o/apiKeys/k1"]
    assert made["secret"] not in out and "sha256" not in out

    code, out, _ = run(capsys, "keys", "list", "--store", store, "--user", "bob")
    assert "organizations/o/apiKeys/k1" in out and name not in out

    code, out, _ = run(capsys, "keys", "revoke", name, "--store", store)
    assert code == 0 and f"revoked {name}" in out
    code, out, _ = run(capsys, "keys", "show", name, "--store", store, "--json")
    shown = json.loads(out)
    assert shown["state"] == "revoked" and "revoked_at" in shown

    code, _, err = run(capsys, "keys", "show", "nope", "--store", store)
    assert code == 1 and "no key named 'nope'" in err
    code, _, err = run(capsys, "keys", "revoke", "nope", "--store", store)
    assert code == 1


def test_bad_input_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "keys.sqlite3")
    for argv, fragment in [
        (["--user", "bad user", "--kind", "secret"], "user:"),
        (["--user", "a", "--kind", "secret", "--entitlements", "kinds=bogus"], "kinds"),
        (
            ["--user", "a", "--kind", "ec", "--public-key", str(tmp_path / "missing.pem")],
            "cannot read",
        ),
        (["--user", "a", "--kind", "secret", "--password-stdin"], "--password-stdin"),
    ]:
        code, _, err = run(capsys, "keys", "create", "--store", store, *argv)
        assert code == 2 and fragment in err, err
    code, out, _ = run(capsys, "keys", "list", "--store", store)
    assert out.strip() == "no keys"


def test_public_key_and_password_from_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = str(tmp_path / "keys.sqlite3")
    pem_file = tmp_path / "pub.pem"
    pem_file.write_text(public_pem(new_ec()))
    code, out, _ = run(capsys, "keys", "create", "--kind", "ec", "--user", "c", "--public-key",
                       str(pem_file), "--store", store, "--json")  # fmt: skip
    assert code == 0
    body = json.loads(out)
    assert body["secret"] is None and body["key"]["public_key"] == pem_file.read_text()
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    code, out, _ = run(capsys, "keys", "create", "--kind", "password", "--user", "c",
                       "--password-stdin", "--store", store, "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["secret"] is None and "correct horse" not in out


def test_store_comes_from_config_when_not_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "from-env.sqlite3"
    monkeypatch.setenv("TICKWIRE_KEY_STORE", str(store))
    code, _, _ = run(capsys, "keys", "create", "--kind", "secret", "--user", "d")
    assert code == 0 and store.exists()


def test_auth_settings_are_the_configs_own() -> None:
    """The auth settings are declared once (AuthSettings) and read by their own names:
    flat from the environment, and their defaults are AuthSettings' defaults."""
    assert load_config({}, env={}).auth == AuthSettings()
    c = load_config({}, env={"TICKWIRE_COINBASE_ISSUERS": "cdp", "TICKWIRE_AUTH_SECRET": "s" * 40})
    assert c.auth.coinbase_issuers == ("cdp",) and c.auth.auth_secret == "s" * 40
    assert "s" * 40 not in repr(c.auth) and "s" * 40 not in repr(c)

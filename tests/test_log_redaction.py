"""Issue 10, defect 3: credentials never reach a log line, however they are spelled."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tickwire.auth import Authenticator, KeyKind, create_key
from tickwire.server import logredact
from tickwire.server.auth_routes import AUTH_KEY
from tickwire.server.logredact import redact_credentials

from . import logcheck
from .authkit import SECRET, digest
from .harness import Gateway, run_gateway
from .test_auth_routes import get_token


async def login(gw: Gateway, auth: Authenticator, user: str) -> str:
    made = await create_key(auth.store, kind=KeyKind.SECRET, user_id=user)
    assert made.secret
    async with gw.session.post(gw.http + "/login", json={"secret": made.secret}) as resp:
        assert resp.status == 200
        key: str = (await resp.json())["session_key"]
    return key


async def test_percent_encoded_parameter_names_are_redacted_in_the_access_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with run_gateway(auth_secret=SECRET) as gw:
        auth = gw.runner.app[AUTH_KEY]
        made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice")
        assert made.secret
        token = await get_token(gw, made.secret)
        # the server decodes the name, so this is the token (and it is accepted) ...
        c = await gw.connect(f"?%74oken={token}")
        assert (await c.recv_type("authenticated"))["user"] == "alice"
        await c.close()
        key = await login(gw, auth, "bob")
        n = "nonce-1"
        h = digest("bob", n, key)
        c = await gw.connect(f"?id=bob&n={n}&%68={h}")
        assert (await c.recv_type("authenticated"))["user"] == "bob"
        await c.close()
    # ... and the access log line says so without it (aiohttp logs the name decoded or
    # not, depending on its version: either way, redacted)
    access = "\n".join(r.getMessage() for r in caplog.records if r.name == "aiohttp.access")
    assert "oken=<redacted>" in access
    assert "=<redacted> HTTP/1.1" in access and "n=nonce-1" in access
    for secret in (token, h, key, made.secret):
        assert secret[:24] not in caplog.text


async def test_an_over_long_request_line_is_logged_once_redacted_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with run_gateway(auth_secret=SECRET) as gw:
        auth = gw.runner.app[AUTH_KEY]
        key = await login(gw, auth, "carol")
        n = "1700000000999"
        h = digest("carol", n, key)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        path = f"/ws?id=carol&n={n}&h={h}&pad=" + "x" * 9000
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status = await reader.readline()
        assert b" 400 " in status
        writer.close()
        await reader.read()
    refused = [r for r in caplog.records if "8190 bytes" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in caplog.records]
    assert refused[0].levelno == logging.INFO and refused[0].exc_info is None
    assert "h=<redacted>" in refused[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert h[:24] not in caplog.text


def test_every_logger_is_redacted_not_only_the_access_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logredact.install()  # what build_app does
    caplog.set_level(logging.DEBUG)
    secret = "eyJhbGciOiJIUzI1NiJ9.planted.secret-value"
    logging.getLogger("tickwire.some.dialect").info("client asked for %s", f"/x?token={secret}")
    try:
        raise ValueError(f"bad url /ws?jwt={secret}")
    except ValueError:
        logging.getLogger("elsewhere").exception("failed")
    assert secret not in caplog.text
    assert "?token=<redacted>" in caplog.text and "?jwt=<redacted>" in caplog.text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET /ws?%74oken=abc HTTP/1.1", "GET /ws?%74oken=<redacted> HTTP/1.1"),
        ("GET /ws?%2574oken=abc HTTP/1.1", "GET /ws?%2574oken=<redacted> HTTP/1.1"),
        ("GET /ws?TOKEN=abc&x=1", "GET /ws?TOKEN=<redacted>&x=1"),
        ("GET /ws?id=1&n=2&%68=ff&v=2", "GET /ws?id=1&n=2&%68=<redacted>&v=2"),
        ("GET /ws?to%6Ben=abc", "GET /ws?to%6Ben=<redacted>"),
        ("bytearray(b'/ws?id=a&h=aaaa...')", "bytearray(b'/ws?id=a&h=<redacted>')"),
        ('"GET /?session_key=k HTTP/1.1" "https://x/?secret=s"', None),
        ("GET /ws?height=3&hh=4&th=5", "GET /ws?height=3&hh=4&th=5"),
    ],
)
def test_redaction_after_percent_decoding(line: str, expected: str | None) -> None:
    out = redact_credentials(line)
    if expected is None:
        assert "=k" not in out and "=s" not in out and out.count("<redacted>") == 2
    else:
        assert out == expected


def test_the_suite_wide_log_check_finds_a_planted_secret() -> None:
    keeper = logcheck.LineKeeper()
    secret = "tw_sk_" + "Q" * 30
    keeper.emit(logging.makeLogRecord({"msg": "harmless", "levelno": 20}))
    keeper.emit(logging.makeLogRecord({"msg": f"leaked {secret[:26]} (truncated)"}))
    found = logcheck.leaks(keeper.lines, frozenset({secret, "unrelated-secret-value"}))
    assert [s for s, _ in found] == [secret]
    assert "leaked" in found[0][1]
    # and the suite's own run remembers what it made
    assert SECRET in logcheck.remembered()

"""``tickwire tail``, ``tickwire token`` and ``tickwire publish`` against real gateways;
the live ladder in a real terminal (tmux)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from tickwire.auth import KeyKind, create_key
from tickwire.client.cli import main
from tickwire.client.cli_common import http_base, ws_url
from tickwire.client.http_cli import read_events
from tickwire.model.payloads import TradeData
from tickwire.server.auth_routes import AUTH_KEY

from .authkit import SECRET
from .harness import run_gateway
from .redis_server import free_port
from .sdk_support import Node
from .services import IN_CI

PUBLISH_TOKEN = "cli-test-publish-token"


@pytest.fixture
async def demo() -> AsyncIterator[Node]:
    node = Node("demo", "--demo", "--demo-rate", "5", env={"TICKWIRE_KEY_STORE": ":memory:"})
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tickwire",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_tail_json_count_5_prints_five_messages_and_exits_0(demo: Node) -> None:
    code, out, err = await run_cli(
        "tail", "trades:BTC-USD", "--json", "--count", "5", env={"TICKWIRE_URL": demo.http}
    )
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 5
    msgs = [json.loads(line) for line in lines]
    for m in msgs:
        assert set(m) == {"type", "channel", "seq", "epoch", "ts", "data"}
        assert (m["type"], m["channel"]) == ("pub", "trades:BTC-USD")
        msgspec.convert(m["data"], TradeData)  # a valid trade
    seqs = [m["seq"] for m in msgs]
    assert seqs == list(range(seqs[0], seqs[0] + 5)) and len({m["epoch"] for m in msgs}) == 1
    assert "connected to " + demo.ws_url in err


def test_urls_from_either_scheme() -> None:
    assert ws_url("http://h:1") == "ws://h:1/ws" and ws_url("ws://h:1/ws") == "ws://h:1/ws"
    assert ws_url("https://h/base/") == "wss://h/base/ws" and ws_url("h:8080") == "ws://h:8080/ws"
    assert http_base("wss://h:9/ws") == "https://h:9" and http_base(None) == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["tail", "trades:BTC-USD:x"], "expected trades:<symbol>"),
        (["tail", "candles:BTC-USD:7m"], "unknown interval"),
        (["tail", "trades:BTC-USD", "book:BTC-USD", "--since", "e:1"], "exactly one"),
        (["tail", "trades:BTC-USD", "--since", "120"], "EPOCH:SEQ"),
        (["tail", "trades:BTC-USD", "--url", "ftp://h/x"], "--url"),
        (["tail", "trades:BTC-USD", "--count", "0"], "--count"),
        (["tail", "trades:BTC-USD", "--ladder"], "one book channel"),
        (["publish", "--token", "t", "--batch-size", "0"], "--batch-size"),
        (["publish", "/nonexistent/events.jsonl", "--token", "t"], "cannot read"),
        (["token"], "no secret"),
    ],
)
def test_bad_input_exits_2_naming_what_was_wrong(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TICKWIRE_SECRET", raising=False)
    assert main(args) == 2
    assert says in capsys.readouterr().err


async def test_tail_a_server_that_is_down_gives_up_after_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = await run_cli("tail", "trades:BTC-USD", "--retries", "2", "--url", url)
    assert code == 1
    assert "gave up after 2 failed connection attempts" in err and "(unreachable)" in err
    assert "reconnecting (attempt 2" in err


async def test_tail_a_private_channel_without_a_token_is_refused() -> None:
    async with run_gateway() as gw:
        code, _, err = await run_cli("tail", "user:bob:orders", "--url", gw.http)
    assert code == 1 and "user:bob:orders" in err and "(unauthorized)" in err


async def test_token_prints_a_token_and_refuses_a_wrong_secret() -> None:
    async with run_gateway(auth_secret=SECRET) as gw:
        made = await create_key(gw.runner.app[AUTH_KEY].store, kind=KeyKind.SECRET, user_id="al")
        assert made.secret is not None
        code, out, err = await run_cli(
            "token", "--url", gw.ws_url, env={"TICKWIRE_SECRET": made.secret}
        )
        assert code == 0, err
        token = out.strip()
        code, out, err = await run_cli(
            "token", "--secret-stdin", "--json", "--url", gw.http, stdin=b"twsk_wrong\n"
        )
        assert code == 1 and "401 unauthorized" in err and out == ""
        assert "twsk_wrong" not in err
    assert token.count(".") == 2  # a JWT


async def test_publish_reports_what_was_accepted_and_refused(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        "# a book, two trades, a crossed update, a trade\n"
        '{"type": "book", "market": "BTC-USD", "bids": [["100", "1"]], "asks": [["101", "1"]]}\n'
        '{"type": "trade", "market": "BTC-USD", "price": "100.5", "size": "0.1", "side": "buy"}\n'
        "\n"
        '{"type": "trade", "market": "BTC-USD", "price": "100.5", "size": "0.2", "side": "buy"}\n'
        '{"type": "book", "market": "BTC-USD", "bids": [["102", "1"]], "asks": []}\n'
        '{"type": "trade", "market": "DOGE-USD", "price": "1", "size": "1", "side": "buy"}\n'
    )
    async with run_gateway(publish_token=PUBLISH_TOKEN) as gw:
        env = {"TICKWIRE_URL": gw.http, "TICKWIRE_TOKEN": PUBLISH_TOKEN}
        code, out, err = await run_cli("publish", str(events), "--batch-size", "1", env=env)
        assert code == 1, err
        assert out.splitlines()[0].startswith("accepted 3 of 5 events in 5 batches")
        assert "refused 1 event (line 6): crossed_book (bids)" in out
        assert "refused 1 event (line 7): unknown_market (market)" in out
        one = {"type": "trade", "market": "BTC-USD", "price": "100.5", "size": "1", "side": "sell"}
        code, out, err = await run_cli(
            "publish", "-", "--json", env=env, stdin=json.dumps([one]).encode()
        )
        assert code == 0, err
        summary = json.loads(out)
        assert (summary["accepted"], summary["refused_events"], summary["refused"]) == (1, 0, [])
        assert summary["published"] >= 3  # the trade, its ticker and candles
        view = await (await gw.session.get(gw.http + "/api/v1/book/BTC-USD")).json()
        assert view["bids"] == [["100.00", "1.00000000"]]
        code, _, err = await run_cli("publish", str(events), env={**env, "TICKWIRE_TOKEN": "wrong"})
        assert code == 1 and "refused the credential (401 unauthorized)" in err


def test_read_events_accepts_jsonl_arrays_and_batches_and_names_a_bad_line() -> None:
    assert [e.body for e in read_events('[{"a": 1}, {"b": 2}]')] == [{"a": 1}, {"b": 2}]
    assert [e.line for e in read_events('{"events": [{"a": 1}]}')] == [1]
    assert [e.line for e in read_events('{"a": 1}\n\n# c\n{"b": 2}\n')] == [1, 4]
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_events('{"a": 1}\n{oops\n')


# -- the live ladder in a real terminal ----------------------------------------------------

PRICE_SIZE = re.compile(r"\b(?:ask|bid)\s+(\d+\.\d{2})\s+(\d+\.\d{8})\b")


async def test_the_live_ladder_in_tmux(demo: Node) -> None:
    tmux = shutil.which("tmux")
    if tmux is None:
        # make test installs it where it can (tests/ensure_tools.sh)
        (pytest.fail if IN_CI else pytest.skip)("tmux is not installed")
    socket = f"tw-{uuid.uuid4().hex[:8]}"  # our own tmux server: nobody else's sessions

    async def tm(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            tmux, "-L", socket, *args, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, args
        return out.decode()

    command = f"{sys.executable} -m tickwire tail book:BTC-USD --depth 5 --url {demo.http}"
    await tm("new-session", "-d", "-s", "ladder", "-x", "100", "-y", "30", command)
    try:

        async def screen_where(cond: Callable[[str], bool]) -> str:
            async with asyncio.timeout(30):
                while True:
                    text = await tm("capture-pane", "-p", "-t", "ladder")
                    if cond(text):
                        return text
                    await asyncio.sleep(0.2)  # a terminal has no event to wait on

        first = await screen_where(lambda t: len(PRICE_SIZE.findall(t)) == 10)
        assert "book:BTC-USD" in first and "spread" in first
        assert "checksum synced" in first and "0 mismatches" in first
        seq = re.search(r"seq (\d+)", first)
        assert seq is not None
        later = await screen_where(
            lambda t: (
                (m := re.search(r"seq (\d+)", t)) is not None
                and int(m.group(1)) > int(seq.group(1))
                and PRICE_SIZE.findall(t) != PRICE_SIZE.findall(first)
            )
        )
        rows = re.findall(r"\b(ask|bid)\s+(\d+\.\d{2})\s+\d+\.\d{8}\b", later)
        asks = [float(price) for side, price in rows if side == "ask"]
        assert asks == sorted(asks, reverse=True) and len(asks) == 5  # best ask at the bottom
        assert "█" in later
    finally:
        await tm("kill-server")

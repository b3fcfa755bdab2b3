"""The InstaMrkt flow against a real ``tickwire serve --demo`` process, by a client written
from the seed alone (tests/opcodekit.py: aiohttp's client used as a raw WebSocket).

POST /login, digest connect on the dedicated port's ``/``, ping, get_opcodes, logon,
subscribe to a book and trades, a snapshot and contiguous updates; then the client drops,
reconnects within the window, finds itself logged on, resubscribes with ``since`` and
receives exactly what a witness connection saw meanwhile."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from .opcodekit import OpClient, digest_query, login

BOOK, TRADES = "book:BTC-USD", "trades:BTC-USD"
PASSWORD = "pw-alice-process-123"


async def run(*args: str, stdin: bytes = b"", env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tickwire",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@asynccontextmanager
async def serving(tmp: Path) -> AsyncIterator[dict[str, str]]:
    """``tickwire serve --demo`` with an opcode port; yields its printed URLs by name."""
    env = {**os.environ, "TICKWIRE_KEY_STORE": str(tmp / "keys.sqlite3")}
    await run(
        "keys", "create", "--kind", "password", "--user", "alice", "--password-stdin",
        stdin=PASSWORD.encode() + b"\n", env=env,
    )  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tickwire", "serve", "--demo", "--demo-rate", "3",
        "--host", "127.0.0.1", "--port", "0", "--opcode-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        found: dict[str, str] = {}
        async with asyncio.timeout(30):
            while "health" not in found:
                line = (await proc.stdout.readline()).decode()
                assert line, "tickwire serve exited"
                m = re.match(r"\s+(\S.*?)\s{2,}(\S+)$", line)
                if m:
                    found[m.group(1)] = m.group(2)
        yield found
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


class Stream:
    """What one connection received per channel, checked contiguous as it arrives."""

    def __init__(self, client: OpClient) -> None:
        self.client = client
        self.msgs: dict[str, list[dict[str, Any]]] = {BOOK: [], TRADES: []}

    async def take(self) -> dict[str, Any]:
        msg = await self.client.recv()
        assert msg["res"] in (300, 301), msg  # no reset: nothing was lost
        got = self.msgs[msg["channel"]]
        if msg["res"] == 301:
            assert msg["channel"] == BOOK and not got, msg  # the book starts from a snapshot
        elif got:
            assert (msg["epoch"], msg["seq"]) == (got[-1]["epoch"], got[-1]["seq"] + 1), msg
        got.append(msg)
        return msg

    async def until(self, counts: dict[str, int]) -> None:
        while any(len(self.msgs[ch]) < n for ch, n in counts.items()):
            await self.take()

    def last(self, channel: str) -> dict[str, Any]:
        return self.msgs[channel][-1]


async def test_the_whole_instamrkt_flow_against_a_real_process(tmp_path: Path) -> None:
    async with serving(tmp_path) as urls, aiohttp.ClientSession() as http:
        base = urls["live demo page"].rstrip("/")
        port_url = urls["opcode port"]
        assert port_url.endswith("/")
        key = await login(http, base, "alice", PASSWORD)
        # the dedicated port serves the dialect at / and nothing else
        async with http.get(port_url.replace("ws://", "http://") + "healthz") as resp:
            assert resp.status == 404

        # connect on the dedicated port's / with the digest; ping; get_opcodes; logon
        c = await OpClient.connect(http, port_url + digest_query("alice", key))
        assert (await c.call(1, 1))["res"] == 1
        listing = await c.call(2, 2)
        ops, codes = listing["opcodes"], listing["response_codes"]
        assert (ops["ping"], ops["get_opcodes"], ops["logon"]) == (1, 2, 100)
        assert (codes["logon_success"], codes["logon_fail"]) == (100, 110)
        assert codes["logon_fail_already_logged_in"] == 112
        session = (await c.call(ops["logon"], codes["logon_success"]))["session_key"]

        # subscribe to a book and trades: a snapshot, then contiguous updates
        sub = await c.call(ops["subscribe"], codes["subscribed"], channels=[BOOK, TRADES])
        assert [ch["channel"] for ch in sub["channels"]] == [BOOK, TRADES]
        first = Stream(c)
        await first.until({BOOK: 5, TRADES: 2})
        assert first.msgs[BOOK][0]["res"] == 301
        # the snapshot new subscribers start from is stored every book_snapshot_every
        # updates: the ones after it follow, up to the position the reply named and on
        assert first.msgs[BOOK][0]["seq"] <= sub["channels"][0]["seq"]

        # a witness on the main port's path stays connected throughout
        w = await OpClient.connect(http, urls["opcode WebSocket"] + digest_query("alice", key))
        assert (await w.recv())["res"] == 100  # alice is logged on: so is this connection
        await w.call(ops["subscribe"], codes["subscribed"], channels=[BOOK, TRADES])
        witness = Stream(w)
        await witness.until({BOOK: 1, TRADES: 1})
        # the client reads on until the witness's streams overlap its own, then drops
        starts = {ch: witness.msgs[ch][0]["seq"] for ch in (BOOK, TRADES)}
        while any(first.last(ch)["seq"] < starts[ch] for ch in (BOOK, TRADES)):
            await first.take()
        left = {ch: first.last(ch) for ch in (BOOK, TRADES)}
        await c.close()
        # the market moves on
        while witness.last(BOOK)["seq"] < left[BOOK]["seq"] + 10 or (
            witness.last(TRADES)["seq"] < left[TRADES]["seq"] + 3
        ):
            await witness.take()

        # back within 15 minutes: logged on automatically, into the same session
        back = await OpClient.connect(http, port_url + digest_query("alice", key))
        auto = await back.recv()
        assert (auto["res"], auto["session_key"], auto["automatic"]) == (100, session, True)
        assert (await back.call(ops["logon"], 112))["session_key"] == session
        since = [
            {"channel": ch, "since": {"epoch": left[ch]["epoch"], "seq": left[ch]["seq"]}}
            for ch in (BOOK, TRADES)
        ]
        resub = await back.call(ops["subscribe"], codes["subscribed"], channels=since)
        assert [ch["recovered"] for ch in resub["channels"]] == [True, True]

        # exactly what was missed: from the next seq on, what the witness saw, same bytes
        again = Stream(back)
        for ch in (BOOK, TRADES):
            again.msgs[ch].append(left[ch])  # continue the contiguity check from there
        target = {ch: witness.last(ch)["seq"] for ch in (BOOK, TRADES)}
        while any(again.last(ch)["seq"] < target[ch] for ch in (BOOK, TRADES)):
            await again.take()
        for ch in (BOOK, TRADES):
            replayed = [m for m in again.msgs[ch][1:] if m["seq"] <= target[ch]]
            expected = [m for m in witness.msgs[ch] if left[ch]["seq"] < m["seq"] <= target[ch]]
            assert replayed[0]["seq"] == left[ch]["seq"] + 1
            assert [m["res"] for m in expected] == [300] * len(expected)
            assert [(m["res"], m["seq"], m["data"]) for m in replayed] == [
                (300, m["seq"], m["data"]) for m in expected
            ]
            assert len(replayed) >= (10 if ch == BOOK else 3)
        await back.close()
        await w.close()

"""What a Socket.IO session's WebSocket write costs in Python, per publication, beside
native's (which hands the hub's bytes to asyncio's transport as they are): one process,
no sockets (the session's WebSocket is a transport that only counts bytes).

Each write is what a lane's flush hands the session: ``--batch`` publications of Market
Prophit's crowd-sentiment view, rendered by the view's own format, in each shape the
session treats differently:

- ``raw channels``: the ``pub`` events of tickwire channels (``ChannelFormat``), written
  by the session's own hub connection;
- ``view, one channel``: a view's events (``both`` style, with offsets) from a lane that
  streams one channel, as most clients subscribe;
- ``view, two channels``: the same from a lane that streams two tickers;
- ``view, twenty channels``: from a lane of twenty, more than the session searches a
  write for (``MAX_SEARCHED``): its frames are read one by one.

    .venv/bin/python -m bench.sessionwrite [--batch 10] [--writes 20000] [--rounds 5]

It uses only what older trees have too, so the same file measures them:
``PYTHONPATH=<old tree>/src .venv/bin/python -m bench.sessionwrite``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from types import SimpleNamespace
from typing import Any

import msgspec

from bench.numbered import NullTransport
from tickwire.dialects.base import Handshake
from tickwire.dialects.prophit import CHANNEL_FORMAT, ENDPOINTS, prophit_format
from tickwire.hub.frames import text_frame
from tickwire.model.payloads import CrowdSentiment
from tickwire.model.publication import Publication
from tickwire.server.app import build_app
from tickwire.server.config import load_config
from tickwire.server.socketio import SOCKETIO_KEY, Session, SessionTransport

TS = 1_700_000_040_000


def publications(ticker: str, n: int) -> list[Publication]:
    out = []
    for i in range(n):
        data = CrowdSentiment(TS + i, ticker, 0.5, 0.25, 0.5, None, 7, 1.25)
        raw = msgspec.Raw(msgspec.json.encode(data))
        out.append(Publication(f"sentiment:{ticker}", i + 1, "e1", TS + i, raw))
    return out


def writes(batch: int) -> dict[str, tuple[bytes, list[set[str]]]]:
    """Each shape's one write and the channels of the session's lanes."""
    view = prophit_format(ENDPOINTS["crowd-sentiment"], "both", True)
    aapl, tsla = publications("AAPL", batch), publications("TSLA", batch)
    two = [p for pair in zip(aapl, tsla, strict=True) for p in pair][:batch]
    many = [f"T{i:02d}" for i in range(20)]
    twenty = [publications(t, 1)[0] for t in many][:batch]
    return {
        "raw channels": (b"".join(text_frame(CHANNEL_FORMAT.pub(p)) for p in aapl), []),
        "view, one channel": (
            b"".join(text_frame(view.pub(p)) for p in aapl),
            [{"sentiment:AAPL"}],
        ),
        "view, two channels": (
            b"".join(text_frame(view.pub(p)) for p in two),
            [{"sentiment:AAPL", "sentiment:TSLA"}],
        ),
        "view, twenty channels": (
            b"".join(text_frame(view.pub(p)) for p in twenty),
            [{f"sentiment:{t}" for t in many}],
        ),
    }


def session(server: Any, lanes: list[set[str]]) -> tuple[SessionTransport, NullTransport]:
    s = Session(server, 4, "127.0.0.1", Handshake("/socket.io/"))
    sink = NullTransport()
    s.ws_transport = sink  # type: ignore[assignment]
    for i, names in enumerate(lanes):  # the lanes' channels are all the session reads
        s.core.lanes[i] = SimpleNamespace(channels=names, closed=True)  # type: ignore[assignment,index]
    return SessionTransport(s), sink


def per_publication(transport: Any, data: bytes, writes: int, batch: int) -> float:
    write = transport.write
    start = time.perf_counter()
    for _ in range(writes):
        write(data)
    return (time.perf_counter() - start) / (writes * batch) * 1e9


async def main(batch: int, n: int, rounds: int) -> None:
    config = load_config({"host": "127.0.0.1", "port": 0, "key_store": ":memory:"}, env={})
    server = build_app(config)[SOCKETIO_KEY]
    shapes = writes(batch)
    native = NullTransport()
    results: dict[str, list[float]] = {"native: a transport that only counts": []}
    results.update({name: [] for name in shapes})
    for _ in range(rounds):  # interleaved, so that the machine's noise hits all alike
        results["native: a transport that only counts"].append(
            per_publication(native, shapes["raw channels"][0], n, batch)
        )
        for name, (data, lanes) in shapes.items():
            transport, sink = session(server, lanes)
            results[name].append(per_publication(transport, data, n, batch))
            assert sink.bytes, f"{name}: nothing reached the WebSocket"
    floor = min(results["native: a transport that only counts"])
    print(f"{batch} publications a write, {n:,} writes, best of {rounds} rounds")
    print("| write | ns per publication (best) | vs native |")
    print("|---|---:|---:|")
    for name, values in results.items():
        best = min(values)
        print(f"| {name} | {best:,.0f} | {best / floor:.1f}x |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--writes", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    asyncio.run(main(args.batch, args.writes, args.rounds))

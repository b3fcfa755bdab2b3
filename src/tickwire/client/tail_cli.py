"""``tickwire tail CHANNEL…``: print a stream's messages, or draw a book as a live ladder."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tickwire.client.cli_common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    add_token,
    add_url,
    ws_url,
)

EPILOG = """\
Messages go to stdout, one a line: human text by default, the wire's JSON with --json.
What the connection does (reconnects, recoveries, resyncs) goes to stderr. A single
book channel on a terminal is drawn as a live ladder (bids and asks with depth bars,
spread, seq, checksum state, reconnects); --no-ladder prints it as lines instead.
Exit status: 0 done (--count reached), 1 the server or connection failed, 2 bad input.

examples:
  tickwire tail trades:BTC-USD
  tickwire tail trades:BTC-USD ticker:ETH-USD --json --count 5
  tickwire tail book:BTC-USD                          # the live ladder
  tickwire tail trades:BTC-USD --since 9f3a51c2:120   # resume after seq 120
  TICKWIRE_URL=ws://gw.example:8080/ws TICKWIRE_TOKEN=$(tickwire token) \\
    tickwire tail user:alice:orders
"""


def add_parser(subparsers: Any) -> None:
    """Add ``tail`` to the ``tickwire`` command line."""
    p = subparsers.add_parser(
        "tail",
        help="print a channel's messages as they arrive (a live ladder for a book)",
        description="Subscribe to channels and print their messages as they arrive.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("channels", nargs="+", metavar="CHANNEL", help="e.g. trades:BTC-USD")
    add_url(p)
    add_token(p, "a token (POST /jwt, `tickwire token`); none: public channels only")
    p.add_argument("--json", action="store_true", help="one JSON message per line")
    p.add_argument("--count", type=int, help="exit after N messages")
    p.add_argument("--since", metavar="EPOCH:SEQ", help="resume one channel after SEQ")
    ladder = p.add_mutually_exclusive_group()
    ladder.add_argument(
        "--ladder", action="store_true", default=None, help="draw the live ladder (book only)"
    )
    ladder.add_argument("--no-ladder", dest="ladder", action="store_false", help="print lines")
    p.add_argument("--depth", type=int, default=10, help="ladder levels per side (default 10)")
    p.add_argument(
        "--retries",
        type=int,
        default=10,
        help="connection attempts in a row before giving up (0: for ever; default 10)",
    )
    p.set_defaults(func=_tail)


def _parse_since(text: str) -> tuple[str, int]:
    epoch, sep, seq = text.rpartition(":")
    if not sep or not epoch or not seq.isdigit():
        raise UsageError(f"--since {text!r}: expected EPOCH:SEQ, e.g. 9f3a51c2:120")
    return epoch, int(seq)


def _tail(args: argparse.Namespace) -> int:
    from tickwire.client.errors import InvalidChannel
    from tickwire.model.channels import ChannelError, parse_channel

    try:
        url = ws_url(args.url)
        if args.count is not None and args.count < 1:
            raise UsageError(f"--count {args.count}: must be at least 1")
        if args.retries < 0:
            raise UsageError(f"--retries {args.retries}: must be 0 or more")
        if not 1 <= args.depth <= 100:
            raise UsageError(f"--depth {args.depth}: must be 1 to 100")
        for name in args.channels:
            try:
                parse_channel(name)
            except ChannelError as exc:
                raise UsageError(exc.message) from None
        since = None
        if args.since is not None:
            if len(args.channels) != 1:
                raise UsageError("--since resumes one channel: name exactly one")
            since = {args.channels[0]: _parse_since(args.since)}
        books = [c for c in args.channels if c.startswith("book:")]
        ladder = args.ladder
        if ladder is None:
            ladder = len(args.channels) == 1 and bool(books) and not args.json
            ladder = ladder and sys.stdout.isatty()
        if ladder and (len(args.channels) != 1 or not books):
            raise UsageError("--ladder draws one book channel: name exactly one book:<market>")
        if ladder and args.json:
            raise UsageError("--ladder and --json do not go together")
    except (UsageError, InvalidChannel) as exc:
        print(f"tickwire tail: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return asyncio.run(_run(args, url, since, ladder))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


async def _run(
    args: argparse.Namespace, url: str, since: dict[str, tuple[str, int]] | None, ladder: bool
) -> int:
    import tickwire.client as tc

    backoff = tc.Backoff(max_attempts=args.retries or None, maximum=10.0)
    out = sys.stdout
    state = _State()

    def on_event(event: tc.Event) -> None:
        state.note(event)
        if not ladder:
            print("-- " + describe_event(event), file=sys.stderr, flush=True)

    try:
        async with tc.connect(url, token=args.token, backoff=backoff, on_event=on_event) as c:
            sub = c.subscribe(*args.channels, since=since)
            await sub.start()
            if ladder:
                return await _ladder(c, sub, args.channels[0], args.depth, args.count, state)
            seen = 0
            async for item in sub:
                if not isinstance(item, tc.Message):
                    if not isinstance(item, tc.Connected | tc.Reconnecting | tc.TokenRefreshed):
                        print("-- " + describe_event(item), file=sys.stderr, flush=True)
                    continue
                _print_message(out, item, args.json)
                seen += 1
                if args.count is not None and seen >= args.count:
                    return EXIT_OK
    except tc.TickwireError as exc:
        print(f"tickwire tail: {exc.message} ({exc.code})", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(exc, tc.InvalidChannel) else EXIT_FAILED
    return EXIT_OK


def _print_message(out: TextIO, msg: Any, as_json: bool) -> None:
    import msgspec

    if as_json:
        wire = {
            "type": "snapshot" if msg.snapshot else "pub",
            "channel": msg.channel,
            "seq": msg.seq,
            "epoch": msg.epoch,
            "ts": msg.ts,
            "data": msg.data,
        }
        out.write(msgspec.json.encode(wire).decode() + "\n")
    else:
        out.write(describe_message(msg) + "\n")
    out.flush()


# -- human text ----------------------------------------------------------------------------


def _clock(ts: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts / 1000)) + f".{ts % 1000:03d}"


def _levels(rows: list[tuple[str, str]], n: int = 3) -> str:
    shown = " ".join(f"{size}@{price}" for price, size in rows[:n])
    return shown + (f" +{len(rows) - n}" if len(rows) > n else "")


def describe_message(msg: Any) -> str:
    """One line for a message: UTC time, channel, seq, and what it says."""
    from tickwire.client import messages as m

    d: Any = msg.data
    if isinstance(msg, m.BookUpdate):
        if msg.snapshot:
            body = (
                f"snapshot {len(d.bids)} bids / {len(d.asks)} asks, best "
                f"{d.bids[0][0] if d.bids else '-'} / {d.asks[0][0] if d.asks else '-'}"
            )
        else:
            body = f"bids {_levels(d.bids) or '-'} | asks {_levels(d.asks) or '-'}"
    elif isinstance(msg, m.Trade):
        body = f"{d.side} {d.size} @ {d.price} (trade {d.id})"
    elif isinstance(msg, m.Ticker):
        body = (
            f"last {d.last} bid {d.best_bid} ask {d.best_ask} "
            f"24h vol {d.volume_24h} chg {d.change_pct_24h}%"
        )
    elif isinstance(msg, m.Candle):
        body = (
            f"{d.interval} {_clock(d.start)} O {d.open} H {d.high} L {d.low} C {d.close} "
            f"V {d.volume} ({d.trades} trades)"
        )
    elif isinstance(msg, m.Order):
        body = f"order {d.id} {d.side} {d.type} {d.state} {d.filled}/{d.size} @ {d.price}"
    elif isinstance(msg, m.UserTrade):
        body = f"fill {d.id} of {d.order_id}: {d.side} {d.size} @ {d.price} ({d.liquidity})"
    else:  # sentiment
        import msgspec

        fields = msgspec.structs.asdict(d)
        body = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("ts", "ticker"))
        body = f"{getattr(d, 'type', type(d).__name__)} {body}"
    kind = " snapshot" if msg.snapshot and not isinstance(msg, m.BookUpdate) else ""
    return f"{_clock(msg.ts)} {msg.channel} #{msg.seq}{kind} {body}"


def describe_event(event: Any) -> str:
    """One line for an event."""
    from tickwire.client import messages as m

    if isinstance(event, m.Connected):
        who = f" as {event.user}" if event.user else ""
        return f"{'reconnected' if event.reconnect else 'connected'} to {event.url}{who}"
    if isinstance(event, m.Reconnecting):
        return f"reconnecting (attempt {event.attempt}, in {event.delay:.2f} s): {event.reason}"
    if isinstance(event, m.Recovered):
        return f"{event.channel}: recovered, {event.replayed} missed messages replayed"
    if isinstance(event, m.Resynced):
        return f"{event.channel}: resynced ({event.reason}): messages were lost"
    if isinstance(event, m.TokenRefreshed):
        return "token refreshed"
    if isinstance(event, m.Malformed):
        return f"{event.channel}: skipped malformed message #{event.seq}: {event.error}"
    return repr(event)


# -- the ladder -----------------------------------------------------------------------------


class _State:
    """What the ladder shows beside the book."""

    def __init__(self) -> None:
        self.reconnects = 0
        self.resyncs = 0
        self.last_event = ""
        self.url = ""

    def note(self, event: Any) -> None:
        from tickwire.client import messages as m

        if isinstance(event, m.Reconnecting):
            self.reconnects += 1
        if isinstance(event, m.Resynced):
            self.resyncs += 1
        if isinstance(event, m.Connected):
            self.url = event.url
        self.last_event = describe_event(event)


def render_ladder(book: Any, depth: int, state: _State, updates: int) -> Any:
    """The ladder as a rich renderable: asks (best at the bottom) over bids (best at
    the top), each with a bar proportional to its size."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    bids, asks = book.depth(depth)
    biggest = max([lv.size for lv in bids + asks], default=1) or 1
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("side", width=4)
    table.add_column("price", justify="right")
    table.add_column("size", justify="right")
    table.add_column("depth", width=30, no_wrap=True)

    def bar(size: Any, style: str) -> Text:
        return Text("█" * max(1, int(30 * size / biggest)), style=style)

    for lv in reversed(asks):
        table.add_row("ask", Text(str(lv.price), "red"), str(lv.size), bar(lv.size, "red"))
    spread = book.spread
    table.add_row("", Text(f"spread {spread if spread is not None else '-'}", "bold"), "", "")
    for lv in bids:
        table.add_row("bid", Text(str(lv.price), "green"), str(lv.size), bar(lv.size, "green"))
    ok = "synced" if book.synced else "RESYNCING"
    checks = f"checksum {ok}: {book.verified} verified, {book.mismatches} mismatches"
    head = Text(
        f"{book.channel}  seq {book.seq}  epoch {book.epoch}  updates {updates}\n"
        f"{checks}  reconnects {state.reconnects}  resyncs {state.resyncs}",
        style="bold",
    )
    foot = Text(state.last_event, style="dim")
    return Group(head, table, foot)


async def _ladder(
    client: Any, sub: Any, channel: str, depth: int, count: int | None, state: _State
) -> int:
    from rich.console import Console
    from rich.live import Live

    import tickwire.client as tc

    book = client.book(channel)
    console = Console()
    updates = 0
    draw: Callable[[], Any] = lambda: render_ladder(book, depth, state, updates)  # noqa: E731
    with Live(draw(), console=console, refresh_per_second=8, transient=False) as live:
        async for item in sub:
            if isinstance(item, tc.Resynced | tc.Malformed | tc.Recovered):
                state.note(item)
            if isinstance(item, tc.Message):
                updates += 1
                live.update(draw())
                if count is not None and updates >= count:
                    break
    return EXIT_OK

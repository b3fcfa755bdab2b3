"""``tickwire token`` (``POST /jwt``) and ``tickwire publish`` (``POST /api/v1/publish``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from tickwire.client.cli_common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    add_token,
    add_url,
    http_base,
)

ENV_SECRET = "TICKWIRE_SECRET"

TOKEN_EPILOG = f"""\
The secret is read from ${ENV_SECRET} or, with --secret-stdin, from standard input
(never from an argument, which other users can see in ps).

examples:
  export {ENV_SECRET}=twsk_...            # from: tickwire keys create --kind secret --user alice
  tickwire token --url http://127.0.0.1:8080
  export TICKWIRE_TOKEN=$(tickwire token)
  tickwire token --json                  # {{"token": "...", "user": ..., "expires_at": ...}}
  printf %s "$SECRET" | tickwire token --secret-stdin
"""

PUBLISH_EPILOG = """\
Input: JSON Lines (one event per line; blank lines and lines starting with # are
skipped), or one JSON document: an array of events or {"events": [...]}. The event
shapes are those of POST /api/v1/publish (docs/market-data.md). Events go in batches of
--batch-size; each batch is applied all or nothing, so a refused batch publishes none
of its events. Exit status: 0 every event accepted, 1 some refused, 2 bad input.

examples:
  export TICKWIRE_TOKEN=$TICKWIRE_PUBLISH_TOKEN    # the publisher credential
  tickwire publish events.jsonl
  echo '{"type":"trade","market":"BTC-USD","price":"65000","size":"0.1","side":"buy"}' \\
    | tickwire publish -
  tickwire publish --batch-size 1 events.jsonl     # accept or refuse each event alone
  tickwire publish --json events.jsonl             # the summary as JSON
"""


def add_parser(subparsers: Any) -> None:
    """Add ``token`` and ``publish`` to the ``tickwire`` command line."""
    fmt = argparse.RawDescriptionHelpFormatter
    token = subparsers.add_parser(
        "token",
        help="get a token for a secret key (POST /jwt)",
        description="Exchange an API secret for a token (POST /jwt) and print it.",
        epilog=TOKEN_EPILOG,
        formatter_class=fmt,
    )
    add_url(token)
    token.add_argument("--secret-stdin", action="store_true", help="read the secret from stdin")
    token.add_argument("--json", action="store_true", help="print the answer as JSON")
    token.set_defaults(func=_token)

    publish = subparsers.add_parser(
        "publish",
        help="publish events from a file or stdin (POST /api/v1/publish)",
        description="Publish events from a file or stdin to POST /api/v1/publish, with "
        "progress and a summary of what was accepted and refused.",
        epilog=PUBLISH_EPILOG,
        formatter_class=fmt,
    )
    publish.add_argument("file", nargs="?", default="-", help="input file, - for stdin")
    add_url(publish)
    add_token(publish, "publisher credential: the server's publish_token or a publisher key")
    publish.add_argument("--batch-size", type=int, default=100, help="events per request")
    publish.add_argument("--json", action="store_true", help="print the summary as JSON")
    publish.set_defaults(func=_publish)


def _fail(what: str, message: str) -> int:
    print(f"tickwire {what}: {message}", file=sys.stderr)
    return EXIT_FAILED


def _bad(what: str, message: str) -> int:
    print(f"tickwire {what}: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _error_text(status: int, body: bytes) -> tuple[str, str]:
    """``(code, message)`` of an error answer (either of the two REST shapes)."""
    try:
        err = json.loads(body)["error"]
        return str(err.get("code", status)), str(err.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"http_{status}", body[:200].decode(errors="replace")


# -- token -----------------------------------------------------------------------------------


def _token(args: argparse.Namespace) -> int:
    try:
        base = http_base(args.url)
    except UsageError as exc:
        return _bad("token", str(exc))
    secret = sys.stdin.read().strip() if args.secret_stdin else os.environ.get(ENV_SECRET, "")
    if not secret:
        return _bad("token", f"no secret: set {ENV_SECRET} or pass --secret-stdin")
    try:
        return asyncio.run(_get_token(base, secret, args.json))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


async def _get_token(base: str, secret: str, as_json: bool) -> int:
    import aiohttp

    headers = {"Authorization": aiohttp.encode_basic_auth(secret, "")}
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(base + "/jwt", headers=headers) as resp,
        ):
            body = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, OSError) as exc:
        return _fail("token", f"cannot reach {base}: {exc}")
    if status != 200:
        code, message = _error_text(status, body)
        return _fail("token", f"{base}/jwt refused ({status} {code}): {message}")
    answer = json.loads(body)
    if as_json:
        print(json.dumps(answer))
    else:
        print(answer["token"])
    return EXIT_OK


# -- publish ---------------------------------------------------------------------------------


@dataclass
class Event:
    """One input event and where it came from (1-based line number)."""

    line: int
    body: Any


def read_events(text: str) -> list[Event]:
    """The events of ``text``: a JSON array, ``{"events": [...]}``, one event object, or
    JSON Lines. Raises :class:`UsageError` naming the line that is not JSON."""
    stripped = text.strip()
    if not stripped:
        return []
    try:
        doc = json.loads(stripped)
    except ValueError:
        doc = None
    else:
        if isinstance(doc, list):
            return [Event(i + 1, e) for i, e in enumerate(doc)]
        if isinstance(doc, dict) and isinstance(doc.get("events"), list) and "type" not in doc:
            return [Event(i + 1, e) for i, e in enumerate(doc["events"])]
        if isinstance(doc, dict):
            return [Event(1, doc)]
    events = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            events.append(Event(n, json.loads(line)))
        except ValueError as exc:
            raise UsageError(f"line {n} is not JSON: {exc}") from None
    return events


@dataclass
class Summary:
    events: int = 0
    accepted: int = 0
    published: int = 0
    batches: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)

    def events_refused(self) -> int:
        return sum(int(r["events"]) for r in self.refused)

    def as_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "accepted": self.accepted,
            "refused_events": self.events - self.accepted,
            "published": self.published,
            "batches": self.batches,
            "refused": self.refused,
        }


def _publish(args: argparse.Namespace) -> int:
    try:
        base = http_base(args.url)
        if args.batch_size < 1:
            raise UsageError(f"--batch-size {args.batch_size}: must be at least 1")
        if not args.token:
            raise UsageError("no publisher credential: pass --token or set TICKWIRE_TOKEN")
        if args.file == "-":
            text = sys.stdin.read()
        else:
            try:
                with open(args.file, encoding="utf-8") as fh:
                    text = fh.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read {args.file!r}: {exc}") from None
        events = read_events(text)
    except UsageError as exc:
        return _bad("publish", str(exc))
    if not events:
        return _bad("publish", "no events in the input")
    try:
        summary = asyncio.run(_send_all(base, args.token, events, args.batch_size))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except _Stop as exc:
        return _fail("publish", str(exc))
    if args.json:
        print(json.dumps(summary.as_json()))
    else:
        _print_summary(summary)
    return EXIT_OK if summary.accepted == summary.events else EXIT_FAILED


class _Stop(Exception):
    """Every further batch would fail the same way (credentials, unreachable)."""


async def _send_all(base: str, token: str, events: list[Event], size: int) -> Summary:
    import aiohttp
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    summary = Summary(events=len(events))
    url = base + "/api/v1/publish"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    progress = Progress(
        TextColumn("publishing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[refused]} refused"),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    with progress:
        task = progress.add_task("publish", total=len(events), refused=0)
        async with aiohttp.ClientSession() as session:
            for start in range(0, len(events), size):
                batch = events[start : start + size]
                body = json.dumps({"events": [e.body for e in batch]}).encode()
                started = time.monotonic()
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        status, answer = resp.status, await resp.read()
                except (aiohttp.ClientError, OSError) as exc:
                    raise _Stop(f"cannot reach {url}: {exc}") from None
                summary.batches += 1
                if status == 200:
                    result = json.loads(answer)
                    summary.accepted += int(result.get("accepted", 0))
                    summary.published += int(result.get("published", 0))
                else:
                    code, message = _error_text(status, answer)
                    if status in (401, 403):
                        raise _Stop(f"{url} refused the credential ({status} {code}): {message}")
                    refusal: dict[str, Any] = {
                        "lines": [batch[0].line, batch[-1].line],
                        "events": len(batch),
                        "status": status,
                        "code": code,
                        "message": message,
                        "seconds": round(time.monotonic() - started, 3),
                    }
                    try:
                        err = json.loads(answer)["error"]
                        if isinstance(err.get("index"), int) and 0 <= err["index"] < len(batch):
                            refusal["line"] = batch[err["index"]].line
                        if err.get("field"):
                            refusal["field"] = err["field"]
                    except (ValueError, KeyError, TypeError, AttributeError):
                        pass
                    summary.refused.append(refusal)
                    if not sys.stderr.isatty():
                        print(_refusal_text(refusal), file=sys.stderr)
                progress.update(task, advance=len(batch), refused=summary.events_refused())
    return summary


def _refusal_text(r: dict[str, Any]) -> str:
    first, last = r["lines"]
    batch = f"line {first}" if first == last else f"lines {first}-{last}"
    events = _n(int(r["events"]), "event")
    at = f" at line {r['line']}" if "line" in r and first != last else ""
    # the server's field path counts events within the batch: the line says which
    field_ = re.sub(r"^events\[\d+\]\.?", "", str(r.get("field", "")))
    field_ = f" ({field_})" if field_ else ""
    return f"refused {events} ({batch}): {r['code']}{at}{field_}: {r['message']}"


def _n(count: int, one: str) -> str:
    many = one + ("es" if one.endswith("ch") else "s")
    return f"{count} {one if count == 1 else many}"


def _print_summary(s: Summary) -> None:
    print(
        f"accepted {s.accepted} of {_n(s.events, 'event')} in {_n(s.batches, 'batch')} "
        f"({_n(s.published, 'publication')})"
    )
    if s.refused:
        refused = s.events - s.accepted
        print(f"refused {_n(refused, 'event')} in {_n(len(s.refused), 'batch')}:")
        for r in s.refused:
            print("  " + _refusal_text(r))

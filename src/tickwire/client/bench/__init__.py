"""``tickwire bench``: the load generator.

Opens many WebSocket connections from worker processes (one per spare core, uvloop),
subscribes them, counts what arrives without decoding it, and measures publish → receive
latency from the send time carried in sampled messages. Loopback targets only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from tickwire.client.bench.config import BenchConfig, BenchConfigError, parse_target
from tickwire.client.bench.dialects import DIALECT_CHOICES, DIALECTS, MIXED_NAME
from tickwire.client.bench.runner import results_table, run_bench

__all__ = ["BenchConfig", "add_parser", "default_workers", "main", "run_bench", "run_from_args"]

MAX_CONNECTIONS = 60_000
MAX_SECONDS = 600.0


def default_workers() -> int:
    """One worker per spare core: the cores this process may use, less one for the server."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on a ``subparsers`` object; sets ``func=run_from_args``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="load-test a WebSocket server on this machine",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--url", default="ws://127.0.0.1:8080", help="loopback ws:// URL")
    p.add_argument(
        "--dialect",
        choices=sorted(DIALECT_CHOICES),
        default="native",
        help="the wire of every connection; 'mixed': connection i speaks native, coinbase, "
        "ranger, eio4, opcode in turn (i mod 5), each on its default path",
    )
    p.add_argument(
        "--login",
        metavar="USER:PASSWORD",
        help="POST /login first and connect with the session digest (opcode dialect)",
    )
    p.add_argument("-c", "--connections", type=int, default=100)
    p.add_argument(
        "--channel",
        action="append",
        dest="channels",
        metavar="PATTERN",
        help="channel each connection subscribes to (repeatable; placeholders {conn}, "
        "{mod:N}, {zipf:N}); default trades:BENCH",
    )
    p.add_argument("--workers", type=int, default=default_workers())
    p.add_argument("--cpus", default="", help="pin workers to these CPUs, e.g. 1 or 1,2")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    p.add_argument("--connect-timeout", type=float, default=30.0)
    p.add_argument("--connect-concurrency", type=int, default=64)
    p.add_argument("--max-messages", type=int, default=0, help="end early after this many")
    p.add_argument("--sample-every", type=int, default=4, help="time one chunk in N")
    p.add_argument("--server-pid", type=int, default=None, help="report this PID's CPU/RSS")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run_from_args)
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Validate the command line into a :class:`BenchConfig`."""
    mixed = args.dialect == MIXED_NAME
    default_path = "" if mixed else DIALECTS[args.dialect].default_path
    if not 1 <= args.connections <= MAX_CONNECTIONS:
        raise BenchConfigError(f"connections: must be 1..{MAX_CONNECTIONS}")
    for name in ("warmup", "duration", "connect_timeout"):
        value = getattr(args, name)
        if not 0 <= value <= MAX_SECONDS:
            raise BenchConfigError(f"{name}: must be 0..{MAX_SECONDS:g} seconds")
    if args.workers < 1:
        raise BenchConfigError("workers: must be at least 1")
    try:
        cpus = tuple(int(c) for c in args.cpus.split(",") if c.strip())
    except ValueError as exc:
        raise BenchConfigError(f"cpus: not a list of CPU numbers: {args.cpus!r}") from exc
    target = parse_target(args.url, default_path)
    if mixed and target.path:
        raise BenchConfigError(
            f"url: --dialect {MIXED_NAME} connects each dialect on its own default path: "
            f"give the URL without a path, got {args.url!r}"
        )
    return BenchConfig(
        target=target,
        dialect=args.dialect,
        connections=args.connections,
        channels=tuple(args.channels or ["trades:BENCH"]),
        workers=min(args.workers, args.connections),
        warmup=args.warmup,
        duration=args.duration,
        connect_timeout=args.connect_timeout,
        connect_concurrency=max(1, args.connect_concurrency),
        max_messages=max(0, args.max_messages),
        sample_every=max(1, args.sample_every),
        cpus=cpus,
        login=args.login,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``tickwire bench`` as parsed; returns the exit status."""
    try:
        import rich  # noqa: F401
    except ModuleNotFoundError:
        print("tickwire bench: needs rich: pip install 'tickwire[bench]'", file=sys.stderr)
        return 2
    try:
        config = config_from_args(args)
    except BenchConfigError as exc:
        print(f"tickwire bench: {exc}", file=sys.stderr)
        return 2
    display = not args.quiet and sys.stderr.isatty()
    try:
        result = run_bench(config, server_pid=args.server_pid, display=display)
    except BenchConfigError as exc:
        print(f"tickwire bench: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from rich.console import Console

        Console().print(results_table(result))
    return 0 if result["ready"] else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m tickwire.client.bench``."""
    parser = argparse.ArgumentParser(prog="tickwire")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))

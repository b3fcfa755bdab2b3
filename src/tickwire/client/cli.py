"""The tickwire command line: run a gateway, and use one from a terminal."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tickwire import __version__

#: Subcommand modules: each exposes ``add_parser(subparsers)`` that sets ``func``.
SUBCOMMANDS: list[str] = [
    "tickwire.client.tail_cli",
    "tickwire.client.http_cli",
    "tickwire.client.keys_cli",
    "tickwire.client.bench",
]

EPILOG = """\
examples:
  tickwire serve --demo                      # a gateway with a simulated market on :8080
  tickwire tail book:BTC-USD                 # its BTC-USD book as a live ladder
  tickwire tail trades:BTC-USD --json --count 5
  tickwire keys create --kind secret --user alice
  TICKWIRE_SECRET=twsk_... tickwire token    # a token for that key
  TICKWIRE_TOKEN=$PUBLISH_TOKEN tickwire publish events.jsonl

`tickwire COMMAND --help` shows each command's options and examples. The client
commands read --url from TICKWIRE_URL and --token from TICKWIRE_TOKEN.
"""

SERVE_EPILOG = """\
Settings come from flags > environment (TICKWIRE_*) > config file > defaults
(docs/config.md).

examples:
  tickwire serve --demo
  tickwire serve --host 127.0.0.1 --port 8080 --engine redis://127.0.0.1:6379/0
  tickwire serve --engine redis://127.0.0.1:6379/0 --workers 4   # 4 processes, one port
  TICKWIRE_PUBLISH_TOKEN=... tickwire serve --config tickwire.toml
"""


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run a gateway node",
        description="Run a gateway node.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="TOML config file (also TICKWIRE_CONFIG)")
    p.add_argument("--host", help="listen address (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="listen port (default 8080)")
    p.add_argument(
        "--opcode-port", type=int, help="also serve the opcode dialect at / of this port"
    )
    p.add_argument(
        "--engine",
        help="'memory' (default), a redis:// URL, or several separated by spaces (shards)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="worker processes on the port (default 1; 0: one per CPU with a Redis engine, "
        "else 1; docs/scaling.md)",
    )
    # set by the supervisor of --workers for the processes it starts (not for people)
    p.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--demo", action="store_const", const=True, help="run the demo market")
    p.add_argument("--seed", type=int, help="demo market seed (deterministic)")
    p.add_argument("--demo-rate", type=float, help="demo market speed factor")
    p.add_argument("--history-size", type=int, help="publications kept per channel")
    p.add_argument("--history-ttl", type=float, help="seconds of history kept per channel")
    p.add_argument("--max-queue-bytes", type=int, help="per-client byte cap before 'slow'")
    p.add_argument("--heartbeat-interval", type=float, help="seconds between heartbeats")
    p.add_argument("--log-level", help="debug, info, warning, error")
    p.add_argument(
        "--amqp",
        metavar="URL",
        help="consume Peatio's events from RabbitMQ (amqp://user:pass@host:5672/vhost)",
    )
    p.add_argument(
        "--synthetic",
        metavar="SPEC",
        help="benchmark publisher, e.g. 'channel=trades:BENCH,rate=1000,batch=10,size=150'",
    )
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from tickwire.server.app import ListenError, serve
    from tickwire.server.config import ConfigError, load_config, worker_count
    from tickwire.server.supervisor import run_worker, supervise

    internal = ("func", "command", "config", "worker_of", "worker_index")
    flags = {k: v for k, v in vars(args).items() if k not in internal}
    try:
        if args.worker_of is not None:
            return run_worker(args.worker_of, args.worker_index)
        config = load_config(flags, file=args.config)
    except ConfigError as exc:
        print(f"tickwire: {exc}", file=sys.stderr)
        return 2
    try:
        workers = worker_count(config)
        if workers > 1:
            return supervise(config, workers)
        serve(config)
    except (ConfigError, ListenError) as exc:  # a bad engine URL, a port in use…
        print(f"tickwire: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickwire",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tickwire {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    import importlib

    for name in SUBCOMMANDS:
        module = importlib.import_module(name)
        add: Callable[[Any], None] = module.add_parser
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

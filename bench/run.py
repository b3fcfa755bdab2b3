"""tickwire's benchmark scenarios, each one command, tickwire and its peers side by side.

    python bench/run.py fanout      # (a) 1 channel, 1,000 subscribers, rate stepped up at
                                    #     1, 10 and 100 messages per tick (--per-tick)
    python bench/run.py channels    # (b) 10,000 connections, own channel + a shared one
    python bench/run.py idle        # (c) 10,000 idle connections: RSS per connection
    python bench/run.py book        # (d) 20 books, realistic rates, 2,000 subscribers
    python bench/run.py redis       # (e) fan-out through the Redis engine
    python bench/run.py all         # everything (``make bench``)
    python bench/run.py profile     # tickwire's fan-out under py-spy (PY_SPY=…)

Every server (tickwire and each peer) runs pinned to CPU 0 with the same synthetic
publisher spec; the load generator (``tickwire bench``) runs pinned to CPU 1. Each
fan-out step restarts the server so an overloaded step cannot slow the next. Results go
to bench/results/<scenario>-<time>.json and a Markdown table on stdout (docs/benchmarks.md).
Loopback only; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
RESULTS = ROOT / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
PEER_PY = PEERS / ".venv" / "bin" / "python"
SERVER_CPU = "0"
GENERATOR_CPU = "1"

#: A step holds when this share of the offered deliveries arrived ...
HELD_SHARE = 0.95
#: ... with p99 latency under this, and no connection was lost.
HELD_P99_MS = 50.0
#: Other agents share these cores. Before a measurement we wait (bounded) for the
#: machine to be this quiet (busy % of both cores together), and a measurement during
#: which more than FOREIGN_MAX % of the server's core went to other processes is
#: repeated (at most RETRIES times), keeping the least disturbed one.
QUIET_BUSY_PCT = 20.0
QUIET_WAIT_S = 30.0
FOREIGN_MAX = 15.0
RETRIES = 2


@dataclass(frozen=True)
class Server:
    """How to start one target with a synthetic spec on a port."""

    name: str
    dialect: str
    kind: str  # "tickwire", "python", "node"
    script: str = ""
    note: str = ""
    #: environment of its own (config fields as ``TICKWIRE_<FIELD>``)
    settings: tuple[tuple[str, str], ...] = ()

    def env(self) -> dict[str, str]:
        """Environment the server needs beyond ours (the opcode dialect: a user to log in)."""
        if self.dialect not in LOGIN_DIALECTS:
            return dict(self.settings)
        store, _ = bench_user()
        # every connection is the same user: room for all their nonces
        return {
            **dict(self.settings),
            "TICKWIRE_KEY_STORE": store,
            "TICKWIRE_NONCE_CACHE_PER_KEY": "1000000",
        }

    def generator_args(self) -> list[str]:
        if self.dialect not in LOGIN_DIALECTS:
            return []
        _, password = bench_user()
        return ["--login", f"{BENCH_USER}:{password}"]

    def command(self, port: int, spec: str, engine: str | None) -> list[str]:
        if self.kind == "tickwire":
            cmd = [
                str(VENV_BIN / "tickwire"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ]
            if spec:
                cmd += ["--synthetic", spec]
            if engine:
                cmd += ["--engine", engine]
            return cmd
        if self.kind == "python":
            cmd = [str(PEER_PY), str(PEERS / self.script)]
        else:
            cmd = ["node", str(PEERS / "node" / self.script)]
        return [*cmd, "--host", "127.0.0.1", "--port", str(port), "--synthetic", spec]


TARGETS: dict[str, Server] = {
    s.name: s
    for s in (
        Server("tickwire", "native", "tickwire"),
        Server("tickwire-eio4", "eio4", "tickwire", note="prophit dialect, Socket.IO"),
        Server("tickwire-opcode", "opcode", "tickwire", note="InstaMrkt opcodes, digest + logon"),
        Server("tickwire-ranger", "ranger", "tickwire", note="Peatio ranger dialect"),
        Server("tickwire-coinbase", "coinbase", "tickwire", note="Coinbase dialect"),
        Server(
            "tickwire-mixed",
            "mixed",
            "tickwire",
            note="the subscribers spread over all five dialects (i mod 5)",
        ),
        Server(
            "tickwire-nodelay",
            "native",
            "tickwire",
            note="native, write coalescing off (max_write_delay = 0)",
            settings=(("TICKWIRE_MAX_WRITE_DELAY", "0"),),
        ),
        Server("raw-floor", "native", "python", "raw_floor.py", "frame once, one write/iter"),
        Server("websockets", "native", "python", "websockets_peer.py", "broadcast()"),
        Server("python-socketio", "eio4", "python", "socketio_peer.py", "aiohttp, rooms"),
        Server("node-ws", "native", "node", "ws-server.js", "send loop"),
        Server("node-socketio", "eio4", "node", "socketio-server.js", "rooms"),
    )
}
#: ``tickwire-ranger``, ``tickwire-nodelay`` and ``tickwire-mixed`` run when asked for
#: (``--targets tickwire,tickwire-ranger``).
ASKED_FOR = ("tickwire-ranger", "tickwire-nodelay", "tickwire-mixed")
DEFAULT_TARGETS = [t for t in TARGETS if t not in ASKED_FOR]
#: Dialects whose generator logs in first (``POST /login``, the opcode digest).
LOGIN_DIALECTS = ("opcode", "mixed")


BENCH_USER = "bench"
_bench_user: tuple[str, str] | None = None


def bench_user() -> tuple[str, str]:
    """A key store (in a scratch directory) holding user ``bench`` with a password, made
    once per run: (store path, password)."""
    global _bench_user
    if _bench_user is None:
        scratch = Path(tempfile.mkdtemp(prefix="tickwire-bench-"))
        atexit.register(shutil.rmtree, scratch, True)
        store = str(scratch / "keys.sqlite3")
        password = secrets.token_urlsafe(16)
        subprocess.run(
            [str(VENV_BIN / "tickwire"), "keys", "create", "--kind", "password",
             "--user", BENCH_USER, "--password-stdin", "--store", store],
            input=password + "\n", text=True, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        _bench_user = (store, password)
    return _bench_user


def _raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port} within {timeout:g}s")


def pin(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if shutil.which("taskset") and os.cpu_count() != 1 else []


@contextlib.contextmanager
def running(
    server: Server,
    spec: str,
    log: Path,
    engine: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[int, int]]:
    """Start ``server`` pinned to the server CPU; yields (port, pid)."""
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*pin(SERVER_CPU), *server.command(port, spec, engine)],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_raise_nofile,
            # every load-generator connection comes from 127.0.0.1: no per-address cap
            env={
                **os.environ,
                "TICKWIRE_MAX_CONNECTIONS_PER_ADDRESS": "0",
                **server.env(),
                **(env or {}),
            },
        )
    try:
        wait_port(port, proc)
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_busy(interval: float = 0.5) -> float:
    """Busy % of all cores over ``interval`` seconds."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]
        return sum(values) - values[3] - values[4], sum(values)

    b0, t0 = sample()
    time.sleep(interval)
    b1, t1 = sample()
    return 100.0 * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


def wait_quiet() -> float:
    """Wait up to QUIET_WAIT_S for the machine to be quiet; returns the last busy %."""
    deadline = time.monotonic() + QUIET_WAIT_S
    busy = cpu_busy()
    while busy > QUIET_BUSY_PCT and time.monotonic() < deadline:
        busy = cpu_busy()
    if busy > QUIET_BUSY_PCT:
        say(f"   (machine still {busy:.0f}% busy with other work; measuring anyway)")
    return busy


def foreign_pct(result: dict[str, Any]) -> float | None:
    """% of the server's core used by neither the server nor interrupts (other agents)."""
    server = result.get("server", {})
    busy, cpu, irq = (
        server.get("cores_busy_pct"),
        server.get("cpu_pct"),
        server.get("cores_irq_pct"),
    )
    if busy is None or cpu is None or irq is None:
        return None
    return max(0.0, round(float(busy) - float(cpu) - float(irq), 1))


def measure(
    server: Server,
    spec: str,
    log: Path,
    *,
    engine: str | None = None,
    env: dict[str, str] | None = None,
    **gen: Any,
) -> dict[str, Any]:
    """Start the server, run the generator against it, stop the server; repeated when
    other work disturbed the server's core (see FOREIGN_MAX)."""
    best: dict[str, Any] | None = None
    for attempt in range(RETRIES + 1):
        quiet = wait_quiet()
        with running(server, spec, log, engine, env) as (port, pid):
            result = generate(server, port, pid, **gen)
        result["machine_busy_before_pct"] = round(quiet, 1)
        result["foreign_pct"] = foreign = foreign_pct(result)
        result["attempt"] = attempt + 1
        if best is None or (foreign or 0) < (best["foreign_pct"] or 0):
            best = result
        if foreign is None or foreign <= FOREIGN_MAX:
            break
        say(f"   (other work took {foreign:.0f}% of the server core; measuring again)")
    assert best is not None
    return best


def generate(
    server: Server,
    port: int,
    pid: int,
    *,
    connections: int,
    channels: list[str],
    warmup: float,
    duration: float,
    connect_timeout: float = 60.0,
) -> dict[str, Any]:
    """Run ``tickwire bench`` pinned to the generator CPU; returns its JSON result."""
    cmd = [
        *pin(GENERATOR_CPU),
        str(VENV_BIN / "tickwire"),
        "bench",
        "--url",
        f"ws://127.0.0.1:{port}",
        "--dialect",
        server.dialect,
        "-c",
        str(connections),
        "--workers",
        "1",
        "--warmup",
        str(warmup),
        "--duration",
        str(duration),
        "--connect-timeout",
        str(connect_timeout),
        "--server-pid",
        str(pid),
        "--json",
        "--quiet",
        *server.generator_args(),
    ]
    for ch in channels:
        cmd += ["--channel", ch]
    limit = connect_timeout + warmup + duration + 60
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
    if not done.stdout.strip():
        raise RuntimeError(f"generator failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def row(name: str, result: dict[str, Any], offered: float | None = None) -> dict[str, Any]:
    """The figures a table shows, from one generator result."""
    lat = result["latency"]
    server = result.get("server", {})
    out = {
        "target": name,
        "ready": result["ready"],
        "connections": result["connections"],
        "lost": result["lost"],
        "close_codes": result["close_codes"],
        "deliveries_per_s": result["deliveries_per_s"],
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "max_ms": lat["max_ms"],
        "server_cpu_pct": server.get("cpu_pct"),
        "server_core_busy_pct": server.get("cores_busy_pct"),
        "server_core_irq_pct": server.get("cores_irq_pct"),
        "server_rss_mb": server.get("rss_mb"),
        "rss_per_conn_kb": server.get("rss_per_conn_kb"),
        "generator_cpu_pct": max(result.get("generator_cpu_pct") or [0]),
        "generator_us_per_read": result.get("generator_us_per_read"),
        "foreign_pct": result.get("foreign_pct"),
        "attempt": result.get("attempt"),
    }
    if offered is not None:
        out["offered_per_s"] = offered
        out["held"] = held(result, offered)
    return out


def held(result: dict[str, Any], offered: float) -> bool:
    p99 = result["latency"]["p99_ms"]
    return (
        result["ready"] == result["connections"]
        and result["lost"] == 0
        and result["deliveries_per_s"] >= HELD_SHARE * offered
        and p99 is not None
        and p99 < HELD_P99_MS
    )


@dataclass
class Report:
    scenario: str
    params: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    steps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def fmt(v: Any, spec: str = ",.0f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float | int):
        return format(v, spec)
    return str(v)


def sweep_markdown(report: Report) -> str:
    """A fan-out sweep: per messages-per-tick and target, the held and most delivered
    rates beside their ratios to the raw floor, then every step."""
    p = report.params
    probe = p.get("write_syscall") or {}
    lines = [
        f"### {report.scenario} ({p.get('date', '?')}, {p['subscribers']:,} subscribers, "
        f"{p['size']}-byte messages, engine {p['engine']})",
        "",
        f"Write syscall on this machine: {fmt(probe.get('ns_per_write'))} ns per "
        f"{fmt(probe.get('bytes'))}-byte send() on loopback TCP to a reader waiting in "
        f"epoll ({fmt(probe.get('connections'))} sockets round-robin, median of "
        f"{fmt(probe.get('rounds'))} rounds; server CPU 0, reader CPU 1). Ratios are to "
        f"`{FLOOR}` at the same messages per tick in this run.",
        "",
        "| msgs/tick | target | held (p99<50ms) | vs floor | p99 at held | most delivered/s "
        "| vs floor | p50/p99 ms at most | CPU ns/delivery at most | other load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.rows:
        held = fmt(r["held_per_s"]) if r["held_per_s"] else "none"
        ratios = [
            "-" if r[k] is None else f"{r[k]:.2f}x"
            for k in ("held_per_s_vs_floor", "most_per_s_vs_floor")
        ]
        lines.append(
            f"| {r['per_tick']} | {r['target']} | {held} | {ratios[0]} "
            f"| {fmt(r['held_p99_ms'], '.1f')} | {fmt(r['most_per_s'])} "
            f"| {ratios[1]} "
            f"| {fmt(r['p50_ms'], '.1f')}/{fmt(r['p99_ms'], '.1f')} "
            f"| {fmt(r['cpu_ns_per_delivery'], ',.0f')} | {fmt(r['foreign_pct'], '.0f')}% |"
        )
    for name, err in report.errors.items():
        lines.append(f"| - | {name} | failed: {err[:80]} | | | | | | | |")
    bounds = [
        f"{r['target']} @ {r['per_tick']}/tick (generator "
        f"{fmt(r.get('generator_cpu_at_last_pct'), '.0f')}% busy)"
        for r in report.rows
        if r.get("held_last_step")
    ]
    if bounds:
        lines.append(
            "\nHeld at the sweep's last step, so its held rate is a lower bound: "
            + ", ".join(bounds)
            + "."
        )
    for k, mix in report.params.get("mixed_vs_native", {}).items():
        held = "-" if mix["held"] is None else f"{100 * mix['held']:.0f}%"
        lines.append(
            f"\nmixed vs native-only at {k}/tick, this run: {100 * mix['most']:.0f}% "
            f"most delivered, {held} held (target: at least 80%)"
        )
    for name, steps in report.steps.items():
        lines += ["", f"{name} steps (offered → delivered/s, p50/p99 ms, server CPU, "
                  "other load, held):", ""]  # fmt: skip
        for st in steps:
            lines.append(
                f"- {fmt(st['offered_per_s'])} → {fmt(st['deliveries_per_s'])}, "
                f"{fmt(st['p50_ms'], '.1f')}/{fmt(st['p99_ms'], '.1f')} ms, "
                f"{fmt(st['server_cpu_pct'], '.0f')}%, {fmt(st['foreign_pct'], '.0f')}%, "
                f"{'held' if st['held'] else 'NOT held'}"
            )
    return "\n".join(lines)


def markdown(report: Report) -> str:
    if "per_tick" in report.params:
        return sweep_markdown(report)
    lines = [f"### {report.scenario}", ""]
    probe = report.params.get("write_syscall") or {}
    if probe.get("ns_per_write"):
        lines += [
            f"Write syscall on this machine, this run: {fmt(probe['ns_per_write'])} ns per "
            f"{fmt(probe.get('bytes'))}-byte send(); one write to each of "
            f"{fmt(report.params.get('connections'))} subscribers takes "
            f"{fmt(report.params.get('shared_burst_ms'), '.1f')} ms.",
            "",
        ]
    per_read = [r["generator_us_per_read"] for r in report.rows if r.get("generator_us_per_read")]
    if per_read and report.params.get("connections"):
        n = report.params["connections"]
        lines += [
            f"The load generator (one core) spent {fmt(min(per_read), '.1f')} to "
            f"{fmt(max(per_read), '.1f')} µs of CPU per read in this run, so reading one "
            f"write from each of {fmt(n)} connections takes it at least "
            f"{fmt(n * min(per_read) / 1000, '.1f')} ms: latencies of a burst to all of "
            "them measure the generator as much as the server.",
            "",
        ]
    lines.append(
        "| target | deliveries/s | p50 ms | p99 ms | server CPU | core busy (irq) "
        "| other load | RSS/conn KB | gen µs/read | notes |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in report.rows:
        notes = r.get("notes", "")
        lines.append(
            f"| {r['target']} | {fmt(r['deliveries_per_s'])} | {fmt(r['p50_ms'], '.1f')} "
            f"| {fmt(r['p99_ms'], '.1f')} | {fmt(r['server_cpu_pct'], '.0f')}% "
            f"| {fmt(r['server_core_busy_pct'], '.0f')}% ({fmt(r['server_core_irq_pct'], '.0f')}%) "
            f"| {fmt(r['foreign_pct'], '.0f')}% "
            f"| {fmt(r['rss_per_conn_kb'], '.1f')} | {fmt(r.get('generator_us_per_read'), '.1f')} "
            f"| {notes} |"
        )
    for name, err in report.errors.items():
        lines.append(f"| {name} | - | - | - | - | - | - | - | - | failed: {err[:80]} |")
    for name, steps in report.steps.items():
        lines.append("")
        lines.append(
            f"{name} steps (offered → delivered/s, p50/p99 ms, server CPU, other load, held):"
        )
        lines.append("")
        for s in steps:
            lines.append(
                f"- {fmt(s['offered_per_s'])} → {fmt(s['deliveries_per_s'])}, "
                f"{fmt(s['p50_ms'], '.1f')}/{fmt(s['p99_ms'], '.1f')} ms, "
                f"{fmt(s['server_cpu_pct'], '.0f')}%, {fmt(s['foreign_pct'], '.0f')}%, "
                f"{'held' if s['held'] else 'NOT held'}"
            )
    return "\n".join(lines)


def save(report: Report) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{report.scenario}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report.__dict__, indent=2))
    return path


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- scenarios -------------------------------------------------------------------------

FANOUT_SUBSCRIBERS = 1000
#: Messages per publisher tick the fan-out runs at, each a sweep of its own: 1 (every
#: delivery a write of its own unless the server coalesces), 10 and 100 (the regime
#: where frames share writes). ``--per-tick`` overrides.
FANOUT_PER_TICK = [1, 10, 100]
#: deliveries/s offered at each messages-per-tick, in order; a target stops after two
#: steps in a row it cannot deliver (``--steps`` replaces every list)
FANOUT_STEPS: dict[int, list[int]] = {
    1: [25_000, 50_000, 100_000, 150_000, 200_000, 300_000, 400_000, 600_000, 800_000],
    10: [50_000, 100_000, 250_000, 500_000, 1_000_000, 1_250_000, 1_500_000, 2_000_000, 3_000_000],
    100: [500_000, 1_000_000, 2_000_000, 3_000_000, 4_000_000, 5_000_000],
}
#: A target that still holds the last listed step goes on, each step ``EXTEND_FACTOR``
#: times the one before, at most ``EXTEND_MAX`` more, until it is not held or the load
#: generator is ``GENERATOR_BOUND_PCT`` busy (beyond that it measures itself). Off when
#: ``--steps`` names the steps.
EXTEND_FACTOR = 1.5
EXTEND_MAX = 4
GENERATOR_BOUND_PCT = 90.0
EXTEND = True
#: The target every fan-out result is a ratio to (added to the run when not named).
FLOOR = "raw-floor"


def steps_for(per_tick: int) -> list[int]:
    """The offered rates of the sweep at ``per_tick`` messages per tick."""
    if per_tick in FANOUT_STEPS:
        return FANOUT_STEPS[per_tick]
    return sorted({r * per_tick // 10 for r in FANOUT_STEPS[10]})


def fanout(
    targets: list[str],
    quick: bool,
    engine: str | None = None,
    name: str = "fanout",
    per_tick: list[int] | None = None,
) -> Report:
    """(a) 1 channel, 1,000 subscribers, 150-byte messages, at each messages-per-tick
    (1, 10, 100): the offered rate goes up step by step (ticks of ``per_tick`` messages,
    rate / per_tick ticks per second) until the server twice in a row does not deliver
    95% of it (saturation). Reported per target and messages-per-tick: the highest step
    held with p99 under 50 ms, the most delivered, each beside its ratio to the raw
    floor's in the same run, and the server's CPU per delivery at the most delivered."""
    warmup, duration = (1.0, 2.0) if quick else (1.5, 3.0)
    ks = per_tick or FANOUT_PER_TICK
    report = Report(
        name,
        {
            "subscribers": FANOUT_SUBSCRIBERS,
            "per_tick": ks,
            "size": 150,
            "warmup_s": warmup,
            "measure_s": duration,
            "engine": engine or "memory",
            "write_syscall": write_cost(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
    )
    for k in ks:
        for t in targets:  # targets interleaved per messages-per-tick: same conditions
            steps = sweep(report, name, t, k, engine, warmup, duration)
            report.steps[f"{t} @ {k}/tick"] = steps
            if steps:
                report.rows.append(fanout_summary(t, k, steps))
    add_ratios(report.rows)
    note_mixed_ratio(report)
    return report


def note_mixed_ratio(report: Report) -> None:
    """Per messages per tick, the mixed run's most delivered and held rates as shares of
    the native-only run's in this run (issue 18's target: at least 80%), in the mixed
    row's notes and the params (``mixed_vs_native``: per tick -> the two ratios)."""
    native = {r["per_tick"]: r for r in report.rows if r["target"] == "tickwire"}
    ratios: dict[str, Any] = {}
    for mixed in (r for r in report.rows if r["target"] == "tickwire-mixed"):
        base = native.get(mixed["per_tick"])
        if base is None or not base["deliveries_per_s"]:
            continue
        most = mixed["deliveries_per_s"] / base["deliveries_per_s"]
        held = mixed["held_per_s"] / base["held_per_s"] if base["held_per_s"] else None
        ratios[str(mixed["per_tick"])] = {
            "most": round(most, 3),
            "held": None if held is None else round(held, 3),
        }
        shown = "-" if held is None else f"{100 * held:.0f}%"
        mixed["notes"] += f"; vs native-only: {100 * most:.0f}% most delivered, {shown} held"
    if ratios:
        report.params["mixed_vs_native"] = ratios


def sweep(
    report: Report,
    name: str,
    target: str,
    per_tick: int,
    engine: str | None,
    warmup: float,
    duration: float,
) -> list[dict[str, Any]]:
    """One target's steps at ``per_tick`` messages per tick, up to saturation."""
    server = TARGETS[target]
    steps: list[dict[str, Any]] = []
    misses = False
    listed = steps_for(per_tick)
    while (offered := next_step(listed, steps)) is not None:
        rate = offered / FANOUT_SUBSCRIBERS
        spec = f"channel=trades:BENCH,rate={rate:g},batch={per_tick},size=150"
        say(f"[{name}] {target} @ {per_tick}/tick: offering {offered:,} deliveries/s")
        try:
            result = measure(
                server,
                spec,
                log_path(name, target),
                engine=engine,
                connections=FANOUT_SUBSCRIBERS,
                channels=["trades:BENCH"],
                warmup=warmup,
                duration=duration,
            )
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            report.errors[f"{target} @ {per_tick}/tick"] = str(exc)
            break
        r = row(target, result, offered)
        r["per_tick"] = per_tick
        steps.append(r)
        say(
            f"   → {r['deliveries_per_s']:,.0f}/s p50 {r['p50_ms']} p99 {r['p99_ms']} ms "
            f"cpu {r['server_cpu_pct']}% core {r['server_core_busy_pct']}% "
            f"gen {r['generator_cpu_pct']}% ({fmt(r['generator_us_per_read'], '.1f')} µs/read) "
            f"other {r['foreign_pct']}% {'held' if r['held'] else 'NOT held'}"
        )
        short = r["deliveries_per_s"] < HELD_SHARE * offered
        if r["ready"] < FANOUT_SUBSCRIBERS or (short and misses):
            break  # two steps in a row not delivered: saturated (one may be noise)
        misses = short
    return steps


def next_step(listed: list[int], steps: list[dict[str, Any]]) -> int | None:
    """The offered rate of the sweep's next step after ``steps``: the next listed one,
    then (:data:`EXTEND`) ``EXTEND_FACTOR`` times the last while it was held with the
    generator under :data:`GENERATOR_BOUND_PCT`, at most :data:`EXTEND_MAX` of them
    (two significant digits); None when the sweep is over."""
    if len(steps) < len(listed):
        return listed[len(steps)]
    last = steps[-1] if steps else None
    if (
        not EXTEND
        or last is None
        or len(steps) >= len(listed) + EXTEND_MAX
        or not last["held"]
        or (last.get("generator_cpu_pct") or 0.0) >= GENERATOR_BOUND_PCT
    ):
        return None
    return int(float(f"{last['offered_per_s'] * EXTEND_FACTOR:.2g}"))


def cpu_ns_per_delivery(step: dict[str, Any]) -> float | None:
    """The server process's CPU time per delivery in a step (ns)."""
    cpu, rate = step.get("server_cpu_pct"), step.get("deliveries_per_s")
    if cpu is None or not rate:
        return None
    return float(cpu) / 100.0 / float(rate) * 1e9


def fanout_summary(target: str, per_tick: int, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row: the most delivered step, with the highest step held."""
    top = max(steps, key=lambda s: s["deliveries_per_s"])
    held_steps = [s for s in steps if s["held"]]
    out = dict(top)
    out["per_tick"] = per_tick
    best = max(held_steps, key=lambda s: s["offered_per_s"], default=None)
    out["held_per_s"] = best["offered_per_s"] if best else 0
    out["held_p99_ms"] = best["p99_ms"] if best else None
    out["most_per_s"] = top["deliveries_per_s"]
    out["cpu_ns_per_delivery"] = cpu_ns_per_delivery(top)
    held = fmt(out["held_per_s"]) if held_steps else "none"
    out["notes"] = f"held (p99<50ms): {held}"
    last = steps[-1]
    # held at the sweep's end: the server's limit is higher (a lower bound)
    out["held_last_step"] = bool(last["held"])
    out["generator_cpu_at_last_pct"] = last.get("generator_cpu_pct")
    return out


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's held and most-delivered rates as ratios to the raw floor's at the same
    messages per tick (None when the floor did not run or held nothing)."""
    floors = {r["per_tick"]: r for r in rows if r["target"] == FLOOR}
    for r in rows:
        floor = floors.get(r["per_tick"])
        for key in ("held_per_s", "most_per_s"):
            base = floor.get(key) if floor else None
            r[f"{key}_vs_floor"] = r[key] / base if base else None


def write_cost() -> dict[str, Any]:
    """The machine's write-syscall cost, measured now on the server's CPU (a probe in a
    process of its own, pinned like the servers)."""
    done = subprocess.run(
        [*pin(SERVER_CPU), sys.executable, str(Path(__file__).resolve()), "--write-probe"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        probe: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        return {"error": done.stderr[-500:]}
    return probe


#: The probe's reader: connects N sockets to the port, reads them all until EOF.
_PROBE_READER = """
import selectors, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
sel = selectors.DefaultSelector()
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
open_ = n
while open_:
    for key, _ in sel.select():
        if not key.fileobj.recv(1 << 16):
            sel.unregister(key.fileobj)
            open_ -= 1
"""


def write_probe(
    connections: int = 100, rounds: int = 9, sends: int = 2000, size: int = 240
) -> dict[str, Any]:
    """ns per ``send()`` of one ``size``-byte frame on loopback TCP to a reader that
    waits in epoll (a process of its own on the generator's CPU), round-robin over
    ``connections`` sockets as a fan-out writes: the median of ``rounds`` rounds of
    ``sends`` sends, after one round of warm-up."""
    frame = bytes((0x81, 126)) + (size - 4).to_bytes(2, "big") + b"x" * (size - 4)
    per_send: list[float] = []
    with socket.create_server(("127.0.0.1", 0), backlog=connections) as srv:
        port = srv.getsockname()[1]
        reader = subprocess.Popen(
            [*pin(GENERATOR_CPU), sys.executable, "-c", _PROBE_READER, str(port), str(connections)]
        )
        socks = [srv.accept()[0] for _ in range(connections)]
        try:
            for sock in socks:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(rounds + 1):
                t0 = time.perf_counter_ns()
                for i in range(sends):
                    socks[i % connections].send(frame)
                per_send.append((time.perf_counter_ns() - t0) / sends)
        finally:
            for sock in socks:
                sock.close()
            reader.wait(30)
    timed = sorted(per_send[1:])
    return {
        "ns_per_write": round(timed[len(timed) // 2]),
        "bytes": size,
        "rounds": rounds,
        "connections": connections,
    }


def single(
    name: str,
    targets: list[str],
    *,
    spec: str,
    connections: int,
    channels: list[str],
    offered: float | None,
    warmup: float,
    duration: float,
    env: dict[str, str] | None = None,
) -> Report:
    report = Report(
        name,
        {
            "spec": spec,
            "connections": connections,
            "channels": channels,
            "offered_per_s": offered,
            "warmup_s": warmup,
            "measure_s": duration,
        },
    )
    for t in targets:
        server = TARGETS[t]
        say(f"[{name}] {t}: {connections:,} connections")
        try:
            result = measure(
                server,
                spec,
                log_path(name, t),
                env=env,
                connections=connections,
                channels=channels,
                warmup=warmup,
                duration=duration,
                connect_timeout=120.0,
            )
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            report.errors[t] = str(exc)
            continue
        r = row(t, result, offered)
        notes = [f"{r['ready']:,}/{connections:,} ready"]
        if offered:
            notes.append(f"offered {offered:,.0f}/s")
        if r["lost"]:
            notes.append(f"lost {r['lost']} {r['close_codes']}")
        r["notes"] = ", ".join(notes)
        say(f"   → {r['deliveries_per_s']:,.0f}/s p99 {r['p99_ms']} ms, {r['notes']}")
        report.rows.append(r)
    return report


def channels_scenario(targets: list[str], quick: bool) -> Report:
    """(b) 10,000 connections, each on a channel of its own (2 msg/s) and one shared
    channel (5 msg/s): 20k + 50k deliveries/s offered. (At 20 msg/s on the shared
    channel, 200k writes/s, every server here saturates: a first run gave tickwire
    114k/s and the raw floor 100k/s of 220k offered.)"""
    n = 2_000 if quick else 10_000
    spec = (
        f"channel=trades:P{{i}},count={n},rate={2 * n},batch={n // 50},size=150;"
        "channel=trades:SHARED,rate=5,batch=1,size=150"
    )
    probe = write_cost()
    report = single(
        "channels",
        targets,
        spec=spec,
        connections=n,
        channels=["trades:P{conn}", "trades:SHARED"],
        offered=2.0 * n + 5.0 * n,
        warmup=2.0,
        duration=3.0 if quick else 5.0,
    )
    report.params["write_syscall"] = probe
    ns = probe.get("ns_per_write")
    if ns:
        # the floor of any server writing once per subscriber: a shared publication
        # reaches its last subscriber after n writes (the p99 of all deliveries, 5/7 of
        # which are the shared channel's, is about its subscribers' p98.6)
        report.params["shared_burst_ms"] = round(n * ns / 1e6, 1)
    return report


def idle_scenario(targets: list[str], quick: bool) -> Report:
    """(c) 10,000 connections, one subscription each, nothing published: RSS growth from
    before the first connection to all subscribed, per connection."""
    n = 2_000 if quick else 10_000
    return single(
        "idle",
        targets,
        spec="",
        connections=n,
        channels=["trades:IDLE-USD"],
        offered=None,
        warmup=1.0,
        duration=2.0,
        # a market name the config accepts without a definition (BASE-QUOTE)
        env={"TICKWIRE_MARKETS": "IDLE-USD"},
    )


BOOK_MARKETS = 20
BOOK_SUBSCRIBERS = 2_000


def book_rates() -> list[float]:
    """Updates per second by market rank k: 100/(k+1), so 100/s for the busiest book
    (ten times a 100 ms depth stream), 50/s for the next, 5/s for the 20th: ~360
    updates/s over 20 markets, each published on its own as it happens."""
    return [round(100.0 / (k + 1), 2) for k in range(BOOK_MARKETS)]


def book_scenario(targets: list[str], quick: bool) -> Report:
    """(d) 20 books, one update (~200 bytes) at a time at the rates above, 2,000
    subscribers spread Zipf-like (the busiest book has the most subscribers)."""
    spec = ";".join(
        f"channel=book:M{k},rate={rate:g},batch=1,size=200" for k, rate in enumerate(book_rates())
    )
    # expected deliveries: subscribers of each market x its rate (same seed as the generator)
    sys.path.insert(0, str(ROOT / "src"))
    from tickwire.client.bench.config import channels_for

    counts = [0] * BOOK_MARKETS
    for i in range(BOOK_SUBSCRIBERS):
        counts[int(channels_for(("book:M{zipf:20}",), i, 1)[0][6:])] += 1
    offered = sum(c * r for c, r in zip(counts, book_rates(), strict=True))
    return single(
        "book",
        targets,
        spec=spec,
        connections=BOOK_SUBSCRIBERS,
        channels=["book:M{zipf:20}"],
        offered=offered,
        warmup=2.0,
        duration=3.0 if quick else 6.0,
    )


def redis_scenario(targets: list[str], quick: bool) -> Report:
    """(e) fan-out (a) with tickwire on the Redis engine (peers have no equivalent)."""
    prefix = f"twbench{os.getpid()}"
    engine = f"redis://127.0.0.1:6379/0?prefix={prefix}"
    try:
        return fanout(["tickwire", FLOOR], quick, engine=engine, name="redis")
    finally:
        cleanup_redis(prefix)


def cleanup_redis(prefix: str) -> None:
    """Delete only this run's keys."""
    if not shutil.which("redis-cli"):
        return
    keys = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "--scan", "--pattern", f"{prefix}*"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    for i in range(0, len(keys), 500):
        subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "unlink", *keys[i : i + 500]],
            capture_output=True,
            check=False,
        )


def profile_scenario(targets: list[str], quick: bool, offered: int = 900_000) -> Report:
    """tickwire under the fan-out load at ``offered`` deliveries/s, sampled by py-spy
    (``PY_SPY`` or ``py-spy`` on PATH; install it in a throwaway venv, it is no project
    dependency). Writes the raw stacks and a self/inclusive summary to bench/results/."""
    spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    report = Report("profile", {"offered_per_s": offered, "py_spy": spy})
    if not spy:
        report.errors["tickwire"] = "py-spy not found (set PY_SPY)"
        return report
    server = TARGETS["tickwire"]
    rate = offered / FANOUT_SUBSCRIBERS
    spec = f"channel=trades:BENCH,rate={rate:g},batch={max(1, round(rate / 100))},size=150"
    raw = RESULTS / f"profile-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    with running(server, spec, log_path("profile", "tickwire")) as (port, pid):
        spy_proc = subprocess.Popen(
            [spy, "record", "-p", str(pid), "-d", "8", "-r", "250", "-f", "raw", "-o", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        result = generate(
            server,
            port,
            pid,
            connections=FANOUT_SUBSCRIBERS,
            channels=["trades:BENCH"],
            warmup=2.0,
            duration=8.0,
        )
        spy_proc.wait(30)
    report.rows.append(row("tickwire", result, offered))
    if raw.exists():
        summary = summarize_profile(raw)
        report.params["profile"] = summary
        say("\n".join(summary))
    return report


def summarize_profile(path: Path, top: int = 20) -> list[str]:
    """Self and inclusive shares of the functions in a py-spy raw (collapsed) profile."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    if not total:
        return []
    out = [f"samples: {total}", "self:"]
    out += [
        f"  {100 * n / total:5.1f}% {f}" for f, n in sorted(own.items(), key=lambda x: -x[1])[:top]
    ]
    out.append("inclusive:")
    out += [
        f"  {100 * n / total:5.1f}% {f}" for f, n in sorted(incl.items(), key=lambda x: -x[1])[:top]
    ]
    return out


def log_path(scenario: str, target: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / f"{scenario}-{target}.log"


SCENARIOS = {
    "fanout": fanout,
    "channels": channels_scenario,
    "idle": idle_scenario,
    "book": book_scenario,
    "redis": redis_scenario,
}
#: Run only when named (not part of ``all``).
EXTRA = {"profile": profile_scenario}


def install_peers(targets: list[str]) -> list[str]:
    """Install the peers (idempotent); drop targets that cannot run here."""
    subprocess.run(["bash", str(PEERS / "install.sh")], check=True)
    ok = []
    for t in targets:
        kind = TARGETS[t].kind
        if kind == "python" and not PEER_PY.exists():
            say(f"skipping {t}: bench/peers/.venv missing")
        elif kind == "node" and not (PEERS / "node" / "node_modules").exists():
            say(f"skipping {t}: node_modules missing (no npm?)")
        else:
            ok.append(t)
    return ok


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # SIGTERM unwinds like Ctrl-C, so the servers started here are stopped
    signal.signal(signal.SIGTERM, _interrupt)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("scenario", nargs="?", default="all", choices=[*SCENARIOS, *EXTRA, "all"])
    ap.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help="comma-separated, from: " + ", ".join(TARGETS),
    )
    ap.add_argument("--quick", action="store_true", help="shorter windows, fewer connections")
    ap.add_argument(
        "--steps",
        default="",
        help="fanout: only these offered rates at every messages-per-tick, e.g. "
        "500000,1000000,2000000 (default: a list per messages-per-tick, extended while "
        "the last step is held)",
    )
    ap.add_argument(
        "--per-tick",
        default=",".join(str(k) for k in FANOUT_PER_TICK),
        help="fanout: the messages per publisher tick to sweep at (default: 1,10,100)",
    )
    ap.add_argument("--write-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.write_probe:  # run pinned by write_cost(): the machine's write-syscall cost
        print(json.dumps(write_probe()))
        return 0
    try:
        FANOUT_PER_TICK[:] = [int(k) for k in args.per_tick.split(",") if k.strip()]
    except ValueError:
        ap.error(f"--per-tick: not a list of counts: {args.per_tick!r}")
    if not FANOUT_PER_TICK or min(FANOUT_PER_TICK) < 1:
        ap.error(f"--per-tick: expected counts >= 1, got {args.per_tick!r}")
    if args.steps:
        try:
            rates = sorted(int(s) for s in args.steps.split(",") if s.strip())
        except ValueError:
            ap.error(f"--steps: not a list of rates: {args.steps!r}")
        for k in FANOUT_PER_TICK:
            FANOUT_STEPS[k] = rates
        global EXTEND
        EXTEND = False  # the steps asked for, no more
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        ap.error(f"--targets: unknown {', '.join(unknown)}")
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    if {"fanout", "redis"} & set(names) and FLOOR not in targets:
        targets.append(FLOOR)  # every fan-out figure is a ratio to it
    targets = install_peers(targets)
    for name in names:
        report = {**SCENARIOS, **EXTRA}[name](targets, args.quick)
        path = save(report)
        print(markdown(report))
        print(f"\n(results: {path.relative_to(ROOT)})\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""tickwire's benchmark scenarios, each one command, tickwire and its peers side by side.

    python bench/run.py fanout      # (a) 1 channel, 1,000 subscribers, rate stepped up
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

    def env(self) -> dict[str, str]:
        """Environment the server needs beyond ours (the opcode dialect: a user to log in)."""
        if self.dialect != "opcode":
            return {}
        store, _ = bench_user()
        # every connection is the same user: room for all their nonces
        return {"TICKWIRE_KEY_STORE": store, "TICKWIRE_NONCE_CACHE_PER_KEY": "1000000"}

    def generator_args(self) -> list[str]:
        if self.dialect != "opcode":
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
        Server("raw-floor", "native", "python", "raw_floor.py", "frame once, one write/iter"),
        Server("websockets", "native", "python", "websockets_peer.py", "broadcast()"),
        Server("python-socketio", "eio4", "python", "socketio_peer.py", "aiohttp, rooms"),
        Server("node-ws", "native", "node", "ws-server.js", "send loop"),
        Server("node-socketio", "eio4", "node", "socketio-server.js", "rooms"),
    )
}
#: ``tickwire-ranger`` runs when asked for (``--targets tickwire,tickwire-ranger``).
DEFAULT_TARGETS = [t for t in TARGETS if t != "tickwire-ranger"]


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


def markdown(report: Report) -> str:
    lines = [f"### {report.scenario}", ""]
    lines.append(
        "| target | deliveries/s | p50 ms | p99 ms | server CPU | core busy (irq) "
        "| other load | RSS/conn KB | notes |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in report.rows:
        notes = r.get("notes", "")
        lines.append(
            f"| {r['target']} | {fmt(r['deliveries_per_s'])} | {fmt(r['p50_ms'], '.1f')} "
            f"| {fmt(r['p99_ms'], '.1f')} | {fmt(r['server_cpu_pct'], '.0f')}% "
            f"| {fmt(r['server_core_busy_pct'], '.0f')}% ({fmt(r['server_core_irq_pct'], '.0f')}%) "
            f"| {fmt(r['foreign_pct'], '.0f')}% "
            f"| {fmt(r['rss_per_conn_kb'], '.1f')} | {notes} |"
        )
    for name, err in report.errors.items():
        lines.append(f"| {name} | - | - | - | - | - | - | - | failed: {err[:80]} |")
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
#: Publisher ticks per second in the fan-out: the batch is rate / FANOUT_TICK_HZ
#: messages (at least 1), so 1M deliveries/s to 1,000 subscribers is 10 per tick, as in
#: the performance model, and lower rates are not artificially bursty.
FANOUT_TICK_HZ = 100
#: deliveries/s offered, in order; a target stops at the first step it cannot deliver
FANOUT_STEPS = [
    10_000,
    25_000,
    50_000,
    100_000,
    200_000,
    300_000,
    400_000,
    500_000,
    600_000,
    700_000,
    800_000,
    900_000,
    1_000_000,
    1_200_000,
    1_400_000,
    1_700_000,
    2_000_000,
    2_500_000,
    3_000_000,
]


def fanout(
    targets: list[str],
    quick: bool,
    engine: str | None = None,
    name: str = "fanout",
    batch: int = 0,
) -> Report:
    """(a) 1 channel, 1,000 subscribers, 150-byte messages, ``batch`` per tick (0: one
    tick every 10 ms). The offered rate goes up step by step until the server twice in
    a row does not deliver 95% of it (saturation). Reported: the most it delivered
    (throughput) and the highest step held with p99 under 50 ms (latency-bound rate)."""
    warmup, duration = (1.0, 2.0) if quick else (1.5, 3.0)
    report = Report(
        name,
        {
            "subscribers": FANOUT_SUBSCRIBERS,
            "batch": batch or f"rate/{FANOUT_TICK_HZ} (at least 1)",
            "size": 150,
            "warmup_s": warmup,
            "measure_s": duration,
            "engine": engine or "memory",
        },
    )
    for t in targets:
        server = TARGETS[t]
        steps: list[dict[str, Any]] = []
        misses = False
        for offered in FANOUT_STEPS:
            rate = offered / FANOUT_SUBSCRIBERS
            k = batch or max(1, round(rate / FANOUT_TICK_HZ))
            spec = f"channel=trades:BENCH,rate={rate:g},batch={k},size=150"
            say(f"[{name}] {t}: offering {offered:,} deliveries/s")
            try:
                result = measure(
                    server,
                    spec,
                    log_path(name, t),
                    engine=engine,
                    connections=FANOUT_SUBSCRIBERS,
                    channels=["trades:BENCH"],
                    warmup=warmup,
                    duration=duration,
                )
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                report.errors[t] = str(exc)
                break
            r = row(t, result, offered)
            steps.append(r)
            say(
                f"   → {r['deliveries_per_s']:,.0f}/s p50 {r['p50_ms']} p99 {r['p99_ms']} ms "
                f"cpu {r['server_cpu_pct']}% core {r['server_core_busy_pct']}% "
                f"gen {r['generator_cpu_pct']}% other {r['foreign_pct']}% "
                f"{'held' if r['held'] else 'NOT held'}"
            )
            short = r["deliveries_per_s"] < HELD_SHARE * offered
            if r["ready"] < FANOUT_SUBSCRIBERS or (short and misses):
                break  # two steps in a row not delivered: saturated (one may be noise)
            misses = short
        report.steps[t] = steps
        if steps:
            report.rows.append(fanout_summary(t, steps))
    return report


def fanout_summary(target: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row: the best throughput step, with the held rate and 100k latency."""
    top = max(steps, key=lambda s: s["deliveries_per_s"])
    held_steps = [s for s in steps if s["held"]]
    at_100k = next((s for s in steps if s["offered_per_s"] == 100_000), None)
    out = dict(top)
    out["held_per_s"] = max((s["offered_per_s"] for s in held_steps), default=0)
    out["p99_at_100k_ms"] = at_100k["p99_ms"] if at_100k else None
    latency = "-"
    if at_100k:
        latency = f"{fmt(at_100k['p50_ms'], '.1f')}/{fmt(at_100k['p99_ms'], '.1f')} ms"
    held = fmt(out["held_per_s"]) if held_steps else "none"
    out["notes"] = f"held (p99<50ms): {held}; p50/p99 at 100k: {latency}"
    return out


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
    return single(
        "channels",
        targets,
        spec=spec,
        connections=n,
        channels=["trades:P{conn}", "trades:SHARED"],
        offered=2.0 * n + 5.0 * n,
        warmup=2.0,
        duration=3.0 if quick else 5.0,
    )


def idle_scenario(targets: list[str], quick: bool) -> Report:
    """(c) 10,000 connections, one subscription each, nothing published: RSS growth from
    before the first connection to all subscribed, per connection."""
    n = 2_000 if quick else 10_000
    return single(
        "idle",
        targets,
        spec="",
        connections=n,
        channels=["trades:IDLE"],
        offered=None,
        warmup=1.0,
        duration=2.0,
        env={"TICKWIRE_MARKETS": "IDLE"},
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
        return fanout(["tickwire"], quick, engine=engine, name="redis")
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
        help="fanout: only these offered rates, e.g. 500000,1000000,2000000 (default: all)",
    )
    args = ap.parse_args(argv)
    if args.steps:
        try:
            FANOUT_STEPS[:] = sorted(int(s) for s in args.steps.split(",") if s.strip())
        except ValueError:
            ap.error(f"--steps: not a list of rates: {args.steps!r}")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        ap.error(f"--targets: unknown {', '.join(unknown)}")
    targets = install_peers(targets)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    for name in names:
        report = {**SCENARIOS, **EXTRA}[name](targets, args.quick)
        path = save(report)
        print(markdown(report))
        print(f"\n(results: {path.relative_to(ROOT)})\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

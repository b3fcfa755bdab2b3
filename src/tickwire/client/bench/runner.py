"""The coordinator: starts the workers, runs the phases, shows progress, sums results."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from tickwire.client.bench.config import BenchConfig, BenchConfigError
from tickwire.client.bench.stats import Histogram, merged
from tickwire.client.bench.worker import worker_main

if TYPE_CHECKING:  # rich is imported where it is used: the bench extra, tickwire[bench]
    from rich.table import Table

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid: int) -> tuple[float, int] | None:
    """CPU seconds used so far and resident bytes of process ``pid`` (None if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return cpu, rss_pages * os.sysconf("SC_PAGE_SIZE")


def cores_sample(cpus: set[int]) -> tuple[int, int, int] | None:
    """Busy, irq+softirq and total jiffies of ``cpus`` from /proc/stat (loopback TCP work
    is often accounted as softirq rather than to the process that caused it)."""
    busy = total = irq = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *rest = line.split()
                if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                    continue
                values = [int(v) for v in rest[:8]]
                idle = values[3] + values[4]
                total += sum(values)
                busy += sum(values) - idle
                irq += values[5] + values[6]
    except (OSError, ValueError):
        return None
    return (busy, irq, total) if total else None


def server_cpus(pid: int) -> set[int]:
    """The CPUs process ``pid`` may run on (empty if unknown)."""
    try:
        return set(os.sched_getaffinity(pid))
    except OSError:
        return set()


@dataclass
class _Run:
    config: BenchConfig
    pipes: list[Pipe]
    phase: str = "connecting"
    started: float = field(default_factory=time.monotonic)
    phase_started: float = field(default_factory=time.monotonic)
    progress: dict[int, dict[str, Any]] = field(default_factory=dict)
    connected: set[int] = field(default_factory=set)
    windows: dict[int, dict[str, Any]] = field(default_factory=dict)
    finals: dict[int, dict[str, Any]] = field(default_factory=dict)
    rate: float = 0.0
    recent: Histogram = field(default_factory=Histogram)
    last_messages: int = 0
    last_time: float = field(default_factory=time.monotonic)
    server_pid: int | None = None
    server_before: tuple[float, int] | None = None
    server_start: tuple[float, int] | None = None
    server_end: tuple[float, int] | None = None
    server_cpu_now: float | None = None
    cores: set[int] = field(default_factory=set)
    cores_start: tuple[int, int, int] | None = None
    cores_end: tuple[int, int, int] | None = None
    _last_server: tuple[float, tuple[float, int]] | None = None

    def total(self, key: str) -> int:
        return sum(int(p.get(key, 0)) for p in self.progress.values())

    def enter(self, phase: str) -> None:
        self.phase = phase
        self.phase_started = time.monotonic()

    def broadcast(self, msg: tuple[str, ...]) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(msg)
            except (BrokenPipeError, OSError):
                pass

    def sample_server(self) -> tuple[float, int] | None:
        if self.server_pid is None:
            return None
        sample = proc_sample(self.server_pid)
        now = time.monotonic()
        if sample is not None and self._last_server is not None:
            t0, (c0, _) = self._last_server
            if now - t0 >= 0.9:
                self.server_cpu_now = 100.0 * (sample[0] - c0) / (now - t0)
                self._last_server = (now, sample)
        elif sample is not None:
            self._last_server = (now, sample)
        return sample


def _display(run: _Run) -> Table:
    from rich.table import Table

    cfg = run.config
    table = Table(title=f"tickwire bench → {cfg.target.host}:{cfg.target.port}{cfg.target.path}")
    table.add_column("phase")
    table.add_column("elapsed", justify="right")
    table.add_column("ready / asked", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("lost", justify="right")
    table.add_column("msgs/s", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("server CPU", justify="right")
    p50 = run.recent.percentile(50)
    p99 = run.recent.percentile(99)
    cpu = run.server_cpu_now
    table.add_row(
        run.phase,
        f"{time.monotonic() - run.phase_started:5.1f}s",
        f"{run.total('ready'):,} / {cfg.connections:,}",
        f"{run.total('failed'):,}",
        f"{run.total('lost'):,}",
        f"{run.rate:,.0f}",
        "-" if p50 is None else f"{p50 / 1000:.2f}",
        "-" if p99 is None else f"{p99 / 1000:.2f}",
        "-" if cpu is None else f"{cpu:.0f}%",
    )
    return table


def _handle(run: _Run, index: int, msg: tuple[str, dict[str, Any]]) -> None:
    kind, body = msg
    if kind in ("progress", "connected", "final"):
        run.progress[index] = body
        run.recent.merge(body.get("recent", {}))
    if kind == "connected":
        run.connected.add(index)
    elif kind == "window":
        run.windows[index] = body
    elif kind == "final":
        run.finals[index] = body


def _tick(run: _Run) -> None:
    now = time.monotonic()
    if now - run.last_time >= 1.0:
        messages = run.total("messages")
        run.rate = (messages - run.last_messages) / (now - run.last_time)
        run.last_messages = messages
        run.last_time = now
        run.recent.clear()
    run.sample_server()
    cfg = run.config
    elapsed = now - run.phase_started
    if run.phase == "connecting":
        if len(run.connected) == len(run.pipes) or elapsed > cfg.connect_timeout + 10:
            run.enter("warmup")
    elif run.phase == "warmup":
        if elapsed >= cfg.warmup:
            run.server_start = run.sample_server()
            if run.cores:
                run.cores_start = cores_sample(run.cores)
            run.broadcast(("measure",))
            run.enter("measure")
            run.last_messages = run.total("messages")
    elif run.phase == "measure":
        if elapsed >= cfg.duration or (
            cfg.max_messages and run.total("messages") - run.last_messages >= cfg.max_messages
        ):
            run.broadcast(("end",))
            run.server_end = run.sample_server()
            if run.cores:
                run.cores_end = cores_sample(run.cores)
            run.enter("ending")
    elif run.phase == "ending":
        if len(run.windows) == len(run.pipes) or elapsed > 10:
            run.broadcast(("stop",))
            run.enter("stopping")


def _result(run: _Run) -> dict[str, Any]:
    cfg = run.config
    windows = list(run.windows.values())
    seconds = max(w["end"] for w in windows) - min(w["start"] for w in windows) if windows else 0.0
    messages = sum(w["messages"] for w in windows)
    frames = sum(w["frames"] for w in windows)
    nbytes = sum(w["bytes"] for w in windows)
    reads = sum(int(w.get("reads", 0)) for w in windows)
    cpu = sum(float(w.get("cpu", 0.0)) for w in windows)
    hist = merged(w["hist"] for w in windows)
    finals = list(run.finals.values()) or list(run.progress.values())
    close_codes: dict[str, int] = {}
    errors: dict[str, int] = {}
    for f in finals:
        for code, n in f.get("close_codes", {}).items():
            close_codes[str(code)] = close_codes.get(str(code), 0) + n
        for what, n in f.get("errors", {}).items():
            errors[what] = errors.get(what, 0) + n
    ready = sum(int(p.get("ready", 0)) for p in finals)
    out: dict[str, Any] = {
        "target": f"ws://{cfg.target.host}:{cfg.target.port}{cfg.target.path}",
        "dialect": cfg.dialect,
        "connections": cfg.connections,
        "channels": list(cfg.channels),
        "workers": cfg.workers,
        "opened": sum(int(p.get("opened", 0)) for p in finals),
        "ready": ready,
        "failed": sum(int(p.get("failed", 0)) for p in finals),
        "lost": sum(int(p.get("lost", 0)) for p in finals),
        "close_codes": close_codes,
        "errors": errors,
        "window_s": round(seconds, 3),
        "messages": messages,
        "frames": frames,
        "total_messages": sum(int(p.get("messages", 0)) for p in finals),
        "total_frames": sum(int(p.get("frames", 0)) for p in finals),
        "bytes": nbytes,
        "deliveries_per_s": round(messages / seconds, 1) if seconds else 0.0,
        "frames_per_s": round(frames / seconds, 1) if seconds else 0.0,
        "mbytes_per_s": round(nbytes / seconds / 1e6, 3) if seconds else 0.0,
        "latency": hist.summary(),
        "generator_cpu_pct": [
            round(100.0 * w.get("cpu", 0.0) / seconds, 1) if seconds else None for w in windows
        ],
        # what one read (one data_received: a server write or more) costs the generator
        "reads_per_s": round(reads / seconds, 1) if seconds else 0.0,
        "generator_us_per_read": round(1e6 * cpu / reads, 2) if reads else None,
    }
    if run.server_pid is not None:
        server: dict[str, Any] = {"pid": run.server_pid}
        if run.server_before is not None:
            server["rss_before_mb"] = round(run.server_before[1] / 2**20, 2)
        if run.server_start is not None and run.server_end is not None:
            cpu = run.server_end[0] - run.server_start[0]
            server["cpu_pct"] = round(100.0 * cpu / seconds, 1) if seconds else None
            server["rss_mb"] = round(run.server_end[1] / 2**20, 2)
            if run.cores_start and run.cores_end:
                busy, irq, total = (
                    e - s for e, s in zip(run.cores_end, run.cores_start, strict=True)
                )
                if total:
                    server["cores"] = sorted(run.cores)
                    server["cores_busy_pct"] = round(100.0 * busy / total, 1)
                    server["cores_irq_pct"] = round(100.0 * irq / total, 1)
            if run.server_before is not None and ready:
                grown = run.server_start[1] - run.server_before[1]
                server["rss_per_conn_kb"] = round(grown / ready / 1024, 2)
        out["server"] = server
    return out


def login(config: BenchConfig) -> tuple[str, str]:
    """``POST /login`` on the target with ``config.login`` (``USER:PASSWORD``); returns
    (user id, session key)."""
    user, sep, password = (config.login or "").partition(":")
    if not sep or not user:
        raise BenchConfigError("login: must be USER:PASSWORD")
    target = config.target
    body = json.dumps({"id": user, "password": password}).encode()
    req = urllib.request.Request(
        f"http://{target.host}:{target.port}/login",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise BenchConfigError(f"login: POST /login failed: {exc}") from None
    return str(answer["id"]), str(answer["session_key"])


def run_bench(
    config: BenchConfig, *, server_pid: int | None = None, display: bool = True
) -> dict[str, Any]:
    """Run the load described by ``config`` and return the results (logging in first
    when ``config.login`` is set)."""
    if config.login and config.credentials is None:
        config = replace(config, credentials=login(config))
    ctx = multiprocessing.get_context("spawn")
    pipes: list[Pipe] = []
    procs = []
    run = _Run(config, pipes, server_pid=server_pid)
    run.server_before = run.sample_server()
    if server_pid is not None:
        cpus = server_cpus(server_pid)
        # the whole-core view only means something when the server has its own core(s)
        if cpus and len(cpus) < (os.cpu_count() or 1):
            run.cores = cpus
    for i in range(config.workers):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker_main, args=(config, i, child), daemon=True)
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=True)
    live = Live(_display(run), console=console, refresh_per_second=4, transient=False)
    try:
        if display:
            live.start()
        open_pipes = {p: i for i, p in enumerate(pipes)}
        while run.phase != "stopping" or len(run.finals) < len(open_pipes):
            for ready in wait(list(open_pipes), timeout=0.25):
                assert isinstance(ready, Pipe)
                try:
                    _handle(run, open_pipes[ready], ready.recv())
                except EOFError:
                    index = open_pipes.pop(ready)
                    run.finals.setdefault(index, run.progress.get(index, {}))
                    run.connected.add(index)
                    run.windows.setdefault(index, {})
            if not open_pipes:
                break
            _tick(run)
            if run.phase == "stopping" and time.monotonic() - run.phase_started > 10:
                break
            if display:
                live.update(_display(run))
    finally:
        if display:
            live.stop()
        run.broadcast(("stop",))
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    run.windows = {i: w for i, w in run.windows.items() if w}
    return _result(run)


def results_table(result: dict[str, Any]) -> Table:
    """The end-of-run table."""
    from rich.table import Table

    table = Table(title="tickwire bench results", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    lat = result["latency"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} ms"

    rows = [
        ("target", f"{result['target']} ({result['dialect']})"),
        ("connections ready / asked", f"{result['ready']:,} / {result['connections']:,}"),
        ("failed / lost", f"{result['failed']:,} / {result['lost']:,}"),
        ("measured window", f"{result['window_s']:.1f} s"),
        ("deliveries/s", f"{result['deliveries_per_s']:,.0f}"),
        ("frames/s", f"{result['frames_per_s']:,.0f}"),
        ("MB/s", f"{result['mbytes_per_s']:,.1f}"),
        ("latency samples", f"{lat['samples']:,}"),
        ("latency p50 / p90", f"{ms(lat['p50_ms'])} / {ms(lat['p90_ms'])}"),
        ("latency p99 / p99.9", f"{ms(lat['p99_ms'])} / {ms(lat['p999_ms'])}"),
        ("latency max", ms(lat["max_ms"])),
    ]
    gen_cpu = ", ".join(f"{c}%" for c in result["generator_cpu_pct"])
    rows.append(("generator CPU per worker", gen_cpu))
    server = result.get("server")
    if server:
        rows.append(("server CPU (process)", f"{server.get('cpu_pct', '-')}%"))
        if "cores_busy_pct" in server:
            rows.append(
                (
                    f"server core(s) {server['cores']} busy (of which irq)",
                    f"{server['cores_busy_pct']}% ({server['cores_irq_pct']}%)",
                )
            )
        rows.append(("server RSS", f"{server.get('rss_mb', '-')} MB"))
        if "rss_per_conn_kb" in server:
            rows.append(("server RSS per connection", f"{server['rss_per_conn_kb']} KB"))
    if result["close_codes"]:
        codes = ", ".join(f"{k}: {v}" for k, v in result["close_codes"].items())
        rows.append(("close codes", codes))
    for what, n in list(result["errors"].items())[:5]:
        rows.append(("error", f"{what} (x{n})"))
    for what, value in rows:
        table.add_row(what, value)
    return table

"""bench/run.py's fan-out report: ratios to the raw floor of the same run, the sweep per
messages-per-tick, and the write-syscall probe in the table header."""

from __future__ import annotations

from typing import Any

from bench import run


def step(
    offered: int, delivered: float, p99: float, cpu: float, per_tick: int, target: str = "x"
) -> dict[str, Any]:
    return {
        "target": target,
        "offered_per_s": offered,
        "deliveries_per_s": delivered,
        "p50_ms": 1.0,
        "p99_ms": p99,
        "server_cpu_pct": cpu,
        "foreign_pct": 0.0,
        "held": p99 < run.HELD_P99_MS and delivered >= run.HELD_SHARE * offered,
        "per_tick": per_tick,
    }


def test_every_sweep_reaches_the_coalescing_regime() -> None:
    assert run.FANOUT_PER_TICK == [1, 10, 100]
    assert all(k >= 10 for k in run.FANOUT_PER_TICK[1:])
    assert run.steps_for(1)[0] < run.steps_for(10)[-1]
    assert run.steps_for(20) == sorted({r * 2 for r in run.FANOUT_STEPS[10]})


def test_a_sweep_goes_past_its_list_while_held_and_the_generator_has_headroom() -> None:
    listed = [100_000, 200_000]

    def done(*p99_gen: tuple[float, float]) -> list[dict[str, Any]]:
        rates = [*listed, 300_000, 450_000, 680_000, 1_000_000][: len(p99_gen)]
        return [
            {**step(r, r, p99, 50, 10), "generator_cpu_pct": gen}
            for r, (p99, gen) in zip(rates, p99_gen, strict=True)
        ]

    assert run.next_step(listed, []) == 100_000
    assert run.next_step(listed, done((5, 20))) == 200_000
    assert run.next_step(listed, done((5, 20), (5, 30))) == 300_000  # 1.5x, held
    assert run.next_step(listed, done((5, 20), (5, 30), (5, 40))) == 450_000
    assert run.next_step(listed, done((5, 20), (5, 30), (5, 40), (5, 50))) == 680_000  # 2 digits
    assert run.next_step(listed, done((5, 20), (90, 30))) is None  # not held: over
    assert run.next_step(listed, done((5, 20), (5, 95))) is None  # the generator's limit
    four_more = done((5, 20), (5, 30), (5, 40), (5, 50), (5, 60), (5, 70))
    assert len(four_more) == len(listed) + run.EXTEND_MAX
    assert run.next_step(listed, four_more) is None  # bounded
    run.EXTEND = False
    try:
        assert run.next_step(listed, done((5, 20), (5, 30))) is None  # --steps: only those
    finally:
        run.EXTEND = True


def test_a_row_held_at_the_sweeps_end_is_reported_as_a_lower_bound() -> None:
    held = [{**step(r, r, 10, 50, 10, "tickwire"), "generator_cpu_pct": 94.0}
            for r in (1_000_000, 2_000_000)]  # fmt: skip
    ended = [step(1_000_000, 1_000_000, 10, 50, 10, run.FLOOR),
             step(2_000_000, 1_500_000, 900, 99, 10, run.FLOOR)]  # fmt: skip
    rows = [run.fanout_summary("tickwire", 10, held), run.fanout_summary(run.FLOOR, 10, ended)]
    run.add_ratios(rows)
    assert rows[0]["held_last_step"] and not rows[1]["held_last_step"]
    report = run.Report("fanout", {"subscribers": 1000, "size": 150, "engine": "memory",
                                   "per_tick": [10], "date": "2026-12-03 06:00 UTC"},
                        rows=rows)  # fmt: skip
    text = run.markdown(report)
    assert "lower bound: tickwire @ 10/tick (generator 94% busy)." in text
    assert "raw-floor @ 10/tick (" not in text


def test_rows_are_ratios_to_the_floor_at_the_same_messages_per_tick() -> None:
    tw = [step(50_000, 50_000, 10, 50, 1, "tickwire"), step(100_000, 99_000, 20, 60, 1, "tickwire")]
    fl = [step(50_000, 50_000, 12, 55, 1, run.FLOOR), step(100_000, 80_000, 500, 99, 1, run.FLOOR)]
    rows = [
        run.fanout_summary("tickwire", 1, tw),
        run.fanout_summary(run.FLOOR, 1, fl),
        run.fanout_summary("tickwire", 10, [step(500_000, 500_000, 30, 40, 10, "tickwire")]),
    ]
    run.add_ratios(rows)
    tw_row, floor, ten = rows
    assert tw_row["held_per_s"] == 100_000 and floor["held_per_s"] == 50_000
    assert tw_row["held_per_s_vs_floor"] == 2.0
    assert tw_row["most_per_s_vs_floor"] == 99_000 / 80_000
    assert ten["held_per_s_vs_floor"] is None  # no floor at 10 per tick in this run
    assert tw_row["cpu_ns_per_delivery"] == 0.60 / 99_000 * 1e9
    report = run.Report("fanout", {"subscribers": 1000, "size": 150, "engine": "memory",
                                   "per_tick": [1, 10], "date": "2026-12-02 14:00 UTC",
                                   "write_syscall": {"ns_per_write": 5970, "bytes": 240,
                                                     "rounds": 9, "connections": 100}},
                        rows=rows)  # fmt: skip
    text = run.markdown(report)
    assert "5,970 ns per 240-byte send()" in text
    assert "| 1 | tickwire | 100,000 | 2.00x |" in text
    assert "| 10 | tickwire | 500,000 | - |" in text


def test_the_write_probe_times_sends_to_a_waiting_reader() -> None:
    probe = run.write_probe(connections=4, rounds=3, sends=200)
    assert probe["connections"] == 4 and probe["rounds"] == 3 and probe["bytes"] == 240
    assert isinstance(probe["ns_per_write"], int) and probe["ns_per_write"] > 0


def test_the_channels_table_says_what_reading_a_burst_costs_the_generator() -> None:
    def one(target: str, per_read: float | None) -> dict[str, Any]:
        return {**step(70_000, 70_000, 100, 70, 1, target), "server_core_busy_pct": 80.0,
                "server_core_irq_pct": 20.0, "rss_per_conn_kb": 2.0,
                "generator_us_per_read": per_read}  # fmt: skip

    report = run.Report(
        "channels",
        {"connections": 10_000, "shared_burst_ms": 36.4,
         "write_syscall": {"ns_per_write": 3637, "bytes": 240}},
        rows=[one("tickwire", 7.25), one(run.FLOOR, 6.5), one("node-ws", None)],
    )  # fmt: skip
    text = run.markdown(report)
    assert "spent 6.5 to 7.2 µs of CPU per read" in text
    assert "each of 10,000 connections takes it at least 65.0 ms" in text
    assert "| 2.0 | 7.2 |" in text and "| 2.0 | - |" in text  # per row, and none

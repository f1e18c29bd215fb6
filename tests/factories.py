"""Factories shared by the tests of the checks, the verdicts and the reports: benchmark results, measurements, a
baseline check on a temporary store, and a synthetic run log. Built by hand, so these tests run in milliseconds."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import MATRIX, REPO

from pytest_dsr1 import baseline as bl
from pytest_dsr1.check import BaselineCheck
from pytest_dsr1.matrix import item_key, load_matrix
from pytest_dsr1.options import Options
from pytest_dsr1.run_log import ConfigStats, ItemResult, Measurement, RunLog, RunMetadata, run_metadata
from pytest_dsr1.runner import Runner
from pytest_dsr1.tolerance import Tolerance
from pytest_dsr1.verdict.metric import compare
from pytest_dsr1.verdict.outcomes import Outcome

FP = {"hardware": "cpu", "cpu_model": "X", "cpu_count": 2, "vllm": "0.32.0", "model": "m", "server_command": "s"}


META = RunMetadata("0", None, "py", "pytest", None, "now", "host")


def bench_result(tput: float, tpot: float = 5.0) -> dict[str, float]:
    return {
        "output_throughput": tput,
        "total_token_throughput": tput * 2,
        "mean_ttft_ms": 50.0,
        "mean_tpot_ms": tpot,
        "mean_itl_ms": tpot,
        "completed": 4,
        "failed": 0,
        "duration": 1.0,
    }


def baseline_check(tmp_path: Path, matrix_path: Path = MATRIX, **options: object) -> tuple[BaselineCheck, RunLog]:
    matrix = load_matrix(matrix_path)
    settings: dict[str, object] = {"confirm": 0, **options}
    opts = Options(baselines=tmp_path / "bl", run_dir=tmp_path / "runs", **settings)  # type: ignore[arg-type]
    run_log = RunLog(matrix, tmp_path / "runs", META)
    runner = Runner(matrix, opts, run_log, lambda line: None)
    return BaselineCheck(runner, bl.BaselineStore(opts.baselines, opts.local_baselines)), run_log


def measurement_of(check: BaselineCheck, *tputs: float, config_id: str = "cpu-tiny-tp1", index: int = 0) -> Measurement:
    """A measurement of the config's `index`-th item, one run per throughput in `tputs`."""
    config = check.runner.matrix.config(config_id)
    wl = check.runner.matrix.workloads_for(config)[index]
    return Measurement(
        config, wl, item_key(config.id, wl.id), "s", "b", dict(FP), runs=[bench_result(t) for t in tputs]
    )


SCHEMA = json.loads((REPO / "pytest_dsr1" / "results.schema.json").read_text())


def make_run_log(tmp_path: Path, config_id: str = "h200-fp8-tp8ep") -> RunLog:
    matrix = load_matrix(MATRIX)
    meta = run_metadata(["-m", "h200", "--dsr1-api-key", "sk-secret-1"], REPO, "0.24.0", "test host", ("sk-secret-1",))
    run_log = RunLog(matrix, tmp_path / "runs", meta)
    config = matrix.config(config_id)
    run_log.configs_run.append(config.id)
    run_log.server_starts = 1
    run_log.stats[config.id] = ConfigStats(
        startup_s=600, ready_s=600, bench_s=100, measured_s=80, stop_s=10, wall_s=720, items=2
    )
    tol = {k: Tolerance(0.1) for k in ("output_throughput", "mean_tpot_ms", "mean_ttft_ms")}
    # Item 1: throughput -23% on 3 samples a side that separate (Mann-Whitney p=0.05: REGRESSED). Item 2: -37.5%
    # on 3 samples that overlap (Mann-Whitney says noise), TTFT +120% likewise.
    cases = (
        ([60.0, 61.0, 59.0], [78.0, 79.0, 77.0], [500.0] * 3, [500.0] * 3),
        ([480.0, 900.0, 500.0], [800.0, 810.0, 450.0], [1100.0, 400.0, 1200.0], [500.0, 1000.0, 450.0]),
    )
    for wl, (tput, base_tput, ttft, base_ttft) in zip(matrix.workloads_for(config)[:2], cases, strict=True):
        runs = [
            {
                "output_throughput": t,
                "mean_tpot_ms": 16.0,
                "mean_ttft_ms": f,
                "completed": 1,
                "failed": 0,
                "duration": 1,
            }
            for t, f in zip(tput, ttft, strict=True)
        ]
        fp = {"hardware": "h200", "vllm": None, "model": "m", "server_command": "x"}
        m = Measurement(config, wl, item_key(config.id, wl.id), "vllm serve x", "vllm bench serve x", fp, runs=runs)
        base = {"output_throughput": base_tput, "mean_tpot_ms": [15.0] * len(base_tput), "mean_ttft_ms": base_ttft}
        v = compare(base, m.samples, tol)
        outcome: Outcome = "REGRESSED" if any(x.failed for x in v) else "passed"
        medians = {k: sorted(x)[len(x) // 2] for k, x in base.items()}
        run_log.results[m.key] = ItemResult(m.key, config.id, wl, outcome, "", v, m, medians)
    return run_log

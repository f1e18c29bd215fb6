"""Reports from a synthetic run record (no server): markdown rows, results.json schema, PNG plots, metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import MATRIX, REPO
from pytest_dsr1 import report
from pytest_dsr1.matrix import load_matrix
from pytest_dsr1.plots import throughput_label
from pytest_dsr1.run_log import ConfigStats, ItemResult, Measurement, RunLog, run_metadata
from pytest_dsr1.tolerance import Tolerance
from pytest_dsr1.verdict.metric import compare
from pytest_dsr1.verdict.outcomes import Outcome

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
        m = Measurement(config, wl, f"{config.id}[{wl.id}]", "vllm serve x", "vllm bench serve x", fp, runs=runs)
        base = {"output_throughput": base_tput, "mean_tpot_ms": [15.0] * len(base_tput), "mean_ttft_ms": base_ttft}
        v = compare(base, m.samples, tol)
        outcome: Outcome = "REGRESSED" if any(x.failed for x in v) else "passed"
        medians = {k: sorted(x)[len(x) // 2] for k, x in base.items()}
        run_log.results[m.key] = ItemResult(m.key, config.id, wl, outcome, "", v, m, medians)
    return run_log


@pytest.fixture
def run_log(tmp_path: Path) -> RunLog:
    return make_run_log(tmp_path)


def test_markdown_has_a_row_per_item_metric_regressions_first(run_log):
    md = report.summary_markdown(run_log)
    every = md.split("### Every gated metric")[1]
    rows = [line for line in every.splitlines() if line.startswith("| h200-fp8-tp8ep[")]
    assert len(rows) == 6
    assert "REGRESSED" in rows[0] and "-23.1%" in rows[0]
    assert "1 server start(s) for 1 configuration(s) run." in md
    assert md.startswith("## pytest-dsr1: 2 item(s): 1 passed, 1 REGRESSED")


def test_markdown_lists_every_change_beyond_tolerance_with_its_p_value(run_log):
    """A change judged noise is still a change a reviewer must see, with the test's p-value."""
    md = report.summary_markdown(run_log)
    assert "3 gated change(s) beyond tolerance, 2 of them judged noise by the Mann-Whitney test." in md
    beyond = md.split("### Changes beyond tolerance")[1].split("###")[0]
    rows = [line for line in beyond.splitlines() if line.startswith("| h200-fp8-tp8ep[")]
    assert len(rows) == 3
    noise = [r for r in rows if "| noise |" in r]
    assert {r.split(" | ")[1] for r in noise} == {"output_throughput (tok/s)", "mean_ttft_ms (ms)"}
    assert all(r.split(" | ")[-2] not in ("", "-") for r in noise)  # the p-value is shown
    assert "| REGRESSED | 0.050 |" in rows[0]


def test_run_metadata_in_both_reports_with_secrets_redacted(run_log):
    data = report.results_json(run_log)
    meta = data["metadata"]
    assert meta["plugin_version"] and meta["vllm"] == "0.24.0" and meta["host"] == "test host"
    assert meta["command_line"] == "pytest -m h200 --dsr1-api-key ***"
    assert meta["git_commit"] is None or len(meta["git_commit"].split("+")[0]) == 40
    md = report.summary_markdown(run_log)
    assert "`pytest -m h200 --dsr1-api-key ***`" in md and "sk-secret-1" not in md + json.dumps(data)


def test_results_json_validates_against_the_shipped_schema(run_log):
    import jsonschema

    data = json.loads(json.dumps(report.results_json(run_log), default=str))
    jsonschema.validate(data, SCHEMA)
    data["items"][0]["outcome"] = "fine"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA)


@pytest.mark.parametrize("path", sorted((REPO / "docs" / "runs").rglob("results.json")), ids=lambda p: p.parent.name)
def test_committed_reports_validate_against_the_schema(path):
    import jsonschema

    jsonschema.validate(json.loads(path.read_text()), SCHEMA)


def test_plots_are_readable_pngs(run_log, tmp_path):
    from PIL import Image

    report.write_reports(run_log, tmp_path / "r")
    pngs = {p.name: p for p in (tmp_path / "r").glob("*.png")}
    assert set(pngs) == {"h200-fp8-tp8ep-throughput-interactivity.png", "h200-fp8-tp8ep-latency.png"}
    with Image.open(pngs["h200-fp8-tp8ep-latency.png"]) as im:
        assert im.format == "PNG" and im.size == (1200, 500)


def test_throughput_axis_fits_the_hardware():
    assert throughput_label(0) == "output throughput (tok/s, whole server on the CPU)"
    assert "GPU" not in throughput_label(0)
    assert throughput_label(1) == "output throughput per GPU (tok/s/GPU, 1 GPU)"
    assert throughput_label(8).endswith("8 GPUs)")


def test_a_pytest_n_wait_for_gpus_is_shown_apart_from_the_overhead(tmp_path):
    run_log = make_run_log(tmp_path)
    before = report.timing_rows(run_log)
    stats = run_log.stats["h200-fp8-tp8ep"]
    stats.gpu_wait_s, stats.wall_s = 190.0, stats.wall_s + 190.0  # waited in its first item's set-up
    stats.metrics_s = 12.5
    rows = report.timing_rows(run_log)
    overhead = report.TIMING_HEADER.index("overhead")
    assert rows[0][overhead] == before[0][overhead]  # the wait is not harness overhead
    md = report.summary_markdown(run_log)
    assert "h200-fp8-tp8ep waited 190.0s for its GPU(s) while another worker's server held them" in md
    assert "server metrics: 12.5s of the overhead" in md

"""Reports from a synthetic session (no server): markdown rows, results.json schema, PNG plots."""

import json

import pytest

from conftest import MATRIX, REPO
from pytest_dsr1 import report
from pytest_dsr1.compare import compare
from pytest_dsr1.matrix import load_matrix
from pytest_dsr1.options import Options
from pytest_dsr1.runner import ConfigStats, Dsr1Session, ItemResult, Measurement
from pytest_dsr1.tolerance import Tolerance


@pytest.fixture
def session(tmp_path):
    matrix = load_matrix(MATRIX)
    opts = Options(
        model=None,
        record=False,
        baselines=tmp_path,
        matrix=None,
        local_baselines=None,
        dry_run=False,
        repeat=None,
        confirm=0,
        alpha=0.05,
        missing_baseline="skip",
        startup_timeout=None,
        host="127.0.0.1",
        api_key=None,
        run_dir=tmp_path / "runs",
        report=None,
        python=None,
    )
    s = Dsr1Session(matrix, opts, lambda line: None)
    config = matrix.config("h200-fp8-tp8ep")
    s.configs_run.append(config.id)
    s.server_starts = 1
    s.stats[config.id] = ConfigStats(
        startup_s=600, ready_s=600, bench_s=100, measured_s=80, stop_s=10, wall_s=720, items=2
    )
    tol = {k: Tolerance(0.1) for k in ("output_throughput", "mean_tpot_ms", "mean_ttft_ms")}
    for wl, tput in zip(matrix.workloads_for(config)[:2], (60.0, 800.0)):
        run = {
            "output_throughput": tput,
            "mean_tpot_ms": 16.0,
            "mean_ttft_ms": 500.0,
            "completed": wl.batch_size,
            "failed": 0,
            "duration": 10.0,
        }
        m = Measurement(
            config,
            wl,
            f"{config.id}[{wl.id}]",
            "vllm serve x",
            "vllm bench serve x",
            {"hardware": "h200", "vllm": None, "model": "m", "server_command": "x"},
            runs=[run],
        )
        base = {"output_throughput": [tput * 1.3], "mean_tpot_ms": [15.0], "mean_ttft_ms": [500.0]}
        v = compare(base, m.samples, tol, tuple(tol))
        s.results[m.key] = ItemResult(
            m.key,
            config.id,
            wl,
            "REGRESSED" if any(x.failed for x in v) else "passed",
            "",
            v,
            m,
            {k: x[0] for k, x in base.items()},
        )
    return s


def test_markdown_has_a_row_per_item_metric_regressions_first(session):
    md = report.summary_markdown(session)
    rows = [line for line in md.splitlines() if line.startswith("| h200-fp8-tp8ep[")]
    assert len(rows) == 6
    assert "REGRESSED" in rows[0] and "-23.1%" in rows[0]
    assert "1 server start(s) for 1 configuration(s) run." in md


def test_results_json_validates_against_the_shipped_schema(session):
    import jsonschema

    schema = json.loads((REPO / "pytest_dsr1" / "results.schema.json").read_text())
    data = json.loads(json.dumps(report.results_json(session), default=str))
    jsonschema.validate(data, schema)
    data["items"][0]["outcome"] = "fine"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


def test_plots_are_readable_pngs(session, tmp_path):
    from PIL import Image

    report.write_reports(session, tmp_path / "r")
    pngs = {p.name: p for p in (tmp_path / "r").glob("*.png")}
    assert set(pngs) == {"h200-fp8-tp8ep-throughput-interactivity.png", "h200-fp8-tp8ep-latency.png"}
    with Image.open(pngs["h200-fp8-tp8ep-latency.png"]) as im:
        assert im.format == "PNG" and im.size == (1200, 500)

"""Reports from a synthetic run record (no server): markdown rows, results.json schema, PNG plots, metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import SCHEMA, make_run_log
from helpers import REPO

from pytest_dsr1 import report, timing
from pytest_dsr1.check import config_verdicts
from pytest_dsr1.plots import throughput_label
from pytest_dsr1.run_log import RunLog


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
    before = timing.timing_rows(run_log)
    stats = run_log.stats["h200-fp8-tp8ep"]
    stats.gpu_wait_s, stats.wall_s = 190.0, stats.wall_s + 190.0  # waited in its first item's set-up
    stats.metrics_s = 12.5
    rows = timing.timing_rows(run_log)
    overhead = timing.TIMING_HEADER.index("overhead")
    assert rows[0][overhead] == before[0][overhead]  # the wait is not harness overhead
    md = report.summary_markdown(run_log)
    assert "h200-fp8-tp8ep waited 190.0s for its GPU(s) while another worker's server held them" in md
    assert "server metrics: 12.5s of the overhead" in md


def test_every_verdict_says_what_it_could_have_caught(run_log):
    """The detection limits reach every report: a column per gated metric, a line per config, results.json."""
    import jsonschema

    run_log.config_verdicts = config_verdicts(run_log, run_log.matrix, {})
    (line,) = report.detection_lines(run_log)
    assert line.startswith("h200-fp8-tp8ep: would have caught output_throughput -")
    md = report.summary_markdown(run_log)
    assert "| catches |" in md
    data = report.results_json(run_log)
    jsonschema.validate(data, SCHEMA)
    limits = [v["detection_pct"] for item in data["items"] for v in item["verdicts"]]
    assert limits and all(x is None or x >= 10.0 for x in limits)  # never inside the 10% tolerance
    assert all("detection_pct" in v for v in data["config_verdicts"])

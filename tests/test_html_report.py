"""report.html: rendered from results.json data, on literal data here (a GPU-sized synthetic run of 126 items), and
opened in headless Chromium (Debian's `chromium` package: .ci/run installs it, and sets DSR1_REQUIRE_BROWSER so
that a missing browser fails there instead of skipping). The real CPU run's page is checked in
tests/test_e2e_cpu.py."""

from __future__ import annotations

import json
import re
from typing import Any

from helpers import chromium_dom

from pytest_dsr1.html_report import render, write_html
from pytest_dsr1.matrix import load_matrix, packaged_matrix_dir


def gpu_night(sessions: int = 10) -> dict[str, Any]:
    """A results.json of the recipe's H200 FP8 night (126 items), every item compared against a history of
    `sessions` nights, one of them failed: the size a real night's page must handle."""
    matrix = load_matrix(packaged_matrix_dir())
    configs = [c for c in matrix.configs if c.hardware.name == "h200" and c.model.name == "fp8"]
    items: list[dict[str, Any]] = []
    verdicts: list[dict[str, Any]] = []
    dates = [f"2026-11-{day:02d}T01:00:00Z" for day in range(1, sessions + 1)]
    for c in configs:
        for wl in matrix.workloads_for(c):
            key = f"{c.id}[{wl.id}]"
            failed = len(items) == 7
            item_verdicts = []
            for metric, base, moved in (("output_throughput", 5000.0, 0.7), ("median_tpot_ms", 20.0, 1.0)):
                measured = base * (moved if failed else 1.01)
                item_verdicts.append(
                    {
                        "metric": metric, "baseline": base, "measured": measured, "allowed": base * 0.1,
                        "change_pct": (measured / base - 1) * 100,
                        "tolerance": "10%", "verdict": "REGRESSED" if failed and moved != 1.0 else "ok",
                        "reason": "", "p_value": 0.01, "baseline_samples": [base] * 3,
                        "measured_samples": [measured * f for f in (0.98, 1.0, 1.02)],
                        "history": [base * (1 + 0.01 * (i % 3)) for i in range(sessions)], "detection_pct": 10.0,
                    }
                )  # fmt: skip
            items.append(
                {
                    "id": key, "config": c.id,
                    "workload": {"name": wl.name, "input_len": wl.input_len, "output_len": wl.output_len,
                                 "batch_size": wl.batch_size},
                    "outcome": "REGRESSED" if failed else "passed",
                    "message": "- waiting requests: up to 15 queued" if failed else "",
                    "server_command": f"vllm serve deepseek-ai/DeepSeek-R1-0528 ({c.id})",
                    "bench_command": "vllm bench serve ...",
                    "verdicts": item_verdicts,
                    "histories": {v["metric"]: v["history"] for v in item_verdicts},
                    "history_dates": {v["metric"]: dates for v in item_verdicts},
                }
            )  # fmt: skip
        for metric in ("output_throughput", "median_tpot_ms"):
            verdicts.append(
                {"config_id": c.id, "metric": metric, "items": 18, "change_pct": 1.0, "low_pct": -1.0,
                 "high_pct": 3.0, "allowed_pct": 10.0, "verdict": "ok", "reason": "", "detection_pct": 10.0}
            )  # fmt: skip
    meta = {"started_at": "2026-11-11T01:00:00Z", "command_line": "pytest -m h200 --dsr1-model fp8", "vllm": "0.24.0"}
    return {"metadata": meta, "items": items, "config_verdicts": verdicts, "logs": None}


def test_the_page_lists_every_item_failed_first_with_a_chart_per_config_and_metric(tmp_path):
    data = gpu_night()
    page = render(data, tmp_path)
    rows = re.findall(r'<tr id="item-([^"]+)"', page)
    assert len(rows) == len(data["items"]) == 126 and set(rows) == {i["id"] for i in data["items"]}
    assert rows[0] == next(i["id"] for i in data["items"] if i["outcome"] == "REGRESSED")  # the failure on top
    configs = {i["config"] for i in data["items"]}
    charts = re.findall(r'<div class="chart" data-config="([^"]+)" data-metric="([^"]+)"', page)
    assert set(charts) == {(c, m) for c in configs for m in ("output_throughput", "median_tpot_ms")}
    for item in data["items"]:  # each item's history and tonight are named groups in its config's charts
        assert page.count(f'id="history {item["id"]}"') == 2 and page.count(f'id="tonight {item["id"]}"') == 2
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained: nothing fetched from anywhere
    assert "waiting requests: up to 15 queued" in page  # the failed item's message, with its cause


def test_a_gpu_sized_page_weighs_under_3_mb_and_opens_in_chromium_in_under_2_seconds(tmp_path):
    data = gpu_night()
    (tmp_path / "results.json").write_text(json.dumps(data))
    page = write_html(tmp_path)
    size = page.stat().st_size
    assert size < 3 * 1024 * 1024, size
    dom, wall = chromium_dom(page)
    loaded = re.search(r'data-loaded-ms="(\d+)"', dom)
    assert loaded, dom[:500]
    assert int(loaded[1]) < 2000, f"the page took {loaded[1]} ms to load (browser start-up and all: {wall:.1f} s)"
    assert len(re.findall(r'<tr id="item-', dom)) == 126

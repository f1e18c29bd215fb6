"""`python -m pytest_dsr1 trend`: series across nights' report folders and their change points. On literal series,
and on this project's real report folders, clean and with an injected night 30% slower: eight nights of the one-GPU
H200 pre-flight on five lent machines, and five runs of the CPU main job."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from helpers import REPO

from pytest_dsr1.__main__ import main
from pytest_dsr1.trend import change_points

RUNS = REPO / "docs" / "runs"
# Five main-job runs on AMD EPYC with AVX-512 BF16 (2 cores), 2026-12-05, from three sessions.
CPU_NIGHTS = [
    RUNS / "cpu-main-job-2026-12-05",
    RUNS / "cpu-main-job-2026-12-05-two-days",
    RUNS / "cpu-main-job-2026-12-05-html",
    RUNS / "cpu-trend-2026-12-05" / "main-job-2",
    RUNS / "cpu-trend-2026-12-05" / "main-job-3",
]
H200_NIGHTS = [
    *sorted((REPO / "docs" / "runs" / "h200-history").glob("compare-*")),
    REPO / "docs" / "runs" / "h200-history" / "record-machine-95f3",
    REPO / "docs" / "runs" / "h200-xdist-one-gpu",
    REPO / "docs" / "runs" / "h200-server-metrics",
]


def test_a_step_is_a_change_point_and_noise_is_not():
    noisy = [1.0, 1.04, 0.97, 1.02, 0.99, 1.03, 0.98, 1.01]
    assert change_points(noisy) == []
    (at, shift), *rest = change_points([*noisy[:5], 0.70, 0.71, 0.69])
    assert at == 5 and -32 < shift < -28 and rest == []
    (at, shift), *rest = change_points([*noisy[:6], 0.7])  # one night, the newest, 30% slower
    assert at == 6 and shift < -25 and rest == []
    assert change_points([1.0, 1.05, 1.1]) == []  # nothing worth a shift of 10%
    assert change_points([1.0, 1.0]) == []


def slow_night(nights: list[Path], into: Path, factor: float) -> Path:
    """A typical night of `nights`, a day after the newest, with its throughput x `factor`: each item's samples are
    its median over the nights (every metric), throughput then scaled. An injected step, and nothing else moved."""
    reports = [json.loads((n / "results.json").read_text()) for n in nights]
    newest = max(reports, key=lambda d: d["metadata"]["started_at"])
    medians: dict[str, dict[str, list[float]]] = {}
    for data in reports:
        for item in data["items"]:
            for metric, samples in (item.get("samples") or {}).items():
                if samples:
                    medians.setdefault(item["id"], {}).setdefault(metric, []).append(statistics.median(samples))
    data = json.loads(json.dumps(newest))
    data["metadata"]["started_at"] = "2026-12-09T01:00:00Z"
    for item in data["items"]:
        if item.get("samples"):
            typical = {m: statistics.median(v) for m, v in medians[item["id"]].items()}
            item["samples"] = {m: [v * (factor if m == "output_throughput" else 1)] for m, v in typical.items()}
    into.mkdir(parents=True)
    (into / "results.json").write_text(json.dumps(data))
    return into


@pytest.mark.parametrize("nights", [H200_NIGHTS, CPU_NIGHTS], ids=["h200", "cpu"])
def test_real_nights_show_no_change_and_an_injected_slow_night_is_one(nights, tmp_path, capsys):
    assert len(nights) >= 5 and all((n / "results.json").is_file() for n in nights)
    assert main(["trend", str(tmp_path / "clean"), *map(str, nights)]) == 0
    clean = json.loads((tmp_path / "clean" / "trend.json").read_text())
    throughput = [s for s in clean["series"] if s["metric"] == "output_throughput"]
    assert len(throughput) == 2 and all(len(s["nights"]) == len(nights) for s in throughput)
    # Throughput and TPOT move up and down around one level (machines of one kind differ by 10 to 20%): no change.
    steady = [s for s in clean["series"] if s["metric"] in ("output_throughput", "median_tpot_ms")]
    assert len(steady) == 4 and [s for s in steady if s["change_points"]] == []
    injected = slow_night(nights, tmp_path / "slow-night", 0.7)  # a typical night, a day later, 30% slower
    assert main(["trend", str(tmp_path / "step"), *map(str, nights), str(injected)]) == 0
    step = json.loads((tmp_path / "step" / "trend.json").read_text())
    # Tonight 30% slower is marked wherever the clean nights' spread lets such a shift be seen (their next-night
    # limit, which the page states), and in at least one config of each kind.
    limits = {s["config"]: s["next_night_pct"] for s in throughput}
    marked = []
    for s in (s for s in step["series"] if s["metric"] == "output_throughput"):
        if limits[s["config"]] < 29:
            (change,) = s["change_points"]
            assert change["at"] == len(nights) and change["worse"] and -35 < change["shift_pct"] < -20, s
            assert s["nights"][change["at"]]["folder"] == str(injected)
            marked.append(s["config"])
        else:  # beyond its reach: marked or not, never anywhere else
            assert all(c["at"] == len(nights) for c in s["change_points"]), s
    assert marked, limits
    # Nothing else moved that night: no other series marks it.
    others = [s for s in step["series"] if s["metric"] != "output_throughput"]
    assert [s for s in others if any(c["at"] == len(nights) for c in s["change_points"])] == []
    page = (tmp_path / "step" / "trend.html").read_text()
    assert "What the next night could show" in page
    assert all(page.count(f'id="change {config} output_throughput ') == 1 for config in marked)
    assert "output_throughput" in capsys.readouterr().out


def test_a_folder_that_is_not_a_report_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["trend", str(tmp_path / "out"), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "results.json: (file): missing: not a --dsr1-report folder" in err

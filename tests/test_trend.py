"""`python -m pytest_dsr1 trend`: series across nights' report folders and their change points. On literal series,
and on this project's real H200 report folders (eight nights of the one-GPU pre-flight on five lent machines),
clean and with an injected night 30% slower."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import REPO

from pytest_dsr1.__main__ import main
from pytest_dsr1.trend import change_points

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


def slowed(night: Path, into: Path, factor: float) -> Path:
    """A copy of a real night with every item's throughput samples x `factor` (TPOT / factor): an injected step,
    dated a day after the original."""
    data = json.loads((night / "results.json").read_text())
    data["metadata"]["started_at"] = "2026-12-09T01:00:00Z"
    for item in data["items"]:
        samples = item.get("samples") or {}
        if "output_throughput" in samples:
            samples["output_throughput"] = [x * factor for x in samples["output_throughput"]]
    into.mkdir(parents=True)
    (into / "results.json").write_text(json.dumps(data))
    return into


def test_real_nights_show_no_throughput_change_and_an_injected_slow_night_is_one(tmp_path, capsys):
    assert len(H200_NIGHTS) >= 5 and all((n / "results.json").is_file() for n in H200_NIGHTS)
    assert main(["trend", str(tmp_path / "clean"), *map(str, H200_NIGHTS)]) == 0
    clean = json.loads((tmp_path / "clean" / "trend.json").read_text())
    throughput = [s for s in clean["series"] if s["metric"] == "output_throughput"]
    assert {s["config"] for s in throughput} == {"h200-tiny-tp1ep", "h200-tiny-tp1ep-fp8"}
    assert all(len(s["nights"]) == len(H200_NIGHTS) for s in throughput)
    # Five machines of one kind, nights that move up and down by 10 to 20% around one level: no change anywhere.
    assert [s for s in clean["series"] if s["change_points"]] == []
    newest = max(H200_NIGHTS, key=lambda n: json.loads((n / "results.json").read_text())["metadata"]["started_at"])
    injected = slowed(newest, tmp_path / "slow-night", 0.7)  # the newest night again, a day later, 30% slower
    assert main(["trend", str(tmp_path / "step"), *map(str, H200_NIGHTS), str(injected)]) == 0
    step = json.loads((tmp_path / "step" / "trend.json").read_text())
    for s in (s for s in step["series"] if s["metric"] == "output_throughput"):
        (change,) = s["change_points"]
        assert change["at"] == len(H200_NIGHTS) and change["worse"] and change["shift_pct"] < -20, s
        assert s["nights"][change["at"]]["folder"] == str(injected)
    page = (tmp_path / "step" / "trend.html").read_text()
    assert page.count('id="change h200-tiny-tp1ep output_throughput') == 1
    assert "output_throughput" in capsys.readouterr().out


def test_a_folder_that_is_not_a_report_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["trend", str(tmp_path / "out"), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "results.json: (file): missing: not a --dsr1-report folder" in err

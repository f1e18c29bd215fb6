"""The measurement scripts (scripts/), on recorded data and small literal cases: no vLLM server, seconds.

Each script's serving part (whole pytest sessions on real servers, minutes to hours) is not run here; what is run
is everything that turns recorded sessions into the figures in docs/, checked against those figures where the
recorded inputs are committed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import psutil
import pytest

from pytest_dsr1.doc_tables import markers, write_between
from pytest_dsr1.server import PIDFILE_SUFFIX
from pytest_dsr1.throttle import Throttle
from pytest_dsr1.verdict.metric import History

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
DOCS = REPO / "docs"
RUNS = DOCS / "runs"
NAMES = ["ab_power", "detection_power", "metrics_overhead", "multi_node_trial", "noise_sources", "rejudge"]


def _load(name: str) -> ModuleType:
    """A script as a module (scripts/ is no package): its functions, without running its main."""
    spec = importlib.util.spec_from_file_location(f"dsr1_script_{name}", SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scripts() -> dict[str, ModuleType]:
    return {name: _load(name) for name in NAMES}


def test_every_script_is_covered():
    assert sorted(p.stem for p in SCRIPTS.glob("*.py")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_help_runs_from_anywhere(name, tmp_path):
    """Each script runs as a file from any directory: it imports the installed package, not its neighbours."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / f"{name}.py"), "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {name}.py")
    assert list(tmp_path.iterdir()) == []  # --help writes nothing


# ---------------------------------------------------------------- rejudge


def _config_cells(lines: list[str]) -> dict[tuple[str, str], str]:
    """(config, metric) -> "change [interval] verdict", from rejudge's `config ...` lines."""
    out = {}
    for line in lines:
        m = re.search(r"config (\S+): (\S+ \[[^\]]+\]) over \d+ items \((\w+), allowed [^)]*\): (.+)$", line)
        if m:
            out[m[1], m[3]] = f"{m[2]} {m[4]}"
    return out


def test_rejudge_leave_one_out_gives_the_replay_table_in_the_docs(scripts, capsys):
    assert scripts["rejudge"].main(["leave-one-out", str(REPO / "baselines/cpu/tiny.json")]) == 0
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if not line.startswith("  ")]
    # The AVX2 kind's 5 sessions; the AVX-512 BF16 kind's 8, over two days and two machines (5 on 2026-12-02, 3 on
    # 2026-12-05): replayed against the other 7, one item of one session fails.
    kinds = [h.split(":")[0].rsplit("-", 1)[0] for h in heads]
    assert kinds == ["amd-epyc-x2-avx2"] * 5 + ["amd-epyc-x2-avx512-bf16"] * 8
    fails = "session 5 of 8 against the others: 1/12 items fail cpu-tiny-tp2[balanced-bs1]"
    assert [h for h in heads if "items fail cpu-" in h] == [h for h in heads if h.endswith(fails)] != []
    # docs/detection-power.md, "The AVX2 kind": each left-out session's items and config verdicts.
    doc = (DOCS / "detection-power.md").read_text()
    rows = re.findall(r"^\| (\d) \| (\d+/12) \| (.+) \| (.+) \| (.+) \| (.+) \|$", doc, re.M)
    assert len(rows) == 5
    blocks = re.split(r"^(?=\S)", out, flags=re.M)  # a left-out session's line and its config lines
    avx2 = [b for b in blocks if b.startswith("amd-epyc-x2-avx2-")]
    assert len(avx2) == 5
    for (session, failed, *cells), block in zip(rows, avx2, strict=True):
        assert f"session {session} of 5 against the others: {failed} items fail" in block
        got = _config_cells(block.splitlines())
        columns = [(c, m) for c in ("cpu-tiny-tp1", "cpu-tiny-tp2") for m in ("output_throughput", "median_tpot_ms")]
        assert [got[k] for k in columns] == cells


def test_rejudge_run_catches_the_recorded_slowdown(scripts, capsys):
    """docs/h200-smoke.md: judged again, the max_num_seqs=8 run fails the same 6 items, 2 of them on TTFT alone."""
    results = RUNS / "h200-history/slowdown-max-num-seqs-8/results.json"
    assert scripts["rejudge"].main(["run", str(results), "--baselines", str(REPO / "baselines")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "items judged: 18; failed: 6"
    failed = dict(line.removeprefix("  FAILED ").split(": ", 1) for line in lines if line.startswith("  FAILED "))
    assert failed["h200-tiny-tp1ep[balanced-bs16]"] == "mean_ttft_ms"
    assert failed["h200-tiny-tp1ep[prompt_heavy-bs16]"] == "mean_ttft_ms"
    assert sum("output_throughput" in v for v in failed.values()) == 4
    # Against the committed history as it is now (docs/h200-smoke.md quotes -43.0% against an earlier one).
    assert _config_cells(lines)["h200-tiny-tp1ep", "output_throughput"] == "-42.4% [-65.4, -4.3] REGRESSED"
    assert _config_cells(lines)["h200-tiny-tp1ep-fp8", "output_throughput"].endswith("ok")


def test_rejudge_run_passes_a_clean_run_and_skips_other_hardware(scripts, capsys):
    rejudge = scripts["rejudge"]
    clean = RUNS / "h200-history/compare-fresh-machine/results.json"
    assert rejudge.main(["run", str(clean), "--baselines", str(REPO / "baselines")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "items judged: 18; failed: 0"
    assert len(_config_cells(lines)) == 10 and all(v.endswith(" ok") for v in _config_cells(lines).values())
    other = RUNS / "cpu-detection/throttle-20pct-1/results.json"  # an Intel run; the CPU history is AMD's
    assert rejudge.main(["run", str(other), "--baselines", str(REPO / "baselines")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("  not compared: baseline recorded on cpu_") for line in lines) == 6
    assert "items judged: 0; failed: 0" in lines


# ---------------------------------------------------------------- detection_power


def test_detection_band_is_the_suites_history_band(scripts):
    dp = scripts["detection_power"]
    values = np.exp(np.random.default_rng(3).normal(0.0, 0.05, size=(2, 7, 5)))
    bands = dp._band(values)
    assert bands.shape == (2, 7)
    for index in np.ndindex(2, 7):
        assert bands[index] == History(tuple(values[index].tolist())).band()
    with pytest.raises(ValueError, match="no band"):
        dp._band(values[..., :2])


def test_detection_projection_small_case(scripts):
    projection = scripts["detection_power"].projection
    rows = projection(cvs=(0.02,), ns=(5,), items=5, trials=300, seed=1)
    assert rows == projection(cvs=(0.02,), ns=(5,), items=5, trials=300, seed=1)  # seeded: reproducible
    (row,) = rows
    assert (row["cv"], row["n"]) == (0.02, 5)
    for level in ("item", "config"):
        assert 0.0 < row[f"{level}_floor"] < 0.5
        assert row[f"{level}_floor"] < row[f"{level}_drop"] < 0.6  # a drop is caught beyond the floor only
    noisier = projection(cvs=(0.05,), ns=(5,), items=5, trials=300, seed=1)[0]
    assert noisier["item_floor"] > row["item_floor"]


def test_detection_report_gives_the_avx2_detection_table(scripts, tmp_path):
    """docs/detection-power.md's AVX2 detection rows, from the committed results of those sessions."""
    dp = scripts["detection_power"]
    detect = []
    for run in sorted((RUNS / "cpu-detection").iterdir()):
        (tmp_path / run.name / "report").mkdir(parents=True)
        (tmp_path / run.name / "report" / "results.json").write_text((run / "results.json").read_text())
        level = int(run.name.split("-")[1].removesuffix("pct")) / 100
        name = f"throttle-{level:.0%}-{run.name[-1]}"
        session = {**dp._reread(tmp_path / run.name), "name": name, "level": level, "applied": level}
        detect.append({**session, "settings": "defaults"})
    text = dp.markdown([], detect, [], "CMD", "SELECTION")
    doc = (DOCS / "detection-power.md").read_text()
    rows = [
        "| 20% | 20.0% | defaults | 3 | 29.8% | 3/18 | 2/3 | 3/3 | 3/3 |",
        "| 40% | 40.0% | defaults | 1 | 53.8% | 6/6 | 1/1 | 1/1 | 1/1 |",
    ]
    for row in rows:
        assert row in text and row in doc
    missed = [line for line in text.splitlines() if line.startswith("- throttle-20%-")]
    assert len(missed) == 3 and all(line in doc for line in missed)


def test_detection_projection_only_reproduces_the_docs(scripts, tmp_path, capsys):
    """The whole GPU projection (about 8 s): the table docs/detection-power.md quotes, digit for digit."""
    out = tmp_path / "projection.md"
    assert scripts["detection_power"].main(["--projection-only", "--out", str(out)]) == 0
    capsys.readouterr()

    def table(text: str) -> list[str]:
        return re.findall(r"^\| \d+% \| \d+ \| .*\|$", text, re.M)

    assert len(table(out.read_text())) == 9
    assert table(out.read_text()) == table((DOCS / "detection-power.md").read_text())


# ---------------------------------------------------------------- ab_power

ITEM_LINE = re.compile(r"^(\S+\[[^\]]+\])\s+(\w+) \([^)]*\)\s+\S+ \[([^\]]+)\]\s+\S+ \[([^\]]+)\].*?±([\d.]+)%")
CONFIG_LINE = re.compile(r"A/B config (\S+): .*\((\w+), allowed ±([\d.]+)%\)")


def _numbers(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in text.split(", ")]


def _session_from_log(log: Path, work: Path) -> None:
    """An ab_power session folder (session.json, report/results.json's `ab`) rebuilt from a session's pytest
    output, which prints every start median (2 decimals) and every margin: what --rejudge reads."""
    items: dict[str, list[dict[str, Any]]] = {}
    configs: list[dict[str, Any]] = []
    starts: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
    for line in log.read_text().splitlines():
        if m := ITEM_LINE.match(line):
            key, metric, a, b, margin = m.groups()
            items.setdefault(key, []).append(
                {"metric": metric, "a_starts": _numbers(a), "b_starts": _numbers(b), "margin_pct": float(margin)}
            )
            for side, values in (("A", _numbers(a)), ("B", _numbers(b))):
                for i, value in enumerate(values):
                    starts.setdefault((side, i), {}).setdefault(key, {})[metric] = value
        elif m := CONFIG_LINE.search(line):
            configs.append({"config_id": m[1], "metric": m[2], "allowed_pct": float(m[3])})
    assert items and configs, log
    config_id = configs[0]["config_id"]
    ab = {
        "items": items,
        "config_verdicts": configs,
        "starts": [{"side": side, "config": config_id, "medians": m} for (side, _), m in starts.items()],
    }
    name = log.stem
    level = float(name.split("-")[1].removesuffix("%")) / 100 if name.startswith("throttle-") else 0.0
    (work / name / "report").mkdir(parents=True)
    (work / name / "report" / "results.json").write_text(json.dumps({"ab": ab}))
    session: dict[str, Any] = {
        "name": name,
        "rc": None,
        "wall_s": 60.0,
        "level": level,
        "applied": level,
        "items": {},
        "configs": [],
    }
    (work / name / "session.json").write_text(json.dumps(session))


def test_ab_power_rejudge_gives_the_docs_tables(scripts, tmp_path, capsys):
    """docs/ab.md's power tables, judged again from the 25 recorded sessions' start medians (wall times aside:
    the logs do not keep the script's own)."""
    work, out = tmp_path / "work", tmp_path / "ab.md"
    logs = sorted((RUNS / "ab-power").glob("*.log"))
    assert len(logs) == 25
    for log in logs:
        _session_from_log(log, work)
    argv = ["--report-only", "--rejudge", "--work", str(work), "--out", str(out)]
    argv += ["--select", "cpu-tiny-tp1 and bs1 and not bs16", "--slow-select", "cpu-tiny-tp1-balanced-bs16"]
    assert scripts["ab_power"].main([*argv, "--throttle-select", "cpu-tiny-tp1-balanced-bs16"]) == 0
    capsys.readouterr()

    def rows(text: str) -> list[str]:
        """The tables' rows, without the wall-time column."""
        return [line.rsplit("|", 2)[0] for line in text.splitlines() if re.match(r"\| (`-k|aa-|slow-|throttle-)", line)]

    text = out.read_text()
    assert text.startswith(markers("ab-power")[0]) and text.rstrip().endswith(markers("ab-power")[1])
    assert len(rows(text)) == 4 + 25
    assert rows(text) == rows((DOCS / "ab.md").read_text())


# ---------------------------------------------------------------- metrics_overhead


def _sides(off: list[tuple[float, float]], on: list[tuple[float, float]]) -> dict[bool, list[Any]]:
    key = "cpu-tiny-tp1[balanced-bs16]"
    return {
        side: [{key: {"output_throughput": t, "median_tpot_ms": p}} for t, p in values]
        for side, values in ((False, off), (True, on))
    }


def test_metrics_overhead_table(scripts):
    """docs/server-metrics.md's sessions (medians as printed there, to 0.1): the same throughput verdict."""
    table = scripts["metrics_overhead"].table
    off = [(1108.1, 11.7), (1350.1, 10.0), (1378.4, 9.7), (1337.8, 9.7)]
    on = [(1582.1, 8.3), (1141.1, 10.9), (1016.3, 11.4), (1170.8, 10.5)]
    args = ["--rounds", "2", "--select", "cpu-tiny-tp1-balanced-bs16"]
    text = table(_sides(off, on), [60.0] * 3 + [63.0] * 2 + [70.0] * 3, "cpu-tiny-tp1-balanced-bs16", args)
    doc = (DOCS / "server-metrics.md").read_text()
    lines = text.splitlines()
    assert (lines[0], lines[-1]) == markers("overhead")
    assert lines[2] in doc  # the regenerate line
    throughput = next(line for line in lines if "| output_throughput |" in line)
    assert throughput in doc and throughput.endswith("| -6.1% [-24.6, +17.1] | inconclusive |")
    assert next(line for line in lines if "| median_tpot_ms |" in line).endswith("| inconclusive |")
    assert "Session wall time: median 63 s." in lines
    slower = table(_sides(off, [(t * 0.5, p * 2) for t, p in off]), [60.0], "x", [])
    assert slower.count("| on slower |") == 2


# ---------------------------------------------------------------- multi_node_trial


def test_multi_node_commands_are_the_ones_in_the_docs(scripts):
    trial = scripts["multi_node_trial"]
    config = trial.two_node_config(REPO / "test_matrix")
    assert (config.id, config.dp, config.nodes) == ("cpu-tiny-dp2-2node", 2, 2)
    node0, node1 = trial.pinned_commands(config, "/root/.cache/pytest-dsr1/tiny-dsv3-8cc99b158225", 59485, 49743)
    doc = (DOCS / "multi-node.md").read_text()
    assert f"# node 1\n{node1.shell_line()}\n# node 0\n{node0.shell_line()}\n" in doc
    assert "--headless" in node1.args and "--headless" not in node0.args


def test_multi_node_report_lines(scripts):
    trial = scripts["multi_node_trial"]
    result = {"completed": 4, "failed": 0, "output_throughput": 123.456, "error_samples": []}
    assert trial.load_line(result).endswith("4 completed, 0 failed; output throughput 123.5 tok/s; errors: none.")
    log = "INFO fine\nERROR x RuntimeError: one\nINFO fine\nERROR y EngineDeadError: two\n"
    assert trial.error_line("node0.log", log) == (
        "- node0.log, last errors: `ERROR x RuntimeError: one` / `ERROR y EngineDeadError: two`"
    )
    assert trial.error_line("node1.log", "INFO all well\n") is None
    text = trial.report(["- a line"])
    assert text == f"{trial.START}\n- a line\n{trial.END}\n"
    assert markers("multi-node-trial") == (trial.START, trial.END)


# ---------------------------------------------------------------- the package modules the scripts share


def test_write_between_replaces_only_its_section(tmp_path):
    start, end = markers("t")
    doc = tmp_path / "doc.md"
    write_between(doc, start, end, f"{start}\nv1\n{end}\n")  # a new file: appended
    assert doc.read_text() == f"{start}\nv1\n{end}\n"
    doc.write_text(f"# Title\n\nprose\n\n{start}\nv1\n{end}\n\nafter\n")
    write_between(doc, start, end, f"{start}\nv2\nmore\n{end}\n")
    assert doc.read_text() == f"# Title\n\nprose\n\n{start}\nv2\nmore\n{end}\n\nafter\n"
    write_between(doc, *markers("other"), "<!-- other:start -->\nx\n<!-- other:end -->\n")  # another section
    assert doc.read_text().endswith("after\n\n<!-- other:start -->\nx\n<!-- other:end -->\n")
    assert f"{start}\nv2\nmore\n{end}\n" in doc.read_text()


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_throttle_stops_and_always_resumes_a_process_group(tmp_path):
    """The real injector on a stand-in server (a sleeping process group and a /health endpoint): stopped for
    about `level` of the time while throttled, and running again afterwards."""
    with pytest.raises(ValueError):
        Throttle(tmp_path, 1.0)
    with Throttle(tmp_path, 0.0) as idle:
        pass
    assert idle.applied == 0.0 and not idle.thread.is_alive()
    health = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=health.serve_forever, daemon=True).start()
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        (tmp_path / "run").mkdir()
        pidfile = tmp_path / "run" / f"server-B1{PIDFILE_SUFFIX}"
        pidfile.write_text(json.dumps({"pgid": os.getpgid(proc.pid), "port": health.server_address[1]}))
        with Throttle(tmp_path, 0.5, only="*-A[0-9]*") as other:  # A's servers only: this one is B's
            time.sleep(0.7)
        assert other.applied == 0.0
        stopped_seen = False
        with Throttle(tmp_path, 0.5, only="*-B[0-9]*") as throttle:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                stopped_seen |= psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED
                time.sleep(0.003)
        assert stopped_seen
        assert 0.25 < throttle.applied < 0.75
        assert psutil.Process(proc.pid).status() != psutil.STATUS_STOPPED  # resumed on the way out
    finally:
        os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
        proc.wait()
        health.shutdown()

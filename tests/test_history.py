"""Baselines with a history: sessions appended and pooled by machine kind, a band from the measured spread of
session medians, an honest noise test (inconclusive) and the config-level verdict. Pure: no server."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from factories import baseline_check, measurement_of
from helpers import MATRIX

from pytest_dsr1 import baseline as bl
from pytest_dsr1.tolerance import Tolerance
from pytest_dsr1.verdict.config import judge_config
from pytest_dsr1.verdict.metric import History, compare_metric, smallest_p
from pytest_dsr1.verdict.outcomes import INCONCLUSIVE, OK, REGRESSED

FP = {"hardware": "cpu", "cpu_model": "X", "cpu_count": 2, "vllm": "0.32.0", "model": "m", "server_command": "s"}
T10 = Tolerance(0.10)


def session_entry(tput: float, fp: dict[str, object] | None = None, command: str = "--num-prompts 32") -> bl.Entry:
    return bl.Entry(
        {"output_throughput": [tput * 0.99, tput, tput * 1.01]},
        "recorded",
        "2026-12-01",
        dict(fp or FP),
        {"bench_command": f"vllm bench serve {command}"},
    )


def test_a_schema_1_file_loads_as_a_history_of_one_session(tmp_path: Path):
    path = tmp_path / "cpu" / "tiny.json"
    path.parent.mkdir()
    path.write_text(
        json.dumps(
            {
                "schema_version": 1,
                "hardware": "cpu",
                "model": "tiny",
                "entries": {
                    "a": {
                        "provenance": "recorded",
                        "date": "2026-11-29",
                        "fingerprint": FP,
                        "metrics": {"output_throughput": 5.0},
                    }
                },
            }
        )
    )
    entry = bl.load(path, "cpu", "tiny").entries["a"]
    assert len(entry.sessions) == 1 and entry.sessions[0].metrics == {"output_throughput": [5.0]}
    bl.append_session(path, "cpu", "tiny", "a", session_entry(6.0))
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 2
    assert [s["metrics"]["output_throughput"]["median"] for s in raw["entries"]["a"]["sessions"]] == [5.0, 6.0]


def test_record_appends_and_keeps_the_newest_n_per_machine_kind(tmp_path: Path):
    path = bl.baseline_path(tmp_path, "cpu", "tiny")
    other = {**FP, "cpu_model": "Y"}
    for i in range(5):
        bl.append_session(path, "cpu", "tiny", "a", session_entry(100.0 + i), keep=3)
    bl.append_session(path, "cpu", "tiny", "a", session_entry(50.0, other), keep=3)
    entry = bl.load(path, "cpu", "tiny").entries["a"]
    medians = [s.metrics["output_throughput"][1] for s in entry.sessions]
    assert medians == [102.0, 103.0, 104.0, 50.0]  # 3 of kind X (the newest), and the one of kind Y
    assert [s.metrics["output_throughput"][1] for s in entry.sessions_like(FP)] == [102.0, 103.0, 104.0]
    assert [s.metrics["output_throughput"][1] for s in entry.sessions_like(other)] == [50.0]


def test_machines_of_one_kind_pool_into_one_history(tmp_path: Path):
    """Another machine of the same CPU model and core count (other host, other vLLM) extends the same history."""
    path = bl.baseline_path(tmp_path, "cpu", "tiny")
    bl.append_session(path, "cpu", "tiny", "a", session_entry(100.0))
    bl.append_session(path, "cpu", "tiny", "a", session_entry(101.0, {**FP, "vllm": "0.33.0", "server_command": "t"}))
    entry = bl.load(path, "cpu", "tiny").entries["a"]
    assert len(entry.sessions_like(FP)) == 2
    assert len(entry.sessions_like({**FP, "cpu_count": 4})) == 0
    assert bl.not_comparable(entry, "a", {**FP, "cpu_count": 4}, "vllm bench serve --num-prompts 32", path)


def test_a_fresh_history_and_a_changed_load_start_over(tmp_path: Path):
    path = bl.baseline_path(tmp_path, "cpu", "tiny")
    bl.append_session(path, "cpu", "tiny", "a", session_entry(100.0))
    bl.append_session(path, "cpu", "tiny", "a", session_entry(101.0))
    other = {**FP, "cpu_isa": "avx2"}  # another kind in the same file: judged against its own, so it stays
    bl.append_session(path, "cpu", "tiny", "a", session_entry(60.0, other))
    bl.append_session(path, "cpu", "tiny", "a", session_entry(102.0), fresh=True)
    entry = bl.load(path, "cpu", "tiny").entries["a"]
    assert [s.metrics["output_throughput"][1] for s in entry.sessions] == [60.0, 102.0]
    bl.append_session(path, "cpu", "tiny", "a", session_entry(61.0, other), fresh=True)
    bl.append_session(path, "cpu", "tiny", "a", session_entry(103.0), fresh=True)
    assert len(bl.load(path, "cpu", "tiny").entries["a"].sessions) == 2
    bl.append_session(path, "cpu", "tiny", "a", session_entry(104.0))
    bl.append_session(path, "cpu", "tiny", "a", session_entry(105.0, command="--num-prompts 64"))
    assert len(bl.load(path, "cpu", "tiny").entries["a"].sessions) == 1  # another load: every kind starts over


def test_the_band_is_three_robust_standard_deviations_of_the_session_medians():
    h = History((100.0, 104.0, 96.0, 102.0, 98.0))
    assert h.center == 100.0
    assert h.spread == pytest.approx(1.4826 * 2.0)
    assert h.band() == pytest.approx(3 * 1.4826 * 2.0 * math.sqrt(1 + 1 / 5))
    assert History((100.0, 104.0)).band() is None  # below 3 sessions the tolerance alone decides


def test_a_noisy_history_widens_the_band_and_a_quiet_one_never_narrows_the_tolerance():
    noisy = (100.0, 130.0, 75.0, 110.0, 90.0)  # sessions that move by tens of percent, as on shared machines
    v = compare_metric("output_throughput", [100, 101, 99], [78, 79, 77], T10, history=noisy)
    assert v.verdict == OK and v.reason == "within the history band" and v.allowed and v.allowed > 20
    quiet = (100.0, 100.5, 99.5, 100.2)
    v = compare_metric("output_throughput", [100, 101, 99], [92, 92, 92], T10, history=quiet)
    assert v.verdict == OK and v.allowed == pytest.approx(T10.allowed(100.1))  # the tolerance stays the floor


def test_outside_the_band_is_a_regression_that_shows_the_history():
    v = compare_metric("output_throughput", [100, 101, 99], [70, 71, 69], T10, history=(100.0, 98.0, 103.0, 101.0))
    assert v.verdict == REGRESSED
    assert "4 sessions: min 98.00, median 100.50, max 103.00; this session 70.00, below all of them" in v.reason
    assert v.history == (100.0, 98.0, 103.0, 101.0) and v.baseline == 100.5


@pytest.mark.parametrize(
    "n_baseline, n_measured, alpha, verdict",
    [
        (1, 3, 0.05, INCONCLUSIVE),
        (2, 3, 0.05, INCONCLUSIVE),
        (3, 3, 0.05, REGRESSED),
        (3, 3, 0.01, INCONCLUSIVE),
        (4, 4, 0.01, INCONCLUSIVE),
        (5, 5, 0.01, REGRESSED),
    ],
)
def test_a_noise_test_that_cannot_reach_alpha_says_inconclusive(n_baseline, n_measured, alpha, verdict):
    v = compare_metric("output_throughput", [100.0 + i for i in range(n_baseline)], [50.0] * n_measured, T10, alpha)
    assert v.verdict == verdict
    if verdict == INCONCLUSIVE:
        assert f"smallest possible Mann-Whitney p is {smallest_p(n_baseline, n_measured):.3f}" in v.reason


def test_smallest_p_at_small_n():
    assert smallest_p(3, 3) == pytest.approx(0.05)
    assert smallest_p(4, 4) == pytest.approx(1 / 70)
    assert smallest_p(5, 5) == pytest.approx(1 / 252)


def test_a_config_whose_items_all_move_together_regresses():
    cv = judge_config("cpu-tiny-tp1", "output_throughput", [0.80, 0.83, 0.79, 0.84, 0.81, 0.82], 0.10)
    assert cv.verdict == REGRESSED and cv.items == 6 and cv.high_pct < -10
    assert cv.line().startswith("cpu-tiny-tp1: -18.5% [") and cv.line().endswith(
        "over 6 items (output_throughput, allowed ±10.0%): REGRESSED"
    )


def test_item_noise_in_both_directions_does_not_move_the_config():
    cv = judge_config("c", "output_throughput", [0.80, 1.22, 0.79, 1.05, 0.81, 1.1], 0.10)
    assert cv.verdict == OK
    tpot = judge_config("c", "mean_tpot_ms", [1.25, 1.3, 1.22, 1.28], 0.10)  # latency: up is worse
    assert tpot.verdict == REGRESSED and tpot.low_pct > 10


def test_the_config_band_comes_from_earlier_sessions_when_there_are_three():
    ratios = [0.80, 0.83, 0.79, 0.84, 0.81, 0.82]
    drifting = [1.0, 0.7, 1.25, 0.9, 1.1]  # whole sessions that moved by 20-30%: an 18% drop is inside that
    cv = judge_config("c", "output_throughput", ratios, 0.10, drifting)
    assert cv.verdict != REGRESSED and cv.allowed_pct > 18


# ---------------------------------------------------------------- through the baseline check


def _check(tmp_path: Path, **options: object):
    return baseline_check(tmp_path, MATRIX, **options)


def _measure(check, *tputs: float, index: int = 0):
    return measurement_of(check, *tputs, index=index)


def test_recorded_sessions_become_the_band_and_a_real_drop_fails_with_the_history(tmp_path: Path):
    for center in (100.0, 104.0, 97.0, 101.0):
        check, _ = _check(tmp_path, record=True)
        assert check.check(_measure(check, center, center + 1, center - 1)).outcome == "recorded"
    check, run_log = _check(tmp_path)
    decision = check.check(_measure(check, 50.0, 51.0, 49.0))
    assert decision.outcome == "REGRESSED"
    assert "outside the history band (4 sessions: min 97.00, median 100.50, max 104.00; this session 50.00" in (
        decision.message
    )
    result = next(iter(run_log.results.values()))
    assert result.histories["output_throughput"] == (100.0, 104.0, 97.0, 101.0)


def test_the_reports_baseline_is_the_verdicts_reference_never_another_kinds_session(tmp_path: Path):
    """A history of two machine kinds, the other kind's session newest: what results.json and the plots call the
    baseline is the value the verdict judged against (this kind's history center), not the other kind's 663."""
    for center in (1000.0, 980.0, 1010.0):
        check, _ = _check(tmp_path, record=True)
        check.check(_measure(check, center, center + 1, center - 1))
    path = tmp_path / "bl" / "cpu" / "tiny.json"
    other = session_entry(663.0, {**FP, "cpu_model": "Intel Xeon (AMX)"}, command="")
    key = next(iter(bl.load(path, "cpu", "tiny").entries))
    bl.append_session(path, "cpu", "tiny", key, other)
    check, run_log = _check(tmp_path)
    check.check(_measure(check, 990.0, 995.0, 985.0))
    result = next(iter(run_log.results.values()))
    (tput,) = [v for v in result.verdicts if v.metric == "output_throughput"]
    assert tput.baseline is not None and tput.baseline > 900
    assert result.baseline_medians["output_throughput"] == tput.baseline
    assert all(v > 900 for k, v in result.baseline_medians.items() if k == "output_throughput")


def test_an_inconclusive_item_skips_by_default_and_fails_a_nightly_that_asks(tmp_path: Path):
    check, _ = _check(tmp_path, record=True)
    check.check(_measure(check, 100.0, 101.0, 99.0))
    check, _ = _check(tmp_path, alpha=0.01)  # 3 against 3 cannot reach p <= 0.01
    decision = check.check(_measure(check, 50.0, 51.0, 49.0))
    assert decision.outcome == "inconclusive" and not decision.fails
    assert "neither passes nor fails" in decision.message and "smallest possible Mann-Whitney p is 0.050" in (
        decision.message
    )
    check, _ = _check(tmp_path, alpha=0.01, inconclusive="fail")
    decision = check.check(_measure(check, 50.0, 51.0, 49.0))
    assert decision.outcome == "inconclusive" and decision.fails and "--dsr1-inconclusive=fail" in decision.message


def test_config_verdicts_pool_the_items_of_a_config(tmp_path: Path):
    from pytest_dsr1.check import config_verdicts

    check, _ = _check(tmp_path, record=True)
    for i in range(4):
        check.check(_measure(check, 100.0, 101.0, 99.0, index=i))
    check, run_log = _check(tmp_path)
    for i, drop in enumerate((0.79, 0.82, 0.80, 0.83)):  # -20% everywhere: inside the CPU's 30% item tolerance
        decision = check.check(_measure(check, 100 * drop, 100 * drop + 1, 100 * drop - 1, index=i))
        assert decision.outcome == "passed"
    verdicts = config_verdicts(run_log, check.runner.matrix, {})
    by_metric = {v.metric: v for v in verdicts}
    assert by_metric["output_throughput"].items == 4
    assert by_metric["output_throughput"].change_pct == pytest.approx(-19.0, abs=1.0)


def test_the_config_floor_applies_once_there_is_a_band_and_never_without_one():
    ratios = [0.87, 0.88, 0.86, 0.89, 0.87, 0.88]  # -12.5% on every item
    steady = [1.0, 1.01, 0.99, 1.0, 1.02]  # earlier sessions within 2%: a band of about 4%
    assert judge_config("c", "output_throughput", ratios, 0.30, steady).verdict == OK  # the item tolerance rules
    floored = judge_config("c", "output_throughput", ratios, 0.30, steady, floor_rel=0.10)
    assert floored.verdict == REGRESSED and floored.allowed_pct == pytest.approx(10.0)
    # Without 3 earlier sessions there is no band, and the item tolerance stays the rule.
    assert judge_config("c", "output_throughput", ratios, 0.30, steady[:2], floor_rel=0.10).allowed_pct == 30.0
    # A band wider than the floor wins.
    drifting = [1.0, 0.8, 1.2, 0.9, 1.1]
    assert judge_config("c", "output_throughput", ratios, 0.30, drifting, floor_rel=0.10).allowed_pct > 10.0


def test_the_cpu_config_floor_catches_a_drop_inside_the_item_tolerance_and_a_cli_tolerance_overrides_it(
    tmp_path: Path,
):
    from pytest_dsr1.check import config_verdicts

    for center in (100.0, 102.0, 99.0, 101.0, 100.5):  # 5 steady sessions: a band far below the 15% floor
        check, _ = _check(tmp_path, record=True)
        for i in range(4):
            check.check(_measure(check, center, center + 1, center - 1, index=i))
    check, run_log = _check(tmp_path)
    for i, drop in enumerate((0.79, 0.82, 0.80, 0.81)):  # -20%: every item passes its 30% tolerance
        assert check.check(_measure(check, 100 * drop, 100 * drop + 1, 100 * drop - 1, index=i)).outcome == "passed"
    by_metric = {v.metric: v for v in config_verdicts(run_log, check.runner.matrix, {})}
    assert by_metric["output_throughput"].verdict == REGRESSED
    assert by_metric["output_throughput"].allowed_pct == pytest.approx(15.0)
    loose = {v.metric: v for v in config_verdicts(run_log, check.runner.matrix, {"output_throughput": Tolerance(0.3)})}
    assert loose["output_throughput"].verdict == OK and loose["output_throughput"].allowed_pct == pytest.approx(30.0)


# ---------------------------------------------------------------- ceilings: no gate too wide to fail


def test_a_history_too_wide_to_fail_is_inconclusive_never_ok(tmp_path: Path):
    """The AVX-512 history of cpu-tiny-tp2[balanced-bs16] as committed (four sessions two minutes apart, one that
    afternoon): its band allowed about +-105%, so a throughput of zero would have passed. With the default ceiling
    (50% on a throughput) the item is inconclusive, says why and on what the band rests, and fails under
    --dsr1-inconclusive=fail; a ceiling raised by the user cannot make a +-105% throughput gate judgeable."""
    for median in (1249.0, 978.0, 1065.0, 766.0, 510.0):
        check, _ = _check(tmp_path, record=True)
        check.check(_measure(check, median, median * 1.01, median * 0.99))
    check, _ = _check(tmp_path)
    decision = check.check(_measure(check, 1000.0, 1010.0, 990.0))
    assert decision.outcome == "inconclusive" and not decision.fails, decision.message
    assert re.search(r"output_throughput: too noisy to judge here \(allowed ±\d+\.\d%, ceiling ±50%", decision.message)
    assert re.search(r"the band rests on 5 session\(s\) on 1 day\(s\), within \d+ minutes", decision.message)
    strict, _ = _check(tmp_path, inconclusive="fail")
    assert strict.check(_measure(strict, 1000.0, 1010.0, 990.0)).fails
    raised, _ = _check(tmp_path, ceilings={"output_throughput": 2.0})  # a throughput's ceiling stays below 100%
    assert raised.check(_measure(raised, 1000.0, 1010.0, 990.0)).outcome == "inconclusive"


def test_a_metric_gated_only_by_an_option_has_its_ceiling_too():
    """mean_ttft_ms is off in the CPU matrix; --dsr1-tolerance may gate it, and its gate then has a ceiling."""
    from pytest_dsr1.matrix import load_matrix

    matrix = load_matrix(MATRIX)
    config = matrix.config("cpu-tiny-tp1")
    assert "mean_ttft_ms" not in matrix.tolerances_for(config)
    ceilings = matrix.ceilings_for(config)
    assert ceilings["mean_ttft_ms"] == 1.0 and ceilings["output_throughput"] == 0.5
    assert matrix.ceilings_for(config, {"*": 0.6, "mean_ttft_ms": 0.8})["mean_ttft_ms"] == 0.8

"""The item verdict and the config verdict on literal data: no pytest plugin, no vLLM, no runner, no file. Each
outcome once, and the next steps the verdict asks for while an item looks regressed."""

from __future__ import annotations

import statistics

import pytest

from pytest_dsr1.ab.judge import judge_ab_config
from pytest_dsr1.tolerance import Tolerance
from pytest_dsr1.verdict.config import judge_config
from pytest_dsr1.verdict.item import (
    FRESH_SERVER,
    MORE_RUNS,
    UNDECIDED_RUNS,
    Item,
    Progress,
    Reference,
    Rules,
    judge_item,
)
from pytest_dsr1.verdict.metric import compare_metric, detection_limit
from pytest_dsr1.verdict.outcomes import (
    ALPHA,
    B_SLOWER,
    INCONCLUSIVE,
    NO_DIFFERENCE,
    NOISE,
    OK,
    PASSED,
    REGRESSED,
    SKIPPED,
)

ITEM = Item("cpu-tiny-tp1[balanced-bs16]", "cpu-tiny-tp1", "vllm serve ...", "vllm bench serve ...", 16, None)
TEN = Tolerance(0.10)
TOL = {"output_throughput": TEN}
RULES = Rules(TOL)
START = Progress()


def reference(samples: list[float], history: tuple[float, ...] = ()) -> Reference:
    histories = {"output_throughput": history} if history else {}
    return Reference({"output_throughput": samples}, histories, {}, "recorded baseline of today (literal)", {})


def judge(measured: list[float], ref: Reference, rules: Rules = RULES, progress: Progress = START):
    return judge_item(ITEM, {"output_throughput": measured}, ref, rules, progress)


def test_a_clean_measurement_passes():
    judged = judge([101.0, 99.0, 100.0], reference([100.0, 100.5, 99.5]))
    assert judged.next_step is None and judged.decision is not None
    assert judged.decision.outcome == PASSED and [v.verdict for v in judged.verdicts] == [OK]


def test_a_clear_slowdown_regresses_with_its_commands():
    judged = judge([80.0, 81.0, 79.0, 80.0], reference([100.0, 101.0, 99.0, 100.0]))
    assert judged.decision is not None and judged.decision.outcome == REGRESSED and judged.decision.fails
    assert "vllm bench serve ..." in judged.decision.message


def test_a_slowdown_outside_the_history_band_regresses():
    judged = judge([70.0, 71.0, 69.0], reference([100.0], history=(100.0, 101.0, 99.0, 100.0, 102.0)))
    assert judged.decision is not None and judged.decision.outcome == REGRESSED
    assert "outside the history band" in judged.decision.message


def test_one_sample_against_one_cannot_decide_and_fails_only_when_strict():
    ref = reference([100.0])
    lenient = judge([80.0], ref).decision
    strict = judge([80.0], ref, Rules(TOL, inconclusive="fail")).decision
    assert lenient is not None and lenient.outcome == INCONCLUSIVE and not lenient.fails
    assert strict is not None and strict.outcome == INCONCLUSIVE and strict.fails


def test_every_tolerance_off_is_not_compared():
    judged = judge([80.0], reference([100.0]), Rules({}))
    assert judged.decision is not None and judged.decision.outcome == SKIPPED
    assert "tolerance is off for cpu-tiny-tp1" in judged.decision.message


def test_a_regressed_look_asks_for_more_runs_then_a_fresh_server_then_decides():
    ref, slow = reference([100.0, 101.0, 99.0, 100.0]), [80.0, 81.0, 79.0, 80.0]
    rules = Rules(TOL, extra_runs=1, fresh_server=True)
    first = judge(slow, ref, rules)
    assert first.next_step == MORE_RUNS and first.decision is None
    second = judge(slow, ref, rules, Progress(extra_runs=1))
    assert second.next_step == FRESH_SERVER
    last = judge([100.0, 99.0, 101.0, 100.0], ref, rules, Progress(0, second.verdicts))
    assert last.decision is not None and last.decision.outcome == PASSED
    assert "did not hold there: not a regression" in last.decision.message


@pytest.mark.parametrize(
    "ratios, verdict",
    [
        ([0.99, 1.01, 1.00, 0.98], OK),
        ([0.70, 0.72, 0.69, 0.71], REGRESSED),  # every item down together, beyond the allowed 10%
        ([0.50, 1.10, 0.60, 1.05], NOISE),  # the mean is down, the items disagree
        ([0.70], INCONCLUSIVE),  # one item is no config
    ],
)
def test_the_config_verdict_on_literal_ratios(ratios, verdict):
    assert judge_config("cpu-tiny-tp1", "output_throughput", ratios, 0.10).verdict == verdict


def test_the_ab_config_verdict_on_literal_starts():
    same = [("A", {"x": 100.0}), ("B", {"x": 100.5}), ("B", {"x": 99.5}), ("A", {"x": 100.2})]
    slower = [("A", {"x": 100.0}), ("B", {"x": 70.0}), ("B", {"x": 70.5}), ("A", {"x": 100.5})]
    assert judge_ab_config("c", "output_throughput", same, 0.10).verdict == NO_DIFFERENCE
    assert judge_ab_config("c", "output_throughput", slower, 0.10).verdict == B_SLOWER


# ---------------------------------------------------------------- detection limits


@pytest.mark.parametrize(
    "metric, baseline, measured, history",
    [
        ("output_throughput", [100.0, 101.0, 99.0, 100.0], [100.0, 102.0, 98.0, 99.0], ()),  # the noise test's reach
        ("mean_ttft_ms", [50.0, 51.0, 49.0, 50.0], [50.0, 70.0, 40.0, 52.0], ()),  # a wide spread: far above 10%
        ("output_throughput", [100.0], [101.0], (100.0, 90.0, 112.0, 97.0, 104.0)),  # the history band
    ],
)
def test_the_detection_limit_is_where_the_verdict_turns(metric, baseline, measured, history):
    """Moving the measured samples as a whole just past the limit regresses; just short of it does not."""
    limit = detection_limit(metric, baseline, measured, TEN, ALPHA, history)
    assert limit is not None and limit >= 10.0  # never inside the tolerance
    higher_is_better = metric == "output_throughput"
    now = statistics.median(measured)
    center = statistics.median(history or baseline)

    def verdict_at(pct: float) -> str:
        factor = 1 - pct / 100 if higher_is_better else 1 + pct / 100
        moved = [x * center * factor / now for x in measured]
        return compare_metric(metric, baseline, moved, TEN, ALPHA, history).verdict

    assert verdict_at(limit * 1.01) == REGRESSED
    assert verdict_at(limit * 0.99) != REGRESSED


def test_a_gate_that_cannot_fail_has_no_detection_limit():
    # 3 samples against 1 can never reach p <= 0.05; a band of +-100% on a throughput passes at zero.
    assert detection_limit("output_throughput", [100.0], [99.0, 100.0, 101.0], TEN) is None
    wide = (100.0, 10.0, 190.0, 100.0, 130.0)
    assert detection_limit("output_throughput", [100.0], [100.0], TEN, ALPHA, wide) is None


def test_the_config_detection_limit_is_the_allowed_change_or_the_intervals_half_width():
    tight = judge_config("c", "output_throughput", [0.99, 1.01, 1.00, 0.98], 0.10)
    assert tight.detection_pct == pytest.approx(10.0)
    spread = [0.70, 1.30, 1.00, 0.98]
    wide = judge_config("c", "output_throughput", spread, 0.10)
    assert wide.detection_pct is not None and wide.detection_pct > 10.0
    past = 1 - (wide.detection_pct + 1) / 100  # every item moved just past the limit from its measured change
    short = 1 - (wide.detection_pct - 1) / 100
    mean = wide.change_pct / 100 + 1
    assert judge_config("c", "output_throughput", [r / mean * past for r in spread], 0.10).verdict == REGRESSED
    assert judge_config("c", "output_throughput", [r / mean * short for r in spread], 0.10).verdict != REGRESSED
    assert judge_config("c", "output_throughput", [0.7], 0.10).detection_pct is None
    assert "output_throughput -10.0% or worse" in tight.caught()


def test_a_gate_at_its_ceiling_is_inconclusive_unless_it_regressed():
    wide = reference([100.0], history=(100.0, 60.0, 140.0, 100.0, 120.0))  # a band of about +-97%
    ceiling = Rules(TOL, ceilings={"output_throughput": 0.5})
    judged = judge([101.0, 100.0, 99.0], wide, ceiling)
    assert judged.decision is not None and judged.decision.outcome == INCONCLUSIVE
    assert "too noisy to judge here (allowed ±97.4%, ceiling ±50%" in judged.decision.message
    assert (
        judge([101.0, 100.0, 99.0], wide, Rules(TOL, ceilings={"output_throughput": 0.99})).decision.outcome == PASSED
    )
    collapsed = judge([1.0, 1.0, 1.0], wide, ceiling)  # a collapse beyond even the wide band still fails
    assert collapsed.decision is not None and collapsed.decision.outcome == REGRESSED


def test_a_config_at_its_ceiling_is_too_noisy():
    ratios, sessions = [0.99, 1.01, 1.00, 0.98], [1.0, 0.5, 1.5, 1.0, 1.2]  # a session spread of about +-100%
    verdict = judge_config("c", "output_throughput", ratios, 0.10, sessions, 0.15, ceiling_rel=0.5)
    assert verdict.verdict == INCONCLUSIVE and verdict.too_noisy and "too noisy to judge here" in verdict.reason
    assert judge_config("c", "output_throughput", ratios, 0.10, ceiling_rel=0.5).verdict == OK


# ---------------------------------------------------------------- buying power with time (the budget)

EDGE_HISTORY = (100.0, 101.0, 99.0, 100.0, 102.0)  # center 100, band under the 10% tolerance: the edge is 90


def test_an_item_whose_interval_holds_the_edge_asks_for_runs_the_budget_pays():
    ref, near = reference([100.0], history=EDGE_HISTORY), [85.0, 91.0, 97.0]  # median 91, the edge 90
    first = judge(near, ref, Rules(TOL, undecided_runs=3))
    assert [v.verdict for v in first.verdicts] == [OK] and first.next_step == UNDECIDED_RUNS
    assert "holds the edge of the allowed change, 90.0" in first.why and first.decision is None
    spent = judge(near, ref, Rules(TOL, undecided_runs=3), Progress(undecided_runs=3))
    assert spent.next_step is None and spent.decision is not None and spent.decision.outcome == PASSED
    no_budget = judge(near, ref, Rules(TOL))
    assert no_budget.next_step is None and no_budget.decision is not None


@pytest.mark.parametrize("measured", [[100.0, 101.0, 99.0], [70.0, 71.0, 69.0]], ids=["clear pass", "clear failure"])
def test_a_clear_verdict_costs_nothing(measured):
    judged = judge(measured, reference([100.0], history=EDGE_HISTORY), Rules(TOL, undecided_runs=3))
    assert judged.next_step is None and judged.decision is not None


def test_a_noise_verdict_is_undecided_and_asks_for_runs():
    judged = judge([80.0, 120.0, 85.0, 70.0], reference([100.0, 101.0, 99.0, 100.0]), Rules(TOL, undecided_runs=2))
    assert [v.verdict for v in judged.verdicts] == [NOISE] and judged.next_step == UNDECIDED_RUNS
    assert "the noise test could not tell" in judged.why


def test_too_few_samples_are_undecided_only_where_more_runs_could_reach_alpha():
    ref = reference([100.0, 100.5, 99.5])
    two = judge([80.0, 80.5], ref, Rules(TOL, undecided_runs=1))  # 2 against 3: p >= 0.1; 3 against 3 reach 0.05
    assert [v.verdict for v in two.verdicts] == [INCONCLUSIVE] and two.next_step == UNDECIDED_RUNS
    one = judge([80.0], reference([100.0]), Rules(TOL, undecided_runs=3))  # against 1 sample: never
    assert one.next_step is None and one.decision is not None and one.decision.outcome == INCONCLUSIVE


def test_a_config_whose_allowed_change_is_beyond_a_throughputs_fall_says_so():
    wide = judge_config("cpu-tiny-tp2", "output_throughput", [1.0, 1.1, 0.9], 0.3, (0.3, 1.0, 3.0, 1.0, 0.4))
    assert wide.allowed_pct >= 100 and wide.detection_pct is None
    assert "is more than a throughput can fall" in wide.caught()
    one = judge_config("cpu-tiny-tp2", "output_throughput", [1.0], 0.3)
    assert one.caught() == "output_throughput: no change (fewer than 2 items compared)"

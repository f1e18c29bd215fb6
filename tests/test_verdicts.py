"""Tolerance expressions and every verdict case of the comparison."""

import argparse

import pytest

from pytest_dsr1.tolerance import Tolerance, ToleranceError, parse_tolerance, parse_tolerance_override
from pytest_dsr1.verdict.metric import compare, compare_metric
from pytest_dsr1.verdict.outcomes import IMPROVED, INCONCLUSIVE, NOISE, NOT_COMPARED, OK, REGRESSED, STALE


@pytest.mark.parametrize(
    "expr, rel, abs_", [("10%", 0.10, 0.0), ("15%:5", 0.15, 5.0), (" 2.5 % : 0.5 ", 0.025, 0.5), ("0%:1", 0.0, 1.0)]
)
def test_parse_tolerance(expr, rel, abs_):
    t = parse_tolerance(expr)
    assert (t.rel, t.abs) == pytest.approx((rel, abs_))


@pytest.mark.parametrize("expr", ["10", "ten%", "-5%", "10%:", "10%:x", "5000%", ""])
def test_bad_tolerance(expr):
    with pytest.raises(ToleranceError):
        parse_tolerance(expr)


def test_tolerance_override_is_an_argparse_type():
    assert parse_tolerance_override("mean_ttft_ms=15%:5") == ("mean_ttft_ms", Tolerance(0.15, 5))
    assert parse_tolerance_override("*=10%")[0] == "*"
    for bad in ("mean_ttft_ms", "nosuch=10%", "mean_ttft_ms=abc"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_tolerance_override(bad)


def test_absolute_floor_absorbs_jitter_on_small_values():
    # 0.2 ms on a 1 ms ITL is +20%, but within the 0.5 ms floor.
    v = compare_metric("mean_itl_ms", [1.0], [1.2], Tolerance(0.10, 0.5))
    assert v.verdict == OK and v.allowed == 0.5


T10 = Tolerance(0.10)


@pytest.mark.parametrize(
    "metric, base, meas, verdict",
    [
        ("output_throughput", [100.0], [95.0], OK),  # -5% within 10%
        ("output_throughput", [100.0], [85.0], INCONCLUSIVE),  # -15%, one sample: no test can tell
        ("output_throughput", [100.0], [115.0], IMPROVED),  # +15%: better, under 3x tolerance
        ("output_throughput", [100.0], [150.0], STALE),  # +50%: re-record?
        ("mean_ttft_ms", [100.0, 101, 99], [115.0, 116, 114], REGRESSED),  # latency up, separated
        ("mean_ttft_ms", [100.0], [80.0], IMPROVED),  # latency down
        ("mean_ttft_ms", [100.0], [50.0], STALE),
        ("output_throughput", [], [100.0], NOT_COMPARED),  # metric absent from the baseline
        ("output_throughput", [100.0], [], NOT_COMPARED),
        ("output_throughput", [100, 101, 99, 100], [80, 81, 79, 80], REGRESSED),  # significant
        ("output_throughput", [100, 60, 140, 100], [85, 84, 140, 60], NOISE),  # median -15% but overlapping
    ],
)
def test_verdict_cases(metric, base, meas, verdict):
    v = compare_metric(metric, [float(x) for x in base], [float(x) for x in meas], T10)
    assert v.verdict == verdict, v.reason
    assert v.failed == (verdict == REGRESSED)


def test_too_few_samples_says_inconclusive_not_regressed():
    v = compare_metric("output_throughput", [100.0, 100.0], [50.0, 50.0], T10)
    assert v.verdict == INCONCLUSIVE and not v.failed
    assert "cannot reach p <= 0.05 (the smallest possible Mann-Whitney p is 0.167)" in v.reason


def test_significant_regression_reports_p_value():
    v = compare_metric("mean_tpot_ms", [10.0, 10.1, 9.9], [12.0, 12.1, 11.9], T10)
    assert v.verdict == REGRESSED and v.p_value is not None and v.p_value <= 0.05
    assert v.change_pct == pytest.approx(20.0)


def test_compare_covers_every_metric_with_a_tolerance_in_metric_order():
    out = compare(
        {"output_throughput": [1.0], "mean_ttft_ms": [1.0], "mean_tpot_ms": [1.0]},
        {"output_throughput": [1.0], "mean_tpot_ms": [1.0]},
        {"mean_ttft_ms": T10, "output_throughput": T10},
    )
    assert [(v.metric, v.verdict) for v in out] == [("output_throughput", OK), ("mean_ttft_ms", NOT_COMPARED)]

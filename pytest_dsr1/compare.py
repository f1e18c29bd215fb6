"""Measured samples vs baseline samples + tolerance -> a verdict per metric, with its reason.

A metric regresses when its median moved the wrong way by more than the tolerance allows AND, with enough
samples on both sides, a one-sided Mann-Whitney U test says the shift is unlikely to be noise. With too few
samples the tolerance alone decides, and the verdict says so.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from pytest_dsr1.metrics import METRICS
from pytest_dsr1.tolerance import Tolerance

OK, REGRESSED, NOISE, IMPROVED, STALE, NOT_COMPARED = "ok", "REGRESSED", "noise", "improved", "stale", "not compared"
MIN_SAMPLES_FOR_TEST = 3  # below this on either side, Mann-Whitney cannot reach p <= 0.05
STALE_FACTOR = 3.0  # an improvement beyond 3x the tolerance suggests re-recording


@dataclass(frozen=True)
class MetricVerdict:
    metric: str
    baseline: float | None
    measured: float | None
    allowed: float | None  # absolute allowed change in the metric's unit
    tolerance: str
    verdict: str
    reason: str = ""
    p_value: float | None = None
    baseline_samples: tuple[float, ...] = ()
    measured_samples: tuple[float, ...] = ()

    @property
    def change_pct(self) -> float | None:
        if self.baseline in (None, 0) or self.measured is None:
            return None
        return (self.measured - self.baseline) / self.baseline * 100

    @property
    def failed(self) -> bool:
        return self.verdict == REGRESSED


def compare_metric(
    metric: str, baseline: list[float], measured: list[float], tol: Tolerance, alpha: float = 0.05
) -> MetricVerdict:
    info = METRICS[metric]
    if not baseline or not measured:
        what = "baseline" if not baseline else "this run"
        return MetricVerdict(
            metric,
            _med(baseline),
            _med(measured),
            None,
            str(tol),
            NOT_COMPARED,
            f"no {metric} in {what}",
            None,
            tuple(baseline),
            tuple(measured),
        )
    b, m = statistics.median(baseline), statistics.median(measured)
    allowed = tol.allowed(b)
    delta = m - b
    worse = delta < 0 if info.higher_is_better else delta > 0
    common = dict(baseline_samples=tuple(baseline), measured_samples=tuple(measured))
    if abs(delta) <= allowed:
        return MetricVerdict(metric, b, m, allowed, str(tol), OK, "within tolerance", **common)
    if not worse:
        if abs(delta) > STALE_FACTOR * allowed:
            pct = abs(delta) / b * 100 if b else float("inf")
            return MetricVerdict(
                metric,
                b,
                m,
                allowed,
                str(tol),
                STALE,
                f"{'faster' if info.higher_is_better or metric.endswith('_ms') else 'better'} than baseline by {pct:.0f}%: re-record?",
                **common,
            )
        return MetricVerdict(
            metric, b, m, allowed, str(tol), IMPROVED, "better than baseline beyond tolerance", **common
        )
    n = min(len(baseline), len(measured))
    if n < MIN_SAMPLES_FOR_TEST:
        return MetricVerdict(
            metric,
            b,
            m,
            allowed,
            str(tol),
            REGRESSED,
            f"beyond tolerance; tolerance only (n={len(baseline)} baseline vs {len(measured)} measured: too few samples for a noise test)",
            **common,
        )
    try:
        p = _mann_whitney_p(baseline, measured, info.higher_is_better)
    except ImportError:
        return MetricVerdict(
            metric,
            b,
            m,
            allowed,
            str(tol),
            REGRESSED,
            "beyond tolerance; tolerance only (scipy is not installed: no noise test)",
            **common,
        )
    if p <= alpha:
        return MetricVerdict(
            metric,
            b,
            m,
            allowed,
            str(tol),
            REGRESSED,
            f"beyond tolerance and significant (Mann-Whitney p={p:.3f} <= {alpha})",
            p,
            **common,
        )
    return MetricVerdict(
        metric,
        b,
        m,
        allowed,
        str(tol),
        NOISE,
        f"beyond tolerance but within noise (Mann-Whitney p={p:.3f} > {alpha})",
        p,
        **common,
    )


def _mann_whitney_p(baseline: list[float], measured: list[float], higher_is_better: bool) -> float:
    from scipy.stats import mannwhitneyu

    # One-sided: is `measured` stochastically worse than `baseline`?
    alternative = "less" if higher_is_better else "greater"
    return float(mannwhitneyu(measured, baseline, alternative=alternative).pvalue)


def _med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def compare(
    baseline: dict[str, list[float]],
    measured: dict[str, list[float]],
    tolerances: dict[str, Tolerance],
    metrics: tuple[str, ...],
    alpha: float = 0.05,
) -> list[MetricVerdict]:
    return [
        compare_metric(name, baseline.get(name, []), measured.get(name, []), tolerances[name], alpha)
        for name in metrics
    ]


def regressed(verdicts: list[MetricVerdict]) -> list[MetricVerdict]:
    return [v for v in verdicts if v.failed]

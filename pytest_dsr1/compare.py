"""Measured samples vs baseline samples + tolerance -> a verdict per metric, with its reason.

A metric regresses when its median moved the wrong way by more than the tolerance allows AND, with enough
samples on both sides, a one-sided Mann-Whitney U test says the shift is unlikely to be noise. With too few
samples the tolerance alone decides, and the verdict says so.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pytest_dsr1.metrics import METRICS
from pytest_dsr1.tolerance import Tolerance

Verdict = Literal["ok", "REGRESSED", "noise", "improved", "stale", "not compared"]
OK: Final = "ok"
REGRESSED: Final = "REGRESSED"
NOISE: Final = "noise"
IMPROVED: Final = "improved"
STALE: Final = "stale"
NOT_COMPARED: Final = "not compared"
# Changes beyond tolerance, whatever the noise test said: what a reader of a report must see.
BEYOND_TOLERANCE: tuple[Verdict, ...] = (REGRESSED, NOISE, STALE, IMPROVED)
MIN_SAMPLES_FOR_TEST = 3  # below this on either side, Mann-Whitney cannot reach p <= 0.05
STALE_FACTOR = 3.0  # an improvement beyond 3x the tolerance suggests re-recording


def median_or_none(xs: Sequence[float] | None) -> float | None:
    return statistics.median(xs) if xs else None


@dataclass(frozen=True)
class MetricVerdict:
    metric: str
    baseline: float | None
    measured: float | None
    allowed: float | None  # absolute allowed change in the metric's unit
    tolerance: str
    verdict: Verdict
    reason: str = ""
    p_value: float | None = None
    baseline_samples: tuple[float, ...] = ()
    measured_samples: tuple[float, ...] = ()

    @property
    def change_pct(self) -> float | None:
        if not self.baseline or self.measured is None:
            return None
        return (self.measured - self.baseline) / self.baseline * 100

    @property
    def failed(self) -> bool:
        return self.verdict == REGRESSED


def compare_metric(
    metric: str, baseline: Sequence[float], measured: Sequence[float], tol: Tolerance, alpha: float = 0.05
) -> MetricVerdict:
    info = METRICS[metric]
    samples = {"baseline_samples": tuple(baseline), "measured_samples": tuple(measured)}

    def verdict(verdict: Verdict, reason: str, p: float | None = None) -> MetricVerdict:
        return MetricVerdict(
            metric, median_or_none(baseline), median_or_none(measured), allowed, str(tol), verdict, reason, p, **samples
        )

    if not baseline or not measured:
        allowed = None
        return verdict(NOT_COMPARED, f"no {metric} in {'baseline' if not baseline else 'this run'}")
    b, m = statistics.median(baseline), statistics.median(measured)
    allowed = tol.allowed(b)
    delta = m - b
    worse = delta < 0 if info.higher_is_better else delta > 0
    if abs(delta) <= allowed:
        return verdict(OK, "within tolerance")
    if not worse:
        if abs(delta) > STALE_FACTOR * allowed:
            pct = abs(delta) / b * 100 if b else float("inf")
            better = "faster" if info.higher_is_better or metric.endswith("_ms") else "better"
            return verdict(STALE, f"{better} than baseline by {pct:.0f}%: re-record?")
        return verdict(IMPROVED, "better than baseline beyond tolerance")
    if min(len(baseline), len(measured)) < MIN_SAMPLES_FOR_TEST:
        return verdict(
            REGRESSED,
            f"beyond tolerance; tolerance only (n={len(baseline)} baseline vs {len(measured)} measured: "
            "too few samples for a noise test)",
        )
    p = _mann_whitney_p(baseline, measured, info.higher_is_better)
    if p <= alpha:
        return verdict(REGRESSED, f"beyond tolerance and significant (Mann-Whitney p={p:.3f} <= {alpha})", p)
    return verdict(NOISE, f"beyond tolerance but within noise (Mann-Whitney p={p:.3f} > {alpha})", p)


def _mann_whitney_p(baseline: Sequence[float], measured: Sequence[float], higher_is_better: bool) -> float:
    from scipy.stats import mannwhitneyu

    # One-sided: is `measured` stochastically worse than `baseline`?
    alternative: Literal["less", "greater"] = "less" if higher_is_better else "greater"
    return float(mannwhitneyu(list(measured), list(baseline), alternative=alternative).pvalue)


def compare(
    baseline: Mapping[str, Sequence[float]],
    measured: Mapping[str, Sequence[float]],
    tolerances: Mapping[str, Tolerance],
    alpha: float = 0.05,
) -> list[MetricVerdict]:
    """A verdict for each gated metric (each metric with a tolerance), in the order of METRICS."""
    return [
        compare_metric(name, baseline.get(name, ()), measured.get(name, ()), tolerances[name], alpha)
        for name in METRICS
        if name in tolerances
    ]


def regressed(verdicts: Iterable[MetricVerdict]) -> list[MetricVerdict]:
    return [v for v in verdicts if v.failed]

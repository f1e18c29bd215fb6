"""Measured samples vs a baseline + tolerance -> a verdict per metric, with its reason.

With a history of at least 3 sessions, the reference is the median of the session medians, and the allowed
change is the larger of the tolerance and a band from the measured spread of those medians (3 robust standard
deviations, from the MAD): the between-session noise, measured instead of guessed. A session median outside
it is a regression; no test on one session's samples can see that noise, so none is asked.

With fewer sessions, a metric regresses when its median moved the wrong way by more than the tolerance allows
AND a one-sided Mann-Whitney U test on the samples says the shift is unlikely to be noise. When the sample
sizes cannot reach p <= alpha at all (3 against 3 reach 0.05 at best), the verdict is `inconclusive`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from pytest_dsr1.metric_catalog import METRICS, can_worsen_by
from pytest_dsr1.tolerance import Tolerance
from pytest_dsr1.verdict.outcomes import (
    ALPHA,
    IMPROVED,
    INCONCLUSIVE,
    NOISE,
    NOT_COMPARED,
    OK,
    REGRESSED,
    STALE,
    Verdict,
    is_worse,
)

STALE_FACTOR = 3.0  # an improvement beyond 3x the tolerance suggests re-recording
MIN_SESSIONS_FOR_BAND = 3  # below this, the spread of session medians says nothing: the tolerance decides
BAND_Z = 3.0  # robust standard deviations: a clean session falls outside about 0.3% of the time (normal)
MAD_TO_SIGMA = 1.4826  # the MAD of a normal sample, scaled to its standard deviation


def t95(df: int) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom: the half width of a mean's 95%
    interval, in standard errors."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def smallest_p(n_baseline: int, n_measured: int) -> float:
    """The smallest one-sided exact Mann-Whitney p these sample sizes can give (complete separation)."""
    return 1.0 / math.comb(n_baseline + n_measured, n_baseline)


@dataclass(frozen=True)
class History:
    """One value per recorded session (a metric's session medians, or a config's ratio), oldest first."""

    values: tuple[float, ...]

    @property
    def center(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """A robust standard deviation: 1.4826 x the median absolute deviation."""
        center = self.center
        return MAD_TO_SIGMA * statistics.median(abs(v - center) for v in self.values)

    def band(self) -> float | None:
        """The change a clean session stays within (absolute, in the values' unit); None below 3 sessions.
        The sqrt(1 + 1/n) widens it for the uncertainty of the center itself on short histories."""
        n = len(self.values)
        if n < MIN_SESSIONS_FOR_BAND:
            return None
        return BAND_Z * self.spread * math.sqrt(1 + 1 / n)

    def describe(self, current: float) -> str:
        values = sorted(self.values)
        below = sum(v < current for v in values)
        where = (
            "below all of them"
            if below == 0
            else "above all of them"
            if below == len(values)
            else f"above {below} of {len(values)}"
        )
        return (
            f"{len(values)} sessions: min {_fmt(values[0])}, median {_fmt(self.center)}, max {_fmt(values[-1])}; "
            f"this session {_fmt(current)}, {where}"
        )


def _fmt(x: float) -> str:
    return f"{x:,.2f}" if abs(x) < 1e5 else f"{x:,.0f}"


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
    history: tuple[float, ...] = ()  # the session medians the band came from, when there were 3 or more
    # The smallest change in the bad direction (% of the reference) this comparison would judge REGRESSED; None:
    # no change could (too few samples to reach alpha, or an allowed change that a throughput cannot pass).
    detection_pct: float | None = None

    @property
    def change_pct(self) -> float | None:
        if not self.baseline or self.measured is None:
            return None
        return (self.measured - self.baseline) / self.baseline * 100

    @property
    def failed(self) -> bool:
        return self.verdict == REGRESSED


def compare_metric(
    metric: str,
    baseline: Sequence[float],
    measured: Sequence[float],
    tol: Tolerance,
    alpha: float = ALPHA,
    history: Sequence[float] = (),
) -> MetricVerdict:
    """`baseline`: the newest comparable session's samples; `history`: every comparable session's median."""
    info = METRICS[metric]
    past = History(tuple(history))
    band = past.band() if baseline and measured else None
    center = past.center if band is not None else median_or_none(baseline)
    allowed: float | None = None

    def verdict(verdict: Verdict, reason: str, p: float | None = None) -> MetricVerdict:
        return MetricVerdict(
            metric,
            center,
            median_or_none(measured),
            allowed,
            str(tol),
            verdict,
            reason,
            p,
            tuple(baseline),
            tuple(measured),
            past.values if band is not None else (),
        )

    if not baseline or not measured or center is None:
        return verdict(NOT_COMPARED, f"no {metric} in {'baseline' if not baseline else 'this run'}")
    m = statistics.median(measured)
    allowed = max(tol.allowed(center), band or 0.0)
    delta = m - center
    worse = is_worse(metric, delta)
    within = "within the history band" if band is not None and band > tol.allowed(center) else "within tolerance"
    if abs(delta) <= allowed:
        return verdict(OK, within)
    if not worse:
        if abs(delta) > STALE_FACTOR * allowed:
            pct = abs(delta) / center * 100 if center else float("inf")
            better = "faster" if info.higher_is_better or metric.endswith("_ms") else "better"
            return verdict(STALE, f"{better} than baseline by {pct:.0f}%: re-record?")
        return verdict(IMPROVED, "better than baseline beyond tolerance")
    if band is not None:
        return verdict(REGRESSED, f"outside the history band ({past.describe(m)})")
    floor = smallest_p(len(baseline), len(measured))
    if floor > alpha:
        return verdict(
            INCONCLUSIVE,
            f"beyond tolerance, but {len(baseline)} baseline vs {len(measured)} measured samples cannot reach "
            f"p <= {alpha} (the smallest possible Mann-Whitney p is {floor:.3f}): record more samples or sessions",
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


DETECTION_STEPS = 16  # bisection steps: the limit to about 2e-5 of its range


def detection_limit(
    metric: str,
    baseline: Sequence[float],
    measured: Sequence[float],
    tol: Tolerance,
    alpha: float = ALPHA,
    history: Sequence[float] = (),
) -> float | None:
    """The smallest change of the metric in its bad direction, in % of the reference, that this comparison would
    judge REGRESSED: the measured samples are moved as a whole, their spread kept, until the verdict turns. With a
    history band that is the allowed change; without one, the noise test's reach counts too (3 samples against 1
    can never reach p <= 0.05). None where no change could: the gate cannot fail."""
    if not baseline or not measured:
        return None
    past = History(tuple(history))
    band = past.band()
    center = past.center if band is not None else statistics.median(baseline)
    now = statistics.median(measured)
    if center <= 0 or now <= 0:
        return None
    higher_is_better = METRICS[metric].higher_is_better
    if band is not None:  # a session median beyond the band regresses, with no test on the samples
        limit = max(tol.allowed(center), band) / center
        return limit * 100 if can_worsen_by(metric, limit) else None

    def caught(x: float) -> bool:
        scale = center * ((1 - x) if higher_is_better else (1 + x)) / now
        moved = [v * scale for v in measured]
        return compare_metric(metric, baseline, moved, tol, alpha, history).verdict == REGRESSED

    low, high = 0.0, (0.999 if higher_is_better else 100.0)  # a throughput cannot drop by 100% or more
    if not caught(high):
        return None
    for _ in range(DETECTION_STEPS):
        middle = (low + high) / 2
        low, high = (low, middle) if caught(middle) else (middle, high)
    return high * 100


def compare(
    baseline: Mapping[str, Sequence[float]],
    measured: Mapping[str, Sequence[float]],
    tolerances: Mapping[str, Tolerance],
    alpha: float = ALPHA,
    histories: Mapping[str, Sequence[float]] | None = None,
) -> list[MetricVerdict]:
    """A verdict for each gated metric (each metric with a tolerance), in the order of METRICS, each with its
    detection limit."""
    histories = histories or {}
    out = []
    for name in (m for m in METRICS if m in tolerances):
        args = (name, baseline.get(name, ()), measured.get(name, ()), tolerances[name], alpha, histories.get(name, ()))
        out.append(replace(compare_metric(*args), detection_pct=detection_limit(*args)))
    return out


def regressed(verdicts: Iterable[MetricVerdict]) -> list[MetricVerdict]:
    return [v for v in verdicts if v.failed]


def inconclusive(verdicts: Iterable[MetricVerdict]) -> list[MetricVerdict]:
    return [v for v in verdicts if v.verdict == INCONCLUSIVE]


# ---------------------------------------------------------------- per config

"""A config's verdict pools its items: the geometric mean of their measured/reference ratios, with a 95%
interval over the items, against the config's tolerance or the spread of the same mean in earlier sessions.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pytest_dsr1.matrix import Matrix, ServerConfig
from pytest_dsr1.metric_catalog import METRICS, can_worsen_by
from pytest_dsr1.tolerance import Tolerance
from pytest_dsr1.verdict.metric import History, MetricVerdict, t95
from pytest_dsr1.verdict.outcomes import (
    INCONCLUSIVE,
    NOISE,
    NOT_COMPARED,
    OK,
    REGRESSED,
    AbOutcome,
    Verdict,
    is_worse,
    judgeable_ceiling,
    worsening,
)


@dataclass(frozen=True)
class ConfigVerdict:
    """All of a config's items on one metric: the geometric mean of measured/reference, with a 95% interval."""

    config_id: str
    metric: str
    items: int
    change_pct: float
    low_pct: float
    high_pct: float
    allowed_pct: float
    verdict: Verdict | AbOutcome  # AbOutcome in an A/B run's (AbConfigVerdict)
    reason: str
    # The smallest move of all items together in the bad direction (%) this verdict would judge REGRESSED: the
    # allowed change, or the interval's half width where that is wider. None: none could (fewer than 2 items).
    detection_pct: float | None = None
    ceiling_pct: float | None = None  # set where the allowed change reached it: too noisy to judge here

    @property
    def failed(self) -> bool:
        return self.verdict == REGRESSED

    @property
    def too_noisy(self) -> bool:
        return self.verdict == INCONCLUSIVE and self.ceiling_pct is not None

    def caught(self) -> str:
        """What this verdict could have seen: 'output_throughput -27.0% or worse', or that it could see nothing."""
        if self.detection_pct is None:
            why = (
                "fewer than 2 items compared"
                if self.items < 2
                else f"its allowed change, ±{self.allowed_pct:.1f}%, is more than a throughput can fall"
            )
            return f"{self.metric}: no change ({why})"
        sign = "-" if METRICS[self.metric].higher_is_better else "+"
        return f"{self.metric} {sign}{self.detection_pct:.1f}% or worse"

    def line(self) -> str:
        return (
            f"{self.config_id}: {self.change_pct:+.1f}% [{self.low_pct:+.1f}, {self.high_pct:+.1f}] over "
            f"{self.items} items ({self.metric}, allowed ±{self.allowed_pct:.1f}%): {self.verdict}"
        )


def judge_config(
    config_id: str,
    metric: str,
    ratios: Sequence[float],
    tolerance_rel: float,
    session_ratios: Sequence[float] = (),
    floor_rel: float | None = None,
    ceiling_rel: float | None = None,
) -> ConfigVerdict:
    """`ratios`: each item's measured median / its reference, for one metric. `session_ratios`: the same
    geometric mean for each earlier session against the history, from which a band is measured (3 or more).
    `floor_rel`: the config-level floor once there is a band (the matrix's config_tolerance); without a band,
    or without a floor, the item tolerance is the allowed change. `ceiling_rel`: the widest allowed change that
    may still pass; at or beyond it, a verdict that did not regress is inconclusive (too noisy to judge here).

    A config regresses when the geometric mean moved the wrong way beyond the allowed change AND the 95%
    interval over the items lies wholly on the wrong side: one item's noise cannot do that, a slower kernel can.
    """
    logs = [math.log(r) for r in ratios if r > 0]
    n = len(logs)
    allowed = tolerance_rel
    past = History(tuple(session_ratios))
    band = past.band()
    if band is not None:
        allowed = max(tolerance_rel if floor_rel is None else floor_rel, band)
    if n < 2:
        change = (math.exp(logs[0]) - 1) * 100 if logs else 0.0
        return ConfigVerdict(
            config_id, metric, n, change, change, change, allowed * 100, INCONCLUSIVE, "fewer than 2 items compared"
        )
    mean = statistics.fmean(logs)
    half = t95(n - 1) * statistics.stdev(logs) / math.sqrt(n)
    change, low, high = ((math.exp(x) - 1) * 100 for x in (mean, mean - half, mean + half))
    worse = worsening(metric, change) > allowed * 100
    significant = is_worse(metric, low) and is_worse(metric, high)  # the whole interval on the bad side
    if worse and significant:
        verdict: Verdict = REGRESSED
        reason = "all items moved the wrong way together beyond the allowed change"
    elif worse:
        verdict, reason = NOISE, "beyond the allowed change, but the items disagree (the interval crosses 0)"
    else:
        verdict, reason = OK, "within the allowed change"
    if band is not None:
        reason += f"; allowed from {len(past.values)} sessions' spread and the tolerance"
    caught = config_detection_limit(metric, allowed, half)
    if ceiling_rel is not None:
        ceiling_rel = judgeable_ceiling(metric, ceiling_rel)
    if ceiling_rel is not None and verdict != REGRESSED and allowed >= ceiling_rel:
        source = f"the band rests on {len(past.values)} session(s)" if band is not None else "the tolerance"
        reason = f"too noisy to judge here (allowed ±{allowed * 100:.1f}%, ceiling ±{ceiling_rel * 100:.0f}%; {source})"
        return ConfigVerdict(
            config_id, metric, n, change, low, high, allowed * 100, INCONCLUSIVE, reason, caught, ceiling_rel * 100
        )
    return ConfigVerdict(config_id, metric, n, change, low, high, allowed * 100, verdict, reason, caught)


def config_detection_limit(metric: str, allowed: float, half: float) -> float | None:
    """The smallest common move of the items (%, bad direction) that is both beyond `allowed` and far enough for
    the interval (half width `half`, in logs) to clear 0: shifting every log ratio by d moves the interval as a
    whole. None where no move could: a throughput cannot fall by 100%."""
    needed = 1 - math.exp(-half) if METRICS[metric].higher_is_better else math.exp(half) - 1
    limit = max(allowed, needed)
    return limit * 100 if can_worsen_by(metric, limit) else None


def config_floor(config: ServerConfig, metric: str, overrides: Mapping[str, Tolerance]) -> float | None:
    """The config level's allowed change where it differs from the item tolerance (the matrix's config_tolerance),
    for baseline and A/B runs alike. None where --dsr1-tolerance names the metric (or '*'): the user's word is for
    both levels."""
    return None if metric in overrides or "*" in overrides else config.config_tolerance


def judge_configs(
    by_config: Mapping[str, list[tuple[MetricVerdict, tuple[float, ...]]]],
    matrix: Matrix,
    overrides: Mapping[str, Tolerance],
    ceilings: Mapping[str, float] | None = None,
) -> list[ConfigVerdict]:
    """The config-level verdicts from each config's item verdicts, each with its metric's session medians.

    An item's ratio is its measured median over its reference (the history's center, or the newest session's
    median). With 3 or more sessions on every item, each earlier session gets the same geometric mean against
    the items' centers, and their spread gives the config's band; the sessions are aligned from the newest.
    `ceilings`: --dsr1-ceiling's overrides of the matrix's ceilings ({}: the matrix's); None: no ceiling.
    """
    out = []
    for config_id, all_pairs in by_config.items():
        pairs = [(v, h) for v, h in all_pairs if v.verdict != NOT_COMPARED and v.baseline and v.measured]
        config = matrix.config(config_id)
        tolerances = matrix.tolerances_for(config, overrides)
        config_ceilings = None if ceilings is None else matrix.ceilings_for(config, ceilings)
        for metric in METRICS:
            items = [(v, h) for v, h in pairs if v.metric == metric]
            if not items or metric not in tolerances:
                continue
            ratios = [v.measured / v.baseline for v, _ in items if v.measured and v.baseline]
            floor = config_floor(config, metric, overrides)
            ceiling = None if config_ceilings is None else config_ceilings[metric]
            rel = tolerances[metric].rel
            out.append(judge_config(config_id, metric, ratios, rel, session_ratios(items), floor, ceiling))
    return out


def session_ratios(items: list[tuple[MetricVerdict, tuple[float, ...]]]) -> list[float]:
    """The geometric mean over the items of (session median / the item's history center), per earlier session."""
    depth = min(len(h) for _, h in items)
    if depth < 3:
        return []
    histories = [(h, History(h).center) for _, h in items]
    ratios = []
    for back in range(depth, 0, -1):
        logs = [math.log(h[-back] / center) for h, center in histories if h[-back] > 0 and center > 0]
        if logs:
            ratios.append(math.exp(statistics.fmean(logs)))
    return ratios

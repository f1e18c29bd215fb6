"""B against A: per item and gated metric from the start medians (Welch on logs, an interval at 1 - 2 alpha),
and per config start by start. Pure: data in, verdicts out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from pytest_dsr1.ab.data import AbConfigVerdict, AbRun, AbStart, AbVerdict
from pytest_dsr1.ab.report import ab_table
from pytest_dsr1.matrix import Matrix, split_item_key
from pytest_dsr1.metric_catalog import METRICS
from pytest_dsr1.tolerance import Tolerance
from pytest_dsr1.verdict.config import config_floor
from pytest_dsr1.verdict.item import Decision, Item, Rules, inconclusive_decision, server_context, tolerances_off
from pytest_dsr1.verdict.outcomes import (
    ALPHA,
    B_FASTER,
    B_SLOWER,
    FAILED,
    INCONCLUSIVE,
    NO_DIFFERENCE,
    PASSED,
    REGRESSED,
    AbOutcome,
)
from pytest_dsr1.verdict.text import server_side_text


def _welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """mean(b) - mean(a), its standard error and Welch's degrees of freedom."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return statistics.fmean(b) - statistics.fmean(a), 0.0, float(len(a) + len(b) - 2)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return statistics.fmean(b) - statistics.fmean(a), se, df


def judge_ab(
    metric: str, a_starts: Sequence[float], b_starts: Sequence[float], tol: Tolerance, alpha: float = ALPHA
) -> AbVerdict:
    """B's start medians against A's on one metric: the change with its interval, the test and the verdict.

    One interval serves every verdict: at level 1 - 2 alpha (90% at alpha 0.05) its bounds are the one-sided
    tests at alpha. B slower: the interval wholly beyond the margin on the worse side (p of "no worse than the
    margin" <= alpha); B faster, the same on the better side; no difference: the interval within +-margin
    (equivalence); inconclusive otherwise."""
    a, b = tuple(a_starts), tuple(b_starts)
    center = statistics.median(a) if a else 0.0
    margin = tol.allowed(center) / center if center > 0 else tol.rel
    level = 1 - 2 * alpha
    if len(a) < 2 or len(b) < 2:
        why = f"{len(a)} A and {len(b)} B starts measured: each side needs 2 or more"
        return AbVerdict(metric, a, b, None, None, None, None, margin * 100, INCONCLUSIVE, why, level * 100)
    if min(a + b) <= 0:
        why = "a start median of 0 or less cannot be compared as a ratio"
        return AbVerdict(metric, a, b, None, None, None, None, margin * 100, INCONCLUSIVE, why, level * 100)
    outcome, reason, change, low, high, p_worse = _judge_logs(
        [math.log(x) for x in a], [math.log(x) for x in b], METRICS[metric].higher_is_better, margin, alpha
    )
    return AbVerdict(metric, a, b, change, low, high, p_worse, margin * 100, outcome, reason, level * 100)


def _judge_logs(
    la: Sequence[float], lb: Sequence[float], higher_is_better: bool, margin: float, alpha: float
) -> tuple[AbOutcome, str, float, float, float, float]:
    """The A/B decision on log values: (verdict, reason, change %, interval low %, high %, p of B worse).

    B slower (or faster) means worse (better) by more than the margin, significantly: the one-sided test of
    "the change is no worse than the margin" rejects at alpha, which is the interval lying wholly beyond the
    margin. A point estimate beyond the margin is not enough: with 2 to 4 starts a side a variance can come out
    small by chance, and an A/A session then showed B 17.8% "faster" at p <= 0.05 (docs/ab.md)."""
    from scipy.stats import t as student

    diff, se, df = _welch(la, lb)
    half = float(student.ppf(1 - alpha, df)) * se
    change, low, high = ((math.exp(x) - 1) * 100 for x in (diff, diff - half, diff + half))
    down = math.log(1 - margin) if margin < 1 else -math.inf  # the margin, in logs, below and above A
    up = math.log(1 + margin)

    def p_beyond(bound: float, below: bool) -> float:
        """One-sided p that the true log change lies beyond `bound` (below it, or above it)."""
        if math.isinf(bound):
            return 1.0
        if se == 0:
            return 0.0 if (diff < bound if below else diff > bound) else 1.0
        z = (diff - bound) / se
        return float(student.cdf(z, df) if below else student.sf(z, df))

    if higher_is_better:
        p_worse, p_better = p_beyond(down, below=True), p_beyond(up, below=False)
    else:
        p_worse, p_better = p_beyond(up, below=False), p_beyond(down, below=True)
    margin_pct = margin * 100
    level = f"{(1 - 2 * alpha) * 100:g}%"
    if p_worse <= alpha:
        why = f"worse by more than {margin_pct:.1f}%: the {level} interval lies beyond it, p={p_worse:.3f}"
        return B_SLOWER, why, change, low, high, p_worse
    if p_better <= alpha:
        why = f"better by more than {margin_pct:.1f}%: the {level} interval lies beyond it, p={p_better:.3f}"
        return B_FASTER, why, change, low, high, p_worse
    if -margin_pct <= low and high <= margin_pct:
        return NO_DIFFERENCE, f"the {level} interval lies within ±{margin_pct:.1f}%", change, low, high, p_worse
    if abs(change) > margin_pct:
        why = f"beyond ±{margin_pct:.1f}%, but the {level} interval reaches back inside it"
    else:
        why = f"the {level} interval reaches past ±{margin_pct:.1f}%"
    reason = f"{why} with {len(la)}+{len(lb)} starts: more rounds (--dsr1-ab-rounds)"
    return INCONCLUSIVE, reason, change, low, high, p_worse


def judge_ab_config(
    config_id: str,
    metric: str,
    starts: Sequence[tuple[str, Mapping[str, float]]],
    allowed_rel: float,
    alpha: float = ALPHA,
) -> AbConfigVerdict:
    """`starts`: (side, item -> start median) for each start of the config, in order. The items of one start move
    together (one server, one stretch of the machine's time), so the config is judged start by start, not item by
    item: each start's value is the mean over its items of log(median / the item's center over all starts), and
    B's start values are tested against A's as an item's are. A real slowdown moves every item of every B start;
    one noisy start moves one observation."""
    items = sorted({item for _, medians in starts for item in medians if medians[item] > 0})
    logs: dict[str, list[float]] = {
        item: [math.log(m[item]) for _, m in starts if m.get(item, 0) > 0] for item in items
    }
    centers = {item: statistics.fmean(values) for item, values in logs.items() if values}
    values: dict[str, list[float]] = {"A": [], "B": []}
    for side, medians in starts:
        present = [math.log(medians[i]) - centers[i] for i in items if medians.get(i, 0) > 0]
        if present:
            values[side].append(statistics.fmean(present))
    la, lb = values["A"], values["B"]
    if len(la) < 2 or len(lb) < 2 or not items:
        return AbConfigVerdict(
            config_id, metric, len(items), 0.0, 0.0, 0.0, allowed_rel * 100, INCONCLUSIVE,
            "each side needs 2 or more measured starts", starts=len(la) + len(lb),
        )  # fmt: skip
    higher_is_better = METRICS[metric].higher_is_better
    outcome, reason, change, low, high, _ = _judge_logs(la, lb, higher_is_better, allowed_rel, alpha)
    return AbConfigVerdict(
        config_id, metric, len(items), change, low, high, allowed_rel * 100, outcome, reason, starts=len(la) + len(lb)
    )


def ab_item_verdicts(
    starts: list[AbStart], key: str, tolerances: Mapping[str, Tolerance], alpha: float
) -> list[AbVerdict]:
    """One verdict per gated metric: the item's start medians on B against those on A."""
    a = [s.medians(key) for s in starts if s.side == "A" and s.runs.get(key)]
    b = [s.medians(key) for s in starts if s.side == "B" and s.runs.get(key)]
    return [
        judge_ab(metric, [x[metric] for x in a if metric in x], [x[metric] for x in b if metric in x], tol, alpha)
        for metric, tol in ((m, tolerances[m]) for m in METRICS if m in tolerances)
    ]


def side_medians(starts: list[AbStart], key: str) -> dict[str, float]:
    """One side's value per metric: the median of its starts' medians."""
    per_metric: dict[str, list[float]] = {}
    for start in starts:
        for metric, value in start.medians(key).items():
            per_metric.setdefault(metric, []).append(value)
    return {k: statistics.median(v) for k, v in per_metric.items()}


def ab_config_verdicts(
    ab: AbRun, matrix: Matrix, overrides: Mapping[str, Tolerance], alpha: float = ALPHA
) -> list[AbConfigVerdict]:
    """Per config and gated metric, start by start over its judged items (ab.judge_ab_config), against the
    config's config_tolerance (the item tolerance where it has none; a --dsr1-tolerance for the metric rules both)."""
    judged: dict[str, list[str]] = {}
    for key in ab.verdicts:
        judged.setdefault(split_item_key(key)[0], []).append(key)
    out = []
    for config_id, keys in judged.items():
        config = matrix.config(config_id)
        tolerances = matrix.tolerances_for(config, overrides)
        starts = ab.starts_of(config_id)
        for metric in METRICS:
            if metric not in tolerances:
                continue
            per_start = [(s.side, {k: v for k in keys if (v := s.medians(k).get(metric)) is not None}) for s in starts]
            if not any(medians for _, medians in per_start):
                continue
            floor = config_floor(config, metric, overrides)
            allowed = tolerances[metric].rel if floor is None else floor
            out.append(judge_ab_config(config_id, metric, per_start, allowed, alpha))
    return out


def judge_ab_item(
    item: Item,
    b_item: Item,
    starts: Sequence[AbStart],
    rules: Rules,
    labels: tuple[str, str],
) -> tuple[list[AbVerdict], Decision]:
    """An item in A/B mode, from the config's starts: B's start medians against A's per gated metric, and the
    Decision. `b_item`: the item as B serves it (B's server command and cap); `labels`: (A's, B's)."""
    errors = [f"start {s.index} ({s.side}): {s.item_errors[item.key]}" for s in starts if item.key in s.item_errors]
    if errors:
        # A side that crashes or cannot serve is a finding, not noise: the item fails with the server's words.
        return [], Decision(FAILED, f"{item.key} was not measured on every A/B start:\n" + "\n".join(errors))
    if not rules.tolerances:
        return [], tolerances_off(item.config_id)
    verdicts = ab_item_verdicts(list(starts), item.key, rules.tolerances, rules.alpha)
    table = ab_table(verdicts)
    head = f"{item.key}: {labels[1]}, against {labels[0]}"
    if any(v.failed for v in verdicts):
        side = {x: side_medians([s for s in starts if s.side == x], item.key) for x in ("A", "B")}
        server_side = server_side_text(side["A"], side["B"], server_context(b_item, side["B"]), against="A")
        return verdicts, Decision(
            REGRESSED,
            f"{head}: B is slower\n{table}\n"
            + (f"{server_side}\n" if server_side else "")
            + f"server (A): {item.server_command}\nserver (B): {b_item.server_command}\n"
            f"benchmark: {item.bench_command}",
            summary=table,
        )
    unsure = [(v.metric, v.reason) for v in verdicts if v.verdict == INCONCLUSIVE]
    if unsure:
        return verdicts, inconclusive_decision(f"{head}:", unsure, table, rules.inconclusive)
    return verdicts, Decision(PASSED, f"{head}\n{table}", summary=table)

"""A/B on one machine: is B slower than A? No stored baseline, no pytest and no vLLM here.

A is the run as configured; B changes one or more things (`--dsr1-ab`): another interpreter with another vLLM
(`python=PATH`), a server setting (`set=[CONFIG:]KEY=VALUE`, as `--dsr1-set` takes it) or an environment
variable of the server (`env=NAME=VALUE`). Parts combine: B changes all of them.

Whole server starts move by 20 to 35% on shared machines, so the unit of comparison is the start, not the
request: each config gets fresh servers in ABBA order (`abba_order`), which cancels a linear drift within each
round, and each start's median is one observation. An item's verdict compares the logs of B's and A's start
medians with Welch's t-test (one-sided, for "B worse"), and gives B/A - 1 with its 95% interval:

- `B slower`: significantly worse (p <= alpha) and beyond the metric's tolerance: the item fails;
- `B faster`: significantly better and beyond the tolerance;
- `no difference`: the 90% interval lies within +-tolerance (two one-sided tests at 5%: equivalence);
- `inconclusive`: none of these; the reason says what it would take.

A config's verdict pools its items: the geometric mean of their B/A ratios with a 95% interval over the items,
against the config's tolerance, as for stored baselines. "Slower" reads for every metric, latencies included.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from pytest_dsr1.matrix import ServerConfig, apply_settings
from pytest_dsr1.metrics import METRICS
from pytest_dsr1.tolerance import Tolerance

Side = Literal["A", "B"]
AbOutcome = Literal["B slower", "B faster", "no difference", "inconclusive"]
B_SLOWER: Final = "B slower"
B_FASTER: Final = "B faster"
NO_DIFFERENCE: Final = "no difference"
AB_INCONCLUSIVE: Final = "inconclusive"
DEFAULT_ROUNDS = 2  # ABBA twice: 4 starts per side


@dataclass(frozen=True)
class AbSpec:
    """What B changes against A."""

    python: str | None = None
    settings: tuple[tuple[str | None, str, str], ...] = ()  # (config id or None, setting, value), as --dsr1-set
    env: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """B's label in reports: what it changes, e.g. `max_num_seqs=4, VLLM_CPU_KVCACHE_SPACE=2`."""
        parts = [f"{t + ':' if t else ''}{k}={v}" for t, k, v in self.settings]
        parts += [f"{k}={v}" for k, v in self.env]
        if self.python:
            parts.append(f"python {self.python}")
        return ", ".join(parts)


# One --dsr1-ab part, as options.parse_ab_part reads it: ("python", PATH), ("set", (config, key, value)) or
# ("env", (name, value)).
AbPart = tuple[str, Any]


def ab_spec(parts: Sequence[AbPart]) -> AbSpec | None:
    """All --dsr1-ab parts combined into B (None: no A/B). A ValueError says what does not combine."""
    if not parts:
        return None
    pythons = {value for kind, value in parts if kind == "python"}
    if len(pythons) > 1:
        raise ValueError(
            f"--dsr1-ab: B can run one interpreter, not {len(pythons)} ({', '.join(sorted(pythons))}); "
            "give one python= part"
        )
    settings = tuple(value for kind, value in parts if kind == "set")
    env = tuple(value for kind, value in parts if kind == "env")
    values: dict[str, set[str]] = {}
    for name, value in env:
        values.setdefault(name, set()).add(value)
    clash = sorted(name for name, vals in values.items() if len(vals) > 1)
    if clash:
        raise ValueError(f"--dsr1-ab: env={clash[0]} is given different values; give it once")
    return AbSpec(next(iter(pythons), None), settings, env)


def b_config(config: ServerConfig, spec: AbSpec) -> ServerConfig:
    """Config `config` as B runs it: B's settings that target it (or every config), B's environment on top."""
    changed = apply_settings(config, spec.settings)
    if spec.env:
        env = dict(changed.env)
        env.update(spec.env)
        changed = replace(changed, env=tuple(env.items()))
    return changed


def abba_order(rounds: int) -> list[Side]:
    """The order of the server starts: A B B A, `rounds` times. Within a round a linear drift hits both sides
    alike; across rounds, a step change does too."""
    order: list[Side] = []
    for _ in range(rounds):
        order += ["A", "B", "B", "A"]
    return order


@dataclass(frozen=True)
class AbVerdict:
    """One metric of one item: B's start medians against A's."""

    metric: str
    a_starts: tuple[float, ...]
    b_starts: tuple[float, ...]
    change_pct: float | None  # B/A - 1, from the geometric means of the start medians
    low_pct: float | None  # its 95% interval
    high_pct: float | None
    p_worse: float | None  # one-sided: is B worse?
    margin_pct: float  # the tolerance, as a relative change at A's level: the equivalence margin too
    verdict: AbOutcome
    reason: str

    @property
    def failed(self) -> bool:
        return self.verdict == B_SLOWER

    def line(self) -> str:
        if self.change_pct is None:
            return f"{self.metric}: {self.verdict} ({self.reason})"
        return (
            f"{self.metric}: {self.change_pct:+.1f}% [{self.low_pct:+.1f}, {self.high_pct:+.1f}] "
            f"(p={self.p_worse:.3f}, margin ±{self.margin_pct:.1f}%): {self.verdict}"
        )


def _welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """mean(b) - mean(a), its standard error and Welch's degrees of freedom."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return statistics.fmean(b) - statistics.fmean(a), 0.0, float(len(a) + len(b) - 2)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va or vb else len(a) + len(b) - 2.0
    return statistics.fmean(b) - statistics.fmean(a), se, df


def judge_ab(
    metric: str, a_starts: Sequence[float], b_starts: Sequence[float], tol: Tolerance, alpha: float = 0.05
) -> AbVerdict:
    """B's start medians against A's on one metric: the change with its interval, the test and the verdict."""
    from scipy.stats import t as student

    higher_is_better = METRICS[metric].higher_is_better
    a, b = tuple(a_starts), tuple(b_starts)
    center = statistics.median(a) if a else 0.0
    margin = tol.allowed(center) / center if center > 0 else tol.rel
    margin_pct = margin * 100

    def verdict(
        outcome: AbOutcome,
        reason: str,
        change: float | None = None,
        low: float | None = None,
        high: float | None = None,
        p: float | None = None,
    ) -> AbVerdict:
        return AbVerdict(metric, a, b, change, low, high, p, margin_pct, outcome, reason)

    if len(a) < 2 or len(b) < 2:
        return verdict(AB_INCONCLUSIVE, f"{len(a)} A and {len(b)} B starts measured: each side needs 2 or more")
    if min(a + b) <= 0:
        return verdict(AB_INCONCLUSIVE, "a start median of 0 or less cannot be compared as a ratio")
    la, lb = [math.log(x) for x in a], [math.log(x) for x in b]
    diff, se, df = _welch(la, lb)
    pct = (math.exp(diff) - 1) * 100

    def interval(level: float) -> tuple[float, float]:
        half = float(student.ppf(1 - (1 - level) / 2, df)) * se
        return (math.exp(diff - half) - 1) * 100, (math.exp(diff + half) - 1) * 100

    low, high = interval(0.95)
    if se == 0:
        p_worse = 0.0 if (diff < 0 if higher_is_better else diff > 0) else 1.0
        p_better = 1.0 - p_worse if diff != 0 else 1.0
    else:
        z = diff / se
        p_low, p_high = float(student.cdf(z, df)), float(student.sf(z, df))  # B lower / B higher
        p_worse, p_better = (p_low, p_high) if higher_is_better else (p_high, p_low)
    beyond = abs(pct) > margin_pct
    b_worse = pct < 0 if higher_is_better else pct > 0
    if p_worse <= alpha and beyond and b_worse:
        return verdict(
            B_SLOWER,
            f"worse beyond ±{margin_pct:.1f}% and significant (Welch p={p_worse:.3f})",
            pct,
            low,
            high,
            p_worse,
        )
    if p_better <= alpha and beyond and not b_worse:
        return verdict(
            B_FASTER,
            f"better beyond ±{margin_pct:.1f}% and significant (Welch p={p_better:.3f})",
            pct,
            low,
            high,
            p_worse,
        )
    low90, high90 = interval(0.90)
    if -margin_pct <= low90 and high90 <= margin_pct:
        return verdict(
            NO_DIFFERENCE,
            f"the 90% interval [{low90:+.1f}, {high90:+.1f}] lies within ±{margin_pct:.1f}%",
            pct,
            low,
            high,
            p_worse,
        )
    why = (
        "beyond the margin but not significant"
        if beyond
        else f"the 90% interval [{low90:+.1f}, {high90:+.1f}] reaches past ±{margin_pct:.1f}%"
    )
    return verdict(
        AB_INCONCLUSIVE, f"{why} with {len(a)}+{len(b)} starts: more rounds (--dsr1-ab-rounds)", pct, low, high, p_worse
    )


@dataclass(frozen=True)
class AbConfigVerdict:
    """All of a config's items on one metric: the geometric mean of their B/A ratios, with a 95% interval."""

    config_id: str
    metric: str
    items: int
    change_pct: float
    low_pct: float
    high_pct: float
    allowed_pct: float
    verdict: AbOutcome
    reason: str

    @property
    def failed(self) -> bool:
        return self.verdict == B_SLOWER

    def line(self) -> str:
        return (
            f"{self.config_id}: B {self.change_pct:+.1f}% [{self.low_pct:+.1f}, {self.high_pct:+.1f}] against A over "
            f"{self.items} items ({self.metric}, allowed ±{self.allowed_pct:.1f}%): {self.verdict}"
        )


def judge_ab_config(config_id: str, metric: str, ratios: Sequence[float], allowed_rel: float) -> AbConfigVerdict:
    """`ratios`: each item's B/A (geometric means of the start medians) on one metric."""
    from scipy.stats import t as student

    higher_is_better = METRICS[metric].higher_is_better
    logs = [math.log(r) for r in ratios if r > 0]
    n = len(logs)
    if n < 2:
        change = (math.exp(logs[0]) - 1) * 100 if logs else 0.0
        return AbConfigVerdict(
            config_id, metric, n, change, change, change, allowed_rel * 100, AB_INCONCLUSIVE, "fewer than 2 items"
        )
    mean = statistics.fmean(logs)
    half = float(student.ppf(0.975, n - 1)) * statistics.stdev(logs) / math.sqrt(n)
    change, low, high = ((math.exp(x) - 1) * 100 for x in (mean, mean - half, mean + half))
    allowed = allowed_rel * 100
    worse_side = (high < 0) if higher_is_better else (low > 0)
    better_side = (low > 0) if higher_is_better else (high < 0)
    beyond = abs(change) > allowed
    if beyond and worse_side:
        outcome: AbOutcome = B_SLOWER
        reason = "every item moved the wrong way together beyond the allowed change"
    elif beyond and better_side:
        outcome, reason = B_FASTER, "every item moved the right way together beyond the allowed change"
    elif -allowed <= low and high <= allowed:
        outcome, reason = NO_DIFFERENCE, f"the interval lies within ±{allowed:.1f}%"
    else:
        outcome, reason = AB_INCONCLUSIVE, "the interval reaches past the allowed change, or the items disagree"
    return AbConfigVerdict(config_id, metric, n, change, low, high, allowed, outcome, reason)


def geometric_mean_ratio(a_starts: Sequence[float], b_starts: Sequence[float]) -> float | None:
    """B/A from the geometric means of the start medians; None where a side has no positive value."""
    a, b = [x for x in a_starts if x > 0], [x for x in b_starts if x > 0]
    if not a or not b:
        return None
    return math.exp(statistics.fmean(math.log(x) for x in b) - statistics.fmean(math.log(x) for x in a))

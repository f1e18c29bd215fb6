"""A/B on one machine: is B slower than A? No stored baseline, no pytest and no vLLM here.

A is the run as configured; B changes one or more things (`--dsr1-ab`): another interpreter with another vLLM
(`python=PATH`), a server setting (`set=[CONFIG:]KEY=VALUE`, as `--dsr1-set` takes it) or an environment
variable of the server (`env=NAME=VALUE`). Parts combine: B changes all of them.

Whole server starts move by 20 to 35% on shared machines, so the unit of comparison is the start, not the
request: each config gets fresh servers in ABBA order (`abba_order`), which cancels a linear drift within each
round, and each start's median is one observation. An item's verdict compares the logs of B's and A's start
medians with Welch's t-test, and gives B/A - 1 with its interval at 1 - 2 alpha (90%), whose bounds are the two
one-sided tests at alpha:

- `B slower`: significantly worse (p <= alpha) and beyond the metric's tolerance: the item fails;
- `B faster`: significantly better and beyond the tolerance;
- `no difference`: the interval lies within +-tolerance (equivalence, two one-sided tests);
- `inconclusive`: none of these; the reason says what it would take.

A config's verdict is taken start by start: each start's value is the mean over the config's items of its log
start medians (each centred on the item's own level), and B's start values are tested against A's in the same way,
against the config's `config_tolerance`. The items of one start share a server and a stretch of the machine's
time, so they are not independent observations; the starts are. "Slower" reads for every metric, latencies too.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from pytest_dsr1.command import REDACTED, is_secret_name
from pytest_dsr1.matrix import ServerConfig, apply_settings
from pytest_dsr1.metric_catalog import METRICS
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
        parts += [f"{k}={REDACTED if is_secret_name(k) else v}" for k, v in self.env]
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
    low_pct: float | None  # its interval at level_pct (1 - 2 alpha: the one-sided tests' own interval)
    high_pct: float | None
    p_worse: float | None  # one-sided: is B worse?
    margin_pct: float  # the tolerance, as a relative change at A's level: the equivalence margin too
    verdict: AbOutcome
    reason: str
    level_pct: float = 90.0

    @property
    def failed(self) -> bool:
        return self.verdict == B_SLOWER


def _welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """mean(b) - mean(a), its standard error and Welch's degrees of freedom."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return statistics.fmean(b) - statistics.fmean(a), 0.0, float(len(a) + len(b) - 2)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return statistics.fmean(b) - statistics.fmean(a), se, df


def judge_ab(
    metric: str, a_starts: Sequence[float], b_starts: Sequence[float], tol: Tolerance, alpha: float = 0.05
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
        return AbVerdict(metric, a, b, None, None, None, None, margin * 100, AB_INCONCLUSIVE, why, level * 100)
    if min(a + b) <= 0:
        why = "a start median of 0 or less cannot be compared as a ratio"
        return AbVerdict(metric, a, b, None, None, None, None, margin * 100, AB_INCONCLUSIVE, why, level * 100)
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
    return AB_INCONCLUSIVE, reason, change, low, high, p_worse


@dataclass(frozen=True)
class AbConfigVerdict:
    """All of a config's items on one metric, start by start: B's starts against A's."""

    config_id: str
    metric: str
    items: int
    starts: int
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
            f"{self.items} items and {self.starts} starts ({self.metric}, allowed ±{self.allowed_pct:.1f}%): "
            f"{self.verdict}"
        )


def judge_ab_config(
    config_id: str,
    metric: str,
    starts: Sequence[tuple[str, Mapping[str, float]]],
    allowed_rel: float,
    alpha: float = 0.05,
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
            config_id, metric, len(items), len(la) + len(lb), 0.0, 0.0, 0.0, allowed_rel * 100, AB_INCONCLUSIVE,
            "each side needs 2 or more measured starts",
        )  # fmt: skip
    higher_is_better = METRICS[metric].higher_is_better
    outcome, reason, change, low, high, _ = _judge_logs(la, lb, higher_is_better, allowed_rel, alpha)
    return AbConfigVerdict(
        config_id, metric, len(items), len(la) + len(lb), change, low, high, allowed_rel * 100, outcome, reason
    )

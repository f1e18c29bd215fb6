"""The words of every verdict, in one place: a metric's verdict, an item's outcome, an A/B verdict; the default
alpha; which direction of a change is the worse one."""

from __future__ import annotations

from typing import Final, Literal

from pytest_dsr1.metric_catalog import METRICS, can_worsen_by

ALPHA: Final = 0.05  # the significance level of every test, unless --dsr1-alpha says otherwise

# A metric's verdict against its reference.
Verdict = Literal["ok", "REGRESSED", "noise", "improved", "stale", "not compared", "inconclusive"]
OK: Final = "ok"
REGRESSED: Final = "REGRESSED"
NOISE: Final = "noise"
IMPROVED: Final = "improved"
STALE: Final = "stale"
NOT_COMPARED: Final = "not compared"
INCONCLUSIVE: Final = "inconclusive"  # beyond tolerance, but the samples cannot say whether it is noise
# Changes beyond tolerance, whatever the noise test said: what a reader of a report must see.
BEYOND_TOLERANCE: tuple[Verdict, ...] = (REGRESSED, INCONCLUSIVE, NOISE, STALE, IMPROVED)

# What becomes of an item (REGRESSED and INCONCLUSIVE as above).
Outcome = Literal["passed", "REGRESSED", "failed", "skipped", "recorded", "inconclusive"]
PASSED: Final = "passed"
FAILED: Final = "failed"
SKIPPED: Final = "skipped"
RECORDED: Final = "recorded"

# B against A (--dsr1-ab); "inconclusive" as above.
AbOutcome = Literal["B slower", "B faster", "no difference", "inconclusive"]
B_SLOWER: Final = "B slower"
B_FASTER: Final = "B faster"
NO_DIFFERENCE: Final = "no difference"

# Whether an item or run may go on without a verdict (a missing baseline, an inconclusive item): skip or fail.
SkipOrFail = Literal["skip", "fail"]


def worsening(metric: str, change: float) -> float:
    """A change (new - old, in any unit, a percentage or a log ratio) signed so that positive is worse: the one
    place that knows which way each metric's bad direction lies."""
    return -change if METRICS[metric].higher_is_better else change


def judgeable_ceiling(metric: str, ceiling: float) -> float:
    """A ceiling as it applies: a throughput's stays below 100% whatever is set (a gate of 100% passes at zero)."""
    return ceiling if can_worsen_by(metric, ceiling) else 1.0


def is_worse(metric: str, change: float) -> bool:
    """Whether a change goes the metric's bad way."""
    return worsening(metric, change) > 0

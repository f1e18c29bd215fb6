"""The measurement budget: how much more the suite may measure where a verdict is undecided (--dsr1-budget), and
what it spent. Pure: no pytest, no vLLM.

An undecided item (verdict/item.undecided) gets more runs on its server, one at a time, until its verdict is
clear, its own allowance is used up or the session's seconds are. A clear pass or a clear regression stops at once,
so a quiet machine spends nothing.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

DEFAULT_BUDGET = "3/120"


@dataclass(frozen=True)
class Budget:
    """Up to `runs_per_item` more runs for each undecided item, and `session_s` seconds of them in all (a run that
    starts within the budget finishes: the budget is overshot by at most one run)."""

    runs_per_item: int
    session_s: float

    @property
    def off(self) -> bool:
        return self.runs_per_item == 0 or self.session_s == 0

    def __str__(self) -> str:  # as the option is written
        return "off" if self.off else f"{self.runs_per_item}/{self.session_s:g}"


def parse_budget(text: str) -> Budget:
    """RUNS/SECONDS (e.g. 3/120: up to 3 more runs per undecided item, 120 s in all), or 0 / off."""
    value = text.strip().lower()
    if value in ("0", "off"):
        return Budget(0, 0.0)
    runs, sep, seconds = value.partition("/")
    try:
        budget = Budget(int(runs), float(seconds.removesuffix("s")))
    except ValueError:
        budget = None
    if not sep or budget is None or budget.runs_per_item < 0 or not math.isfinite(budget.session_s):
        raise argparse.ArgumentTypeError(
            f"{text!r}: write RUNS/SECONDS, e.g. 3/120 (up to 3 more runs per undecided item, 120 s per session), "
            "or off"
        )
    if budget.session_s < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the seconds must be 0 or more")
    return budget


@dataclass(frozen=True)
class Spend:
    """What one item was given beyond its planned runs because its verdict was undecided."""

    item: str
    runs: int
    seconds: float
    why: str  # the first undecided reason that asked for the runs
    outcome: str = ""  # what the item became once judged
    still_undecided: bool = False  # the allowance or the session's budget ran out first


@dataclass
class Ledger:
    """The session's spending, kept by the item checks; the reports read it."""

    budget: Budget
    spends: list[Spend] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # items still undecided when the session's budget was spent

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.spends)

    @property
    def runs(self) -> int:
        return sum(s.runs for s in self.spends)

    def runs_allowed(self, runs_so_far: int, spent_s: float) -> int:
        """The item's allowance of runs while undecided, given the session's seconds left (`spent_s`: what this item
        has spent so far, not yet kept): its allowance, or the runs it has had (no more)."""
        if self.budget.off or self.seconds + spent_s >= self.budget.session_s:
            return runs_so_far
        return self.budget.runs_per_item

    def lines(self) -> list[str]:
        """The summary's account: what was spent (the first line), then on what and what it decided, and what was
        left undecided for want of budget (a line each)."""
        out = [
            f"measured more where undecided: {self.runs} run(s) on {len(self.spends)} item(s), {self.seconds:.1f} s "
            f"of the {self.budget.session_s:g} s budget (up to {self.budget.runs_per_item} per item)"
        ]
        for s in self.spends:
            left = " (still undecided when the budget ran out)" if s.still_undecided else ""
            out.append(f"{s.item}: +{s.runs} run(s), {s.seconds:.1f} s, for {s.why}; then {s.outcome}{left}")
        if self.refused:
            out.append(
                f"the session's budget was spent: {len(self.refused)} item(s) judged undecided without more runs "
                f"({', '.join(self.refused)}); raise it with --dsr1-budget"
            )
        return out

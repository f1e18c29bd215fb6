"""An A/B run's data: each fresh server start, what each item measured on it, and the verdicts (B against A, per
item and per config)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from pytest_dsr1.ab.spec import AbSpec
from pytest_dsr1.logprobs import Generation
from pytest_dsr1.metric_catalog import samples_of
from pytest_dsr1.verdict.config import ConfigVerdict
from pytest_dsr1.verdict.outcomes import B_SLOWER, AbOutcome


@dataclass
class AbStart:
    """One fresh server start of an A/B comparison, and what each of the config's items measured on it."""

    config_id: str
    side: str  # "A" or "B"
    index: int  # its place in the config's ABBA order, from 1
    ready_s: float | None = None
    wall_s: float = 0.0  # start, every item's benchmarks, stop
    error: str | None = None  # the server did not start, or died: every item not measured on it fails
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # item key -> benchmark results
    item_errors: dict[str, str] = field(default_factory=dict)  # item key -> why it was not measured
    generations: list[Generation] | None = None  # the logprob check's answers on this start (its item selected)
    generation_error: str | None = None

    def medians(self, key: str) -> dict[str, float]:
        """The item's median per metric on this start: one observation of the comparison."""
        return {k: statistics.median(v) for k, v in samples_of(self.runs.get(key, [])).items() if v}


@dataclass
class AbRun:
    """An A/B run (--dsr1-ab): what A and B are, every start, and the verdicts."""

    a_label: str
    b_label: str
    rounds: int
    spec: AbSpec = field(default_factory=AbSpec)  # what B changes
    starts: list[AbStart] = field(default_factory=list)
    verdicts: dict[str, list[AbVerdict]] = field(default_factory=dict)  # item key -> one per gated metric
    config_verdicts: list[AbConfigVerdict] = field(default_factory=list)

    def starts_of(self, config_id: str) -> list[AbStart]:
        return [s for s in self.starts if s.config_id == config_id]

    def wall_s(self, side: str) -> float:
        return sum(s.wall_s for s in self.starts if s.side == side)


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


@dataclass(frozen=True)
class AbConfigVerdict(ConfigVerdict):
    """All of a config's items on one metric, start by start: B's starts against A's."""

    starts: int = 0

    @property
    def failed(self) -> bool:
        return self.verdict == B_SLOWER

    def line(self) -> str:
        return (
            f"{self.config_id}: B {self.change_pct:+.1f}% [{self.low_pct:+.1f}, {self.high_pct:+.1f}] against A over "
            f"{self.items} items and {self.starts} starts ({self.metric}, allowed ±{self.allowed_pct:.1f}%): "
            f"{self.verdict}"
        )

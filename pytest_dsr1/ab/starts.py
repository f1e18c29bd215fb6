"""An A/B run's data: each fresh server start, what each item measured on it, and the verdicts."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_dsr1.ab.spec import AbSpec
from pytest_dsr1.metric_catalog import samples_of

if TYPE_CHECKING:  # the verdicts' module judges these starts
    from pytest_dsr1.ab.judge import AbConfigVerdict, AbVerdict


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

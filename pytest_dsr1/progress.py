"""Progress while a run goes: which item of how many, the time gone and the time expected to go.

A GPU night is hours of server starts and benchmarks; pytest's dots say nothing while an item runs for minutes.
Each suite item gets a line when it begins: `dsr1: item 3 of 14, cpu-tiny-tp1[balanced-bs16] (config 1 of 2):
1:12 gone, about 2:05 to go`. The expectation comes from the shard planner's costs (recorded run times where a
baseline has them, a rough model otherwise, and a start-up per config), scaled by how the run has gone so far:
after the first items, the time gone over the time planned for them. Plain lines, so that CI logs keep them; none
under -q. No pytest here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic


@dataclass(frozen=True)
class PlannedItem:
    key: str  # the item key, e.g. cpu-tiny-tp1[balanced-bs16], or the correctness item's node name
    config_id: str
    seconds: float  # its share of the plan: its runs, plus its config's start-up(s) for the config's first item


def mmss(seconds: float) -> str:
    """1:05, or 2:01:05 past an hour."""
    hours, rest = divmod(max(0, round(seconds)), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class RunProgress:
    """The run's items in the order they run, and when the run began (at the first item)."""

    items: Sequence[PlannedItem]
    clock: Callable[[], float] | None = None  # None: time.monotonic, looked up at each call
    began: float | None = None
    _index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index = {item.key: i for i, item in enumerate(self.items)}
        self._configs = list(dict.fromkeys(item.config_id for item in self.items))

    def now(self) -> float:
        return self.clock() if self.clock is not None else monotonic()

    def elapsed_s(self) -> float:
        return 0.0 if self.began is None else self.now() - self.began

    def to_go_s(self, index: int) -> float:
        """Expected seconds from item `index` (0-based, not yet begun) to the end: the plan's, scaled by how long the
        items before it took against their plan."""
        planned_done = sum(item.seconds for item in self.items[:index])
        planned_left = sum(item.seconds for item in self.items[index:])
        pace = self.elapsed_s() / planned_done if planned_done > 0 and self.began is not None else 1.0
        return planned_left * pace

    def item_line(self, key: str) -> str | None:
        """The line for item `key` as it begins (None: not a planned item)."""
        index = self._index.get(key)
        if index is None:
            return None
        if self.began is None:
            self.began = self.now()
        item = self.items[index]
        config = self._configs.index(item.config_id) + 1
        return (
            f"dsr1: item {index + 1} of {len(self.items)}, {key} (config {config} of {len(self._configs)}): "
            f"{mmss(self.elapsed_s())} gone, about {mmss(self.to_go_s(index))} to go"
        )

    def gone(self) -> str:
        """A suffix for a phase line within an item (an A/B start): the time gone so far."""
        return f"; {mmss(self.elapsed_s())} gone" if self.began is not None else ""


def planned_items(
    order: Sequence[tuple[str, str]],
    run_s: dict[str, float],
    startup_s: dict[str, float],
    starts_per_config: int = 1,
) -> list[PlannedItem]:
    """`order`: (item key, config id) as the items will run. `run_s`: an item's planned seconds on one server
    (missing: none, e.g. a correctness item). `startup_s`: a config's start-up. In an A/B run each config makes
    `starts_per_config` starts, all at its first item, which runs every item of the config on each of them."""
    firsts: dict[str, int] = {}
    for i, (_, config_id) in enumerate(order):
        firsts.setdefault(config_id, i)
    out = []
    for i, (key, config_id) in enumerate(order):
        seconds = run_s.get(key, 0.0)
        if starts_per_config > 1:
            if firsts[config_id] == i:
                per_start = startup_s.get(config_id, 0.0) + sum(run_s.get(k, 0.0) for k, c in order if c == config_id)
                seconds = starts_per_config * per_start
            else:
                seconds = 0.0
        elif firsts[config_id] == i:
            seconds += startup_s.get(config_id, 0.0)
        out.append(PlannedItem(key, config_id, seconds))
    return out

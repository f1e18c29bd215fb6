"""An item's check: write its measurement as the baseline (--dsr1-record), or find its reference (the committed
baseline, else this machine's own) and ask the verdict (verdict/item.py), measuring more while it asks. The
verdict decides; this module measures, writes the baseline files and keeps the result in the run log.

No pytest here: `BaselineCheck.check` returns a Decision, and the plugin turns that into a pass, a skip or a
failure (as pytest-benchmark keeps its regression rule apart from the hook that raises).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from pytest_dsr1.baseline import BaselineError, BaselineStore, Entry, not_comparable
from pytest_dsr1.budget import Spend
from pytest_dsr1.errors import ItemFailed
from pytest_dsr1.matrix import Matrix
from pytest_dsr1.run_log import BaselineWrite, ItemResult, Measurement, RunLog
from pytest_dsr1.tolerance import Tolerance
from pytest_dsr1.verdict.config import ConfigVerdict, judge_configs
from pytest_dsr1.verdict.item import (
    FRESH_SERVER,
    MORE_RUNS,
    UNDECIDED_RUNS,
    Decision,
    ItemVerdict,
    Progress,
    Reference,
    Rules,
    judge_item,
    missing_baseline,
    reference_of,
    undecided,
    version_change,
)
from pytest_dsr1.verdict.metric import MetricVerdict, median_or_none
from pytest_dsr1.verdict.outcomes import FAILED, PASSED, RECORDED, REGRESSED, SKIPPED
from pytest_dsr1.verdict.text import brief

if TYPE_CHECKING:
    from pytest_dsr1.runner import Runner


def entry_of(m: Measurement) -> Entry:
    """A measurement as a baseline entry: every sample, the fingerprint and the load it was measured under."""
    return Entry(
        metrics=m.samples,
        provenance="recorded",
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        fingerprint=m.fingerprint,
        extra={
            "workload": {
                "input_len": m.workload.input_len,
                "output_len": m.workload.output_len,
                "batch_size": m.workload.batch_size,
            },
            "bench_command": m.bench_command,
        },
    )


class ItemCheck:
    """What an item's check needs of the run: its runner (to measure more), options and log."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.run_log = runner.run_log
        self.options = runner.options

    def rules(self, m: Measurement) -> Rules:
        """How `m` is judged: the config's tolerances, the run's alpha and strictness, and how much more may be
        measured (more runs where the measurement can add them, a fresh server where the config may restart)."""
        return Rules(
            self.runner.matrix.tolerances_for(m.config, self.options.tolerances),
            self.options.alpha,
            self.options.inconclusive,
            extra_runs=self.runner.confirm_for(m.config) if m.more is not None else 0,
            fresh_server=m.fresh is not None and self.runner.can_restart(m.config),
            ceilings=self.runner.matrix.ceilings_for(m.config, self.options.ceilings),
        )

    def result(self, m: Measurement) -> ItemResult:
        return ItemResult(m.key, m.config.id, m.workload, PASSED, measurement=m)


class BaselineCheck(ItemCheck):
    def __init__(self, runner: Runner, store: BaselineStore) -> None:
        super().__init__(runner)
        self.store = store

    def check(self, m: Measurement) -> Decision:
        """Write the measurement as the baseline (--dsr1-record), or judge it against its reference."""
        result = self.result(m)
        try:
            decision = self._write_baseline(m) if self.options.record else self._compare(m, result)
        except ItemFailed as exc:  # a confirmation run, or the fresh server, failed
            decision = Decision(FAILED, str(exc))
        except BaselineError as exc:
            decision = Decision(FAILED, f"{m.key}: {exc}")
        if decision.outcome == REGRESSED and self.runner.is_target(m.config):
            note = "not confirmed on a fresh server: the suite never restarts a --dsr1-target"
            decision = replace(decision, message=f"{decision.message}\n({note})")
        self.run_log.keep(result, decision)
        return decision

    def _write_baseline(self, m: Measurement) -> Decision:
        hw, model = m.config.hardware.name, m.config.model.name
        path = self.store.path(hw, model)
        session = entry_of(m)
        try:
            old, new = self.store.write(path, hw, model, m.key, session)
        except BaselineError as exc:
            return Decision(FAILED, str(exc))
        self.run_log.recorded_entries.setdefault((hw, model), {})[m.key] = session  # a shard's report carries it
        for metric, samples in sorted(new.metrics.items()):
            before = median_or_none(old.metrics.get(metric)) if old else None
            self.run_log.baseline_writes.append(
                BaselineWrite(str(path), m.key, metric, before, median_or_none(samples) or 0.0)
            )
        return Decision(RECORDED)

    def _reference(self, m: Measurement) -> Reference | Decision:
        """The committed baseline entry; else this machine's own; else the missing-baseline rule."""
        baseline = self.store.file(m.config.hardware.name, m.config.model.name)
        entry = baseline.entries.get(m.key)
        problem = not_comparable(entry, m.key, m.fingerprint, m.bench_command, baseline.path)
        if problem is None:
            assert entry is not None
            return reference_of(entry, m.fingerprint, str(baseline.path))
        if self.options.missing_baseline == "skip" and self.store.local_directory is not None:
            # No committed baseline fits this machine: use (or start) this machine's own, so that a new machine
            # gets verdicts from its second run on. Nightly CI (--dsr1-missing-baseline=fail) never does this.
            return self._local_reference(m, problem)
        return missing_baseline(problem, self.options.missing_baseline, brief(m.samples))

    def _local_reference(self, m: Measurement, problem: str) -> Reference | Decision:
        hw, model = m.config.hardware.name, m.config.model.name
        local = self.store.local_file(m.fingerprint, hw, model)
        entry = local.entries.get(m.key)
        uses = self.run_log.local_baseline_uses.setdefault(str(local.path), [])
        if entry is not None and not_comparable(entry, m.key, m.fingerprint, m.bench_command, local.path) is None:
            uses.append((m.key, "compared"))
            note = f"compared with this machine's own baseline ({local.path}): {problem}"
            return reference_of(entry, m.fingerprint, str(local.path), note)
        try:
            self.store.write(local.path, hw, model, m.key, entry_of(m))
            uses.append((m.key, "recorded"))
            kept = f"This run is now this machine's own baseline ({local.path}); the next run compares against it"
        except BaselineError as exc:
            kept = (
                f"This machine's own baseline could not be kept ({exc}); point --dsr1-local-baselines at a "
                "writable directory, or set it to off"
            )
        return Decision(SKIPPED, f"not compared: {problem}. {kept} (measured: {brief(m.samples)})")

    def _compare(self, m: Measurement, result: ItemResult) -> Decision:
        """The verdict's loop: judge, and while the verdict asks, measure more (on this server, then on a fresh
        one) and judge again."""
        reference = self._reference(m)
        if isinstance(reference, Decision):
            return reference
        result.baseline_medians = dict(reference.medians)
        result.histories = dict(reference.histories)
        result.history_dates = dict(reference.history_dates)
        rules = self.rules(m)
        ledger = self.run_log.spending
        progress = Progress()
        spent_s, first_why = 0.0, ""
        while True:
            allowance = ledger.runs_allowed(progress.undecided_runs, spent_s) if m.more is not None else 0
            judged = judge_item(m.item(), m.samples, reference, replace(rules, undecided_runs=allowance), progress)
            if judged.next_step == MORE_RUNS:
                assert m.more is not None
                m.more(1)
                progress = replace(progress, extra_runs=progress.extra_runs + 1)
            elif judged.next_step == UNDECIDED_RUNS:  # the budget pays
                assert m.more is not None
                started = time.monotonic()
                m.more(1)
                spent_s += time.monotonic() - started
                first_why = first_why or judged.why
                progress = replace(progress, undecided_runs=progress.undecided_runs + 1)
            elif judged.next_step == FRESH_SERVER:
                assert m.fresh is not None
                m = m.fresh()
                result.measurement = m
                result.first_server_verdicts = list(judged.verdicts)
                progress = Progress(0, judged.verdicts, progress.undecided_runs)
            else:
                break
        self._account(m, rules, judged, progress, spent_s, first_why)
        result.verdicts = list(judged.verdicts)
        # What every report calls the baseline is what each verdict judged against (a history's center where it
        # has a band), so a plot's dashed line and results.json say the same as the verdict.
        result.baseline_medians.update({v.metric: v.baseline for v in judged.verdicts if v.baseline is not None})
        versions = version_change(reference.fingerprint, m.fingerprint)
        if versions and judged.verdicts:
            self.run_log.version_changes[versions] = self.run_log.version_changes.get(versions, 0) + 1
        assert judged.decision is not None
        return judged.decision

    def _account(
        self, m: Measurement, rules: Rules, judged: ItemVerdict, progress: Progress, spent_s: float, why: str
    ) -> None:
        """What the budget gave this item, and whether it stayed undecided for want of more."""
        ledger = self.run_log.spending
        assert judged.decision is not None
        left = [reason for v in judged.verdicts if (reason := undecided(v, rules.alpha))]
        if progress.undecided_runs:
            outcome = judged.decision.outcome
            ledger.spends.append(Spend(m.key, progress.undecided_runs, spent_s, why, outcome, bool(left)))
        elif left and m.more is not None and not ledger.budget.off and judged.decision.outcome != REGRESSED:
            ledger.refused.append(m.key)


def config_verdicts(
    run_log: RunLog,
    matrix: Matrix,
    overrides: Mapping[str, Tolerance],
    ceilings: Mapping[str, float] | None = None,
) -> list[ConfigVerdict]:
    """A verdict per config and gated metric, over every item of the config that was compared (see judge_configs)."""
    by_config: dict[str, list[tuple[MetricVerdict, tuple[float, ...]]]] = {}
    for result in run_log.results.values():
        by_config.setdefault(result.config_id, []).extend(
            (v, result.histories.get(v.metric, ())) for v in result.verdicts
        )
    return judge_configs(by_config, matrix, overrides, ceilings)

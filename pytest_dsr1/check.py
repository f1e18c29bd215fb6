"""The verdict on one item: record it as the baseline, or find its baseline and judge the measurement.

No pytest here: `BaselineCheck.check` returns a Decision, and the plugin turns that into a pass, a skip or a
failure (as pytest-benchmark keeps its regression rule apart from the hook that raises).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_dsr1 import server_metrics
from pytest_dsr1.ab.judge import ab_item_verdicts, side_medians
from pytest_dsr1.ab.report import ab_table
from pytest_dsr1.ab.spec import b_config
from pytest_dsr1.ab.starts import AbRun
from pytest_dsr1.baseline import BaselineError, BaselineStore, Entry, not_comparable
from pytest_dsr1.matrix import Matrix, ServerConfig
from pytest_dsr1.run_log import BaselineWrite, ItemResult, Measurement, RunLog
from pytest_dsr1.runner import ItemFailed, Runner
from pytest_dsr1.tolerance import Tolerance
from pytest_dsr1.verdict.config import ConfigVerdict, judge_configs
from pytest_dsr1.verdict.metric import MetricVerdict, compare, inconclusive, median_or_none, regressed
from pytest_dsr1.verdict.outcomes import (
    FAILED,
    INCONCLUSIVE,
    PASSED,
    RECORDED,
    REGRESSED,
    SKIPPED,
    STALE,
    Outcome,
    SkipOrFail,
)
from pytest_dsr1.verdict.text import brief, server_side_text, verdict_table

# Fingerprint fields that may differ from the baseline's without stopping the comparison, but are worth a note.
NOTED_FINGERPRINT_CHANGES = ("host_cpu", "driver", "cuda")


@dataclass(frozen=True)
class Decision:
    """What becomes of an item: its outcome and what its report says."""

    outcome: Outcome
    message: str = ""  # what the test's report says (the failure or skip reason, or a note on a pass)
    summary: str | None = None  # what the run's reports keep, when shorter than the message
    strict: bool = False  # an inconclusive item fails (--dsr1-inconclusive=fail)

    @property
    def fails(self) -> bool:
        return self.outcome in (FAILED, REGRESSED) or (self.outcome == INCONCLUSIVE and self.strict)


def missing_baseline(problem: str, mode: SkipOrFail, measured: str) -> Decision:
    """The one rule for an item with nothing comparable to judge it against: a skip by default; under
    --dsr1-missing-baseline=fail (nightly CI), a failure, because a nightly must not stay green while comparing
    nothing (a baseline of other hardware is no baseline for this machine either)."""
    message = f"not compared: {problem} (measured: {measured})"
    return Decision(FAILED if mode == "fail" else SKIPPED, message)


def inconclusive_decision(head: str, reasons: list[tuple[str, str]], table: str, mode: SkipOrFail) -> Decision:
    """The one rule for an item whose change cannot be told from noise: neither a pass nor a failure by default
    (a skip that says why), a failure under --dsr1-inconclusive=fail."""
    how = "fails under --dsr1-inconclusive=fail" if mode == "fail" else "neither passes nor fails"
    why = "; ".join(f"{metric}: {reason}" for metric, reason in reasons)
    return Decision(INCONCLUSIVE, f"{head} inconclusive ({how}): {why}\n{table}", summary=table, strict=mode == "fail")


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


def medians_of(samples: Mapping[str, list[float]]) -> dict[str, float]:
    return {k: v for k, xs in samples.items() if (v := median_or_none(xs)) is not None}


def server_context(config: ServerConfig, concurrency: int, now: Mapping[str, float]) -> server_metrics.Context:
    """What a failure's likely causes are judged against: concurrency, the server's cap, the client's latencies
    (`now`: this run's medians)."""
    cap = dict(config.settings).get("max_num_seqs")
    return server_metrics.Context(
        concurrency=concurrency,
        max_num_seqs=int(cap) if cap is not None and str(cap).isdigit() else None,
        client_ttft_ms=now.get("mean_ttft_ms"),
        client_itl_ms=now.get("mean_itl_ms"),
    )


def newest_like(entry: Entry, fingerprint: dict[str, Any]) -> dict[str, list[float]]:
    """The samples of the newest session recorded on a machine of this kind (the noise test's baseline)."""
    sessions = entry.sessions_like(fingerprint)
    return sessions[-1].metrics if sessions else entry.metrics


def histories_of(entry: Entry, fingerprint: dict[str, Any]) -> dict[str, tuple[float, ...]]:
    """Per metric, the median of every session recorded on a machine of this kind, oldest first."""
    out: dict[str, list[float]] = {}
    for session in entry.sessions_like(fingerprint):
        for name, samples in session.metrics.items():
            value = median_or_none(samples)
            if value is not None:
                out.setdefault(name, []).append(value)
    return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class Reference:
    """The baseline entry an item is judged against, and where it came from."""

    entry: Entry
    source: Path
    note: str = ""


class BaselineCheck:
    def __init__(self, runner: Runner, store: BaselineStore) -> None:
        self.runner = runner
        self.run_log = runner.run_log
        self.options = runner.options
        self.store = store

    def check(self, m: Measurement) -> Decision:
        """Record the measurement as the baseline (--dsr1-record), or compare it with its baseline."""
        result = ItemResult(m.key, m.config.id, m.workload, PASSED, measurement=m)
        try:
            decision = self._write_baseline(m) if self.options.record else self._compare(m, result)
        except ItemFailed as exc:  # a confirmation run, or the fresh server, failed
            decision = Decision(FAILED, str(exc))
        except BaselineError as exc:
            decision = Decision(FAILED, f"{m.key}: {exc}")
        result.outcome = decision.outcome
        result.message = decision.message if decision.summary is None else decision.summary
        self.run_log.results[m.key] = result
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
            return Reference(entry, baseline.path)
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
            return Reference(entry, local.path, f"compared with this machine's own baseline ({local.path}): {problem}")
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
        reference = self._reference(m)
        if isinstance(reference, Decision):
            return reference
        entry = reference.entry
        result.baseline_medians = medians_of(entry.metrics)
        result.histories = histories_of(entry, m.fingerprint)
        tolerances = self.runner.matrix.tolerances_for(m.config, self.options.tolerances)
        if not tolerances:
            return Decision(
                SKIPPED,
                f"not compared: every metric's tolerance is off for {m.config.id} (measured: {brief(m.samples)}); "
                "give a metric a tolerance in the matrix or with --dsr1-tolerance",
            )
        baseline = newest_like(entry, m.fingerprint)
        verdicts, confirmations = self._confirmed(baseline, m, tolerances, result.histories)
        if regressed(verdicts) and m.fresh is not None and self.runner.can_restart(m.config):
            # Shared machines shift a whole server's speed between starts: a regression must hold on a
            # freshly started server too, and only the fresh server's samples decide.
            result.first_server_verdicts = verdicts
            m = m.fresh()
            result.measurement = m
            verdicts, confirmations = self._confirmed(baseline, m, tolerances, result.histories)
        result.verdicts = verdicts
        note = self._notes(entry, m, confirmations, result.first_server_verdicts, verdicts)
        if regressed(verdicts):
            table = verdict_table(verdicts) + note
            now = medians_of(m.samples)
            server_side = server_side_text(
                result.baseline_medians, now, server_context(m.config, m.workload.batch_size, now)
            )
            return Decision(
                REGRESSED,
                f"{m.key} regressed against {entry.provenance} baseline of {entry.date} ({reference.source}):\n"
                f"{table}\n" + (f"{server_side}\n" if server_side else "") + f"server: {m.server_command}\n"
                f"benchmark: {m.bench_command}",
                summary=table,
            )
        unsure = inconclusive(verdicts)
        if unsure:
            reasons = [(v.metric, v.reason) for v in unsure]
            return inconclusive_decision(m.key, reasons, verdict_table(verdicts) + note, self.options.inconclusive)
        stale = [f"{v.metric}: {v.reason}" for v in verdicts if v.verdict == STALE]
        if stale:
            return Decision(PASSED, "; ".join(stale))
        return Decision(PASSED, note.strip() if result.first_server_verdicts else reference.note)

    def _confirmed(
        self,
        baseline: Mapping[str, list[float]],
        m: Measurement,
        tolerances: Mapping[str, Tolerance],
        histories: Mapping[str, tuple[float, ...]],
    ) -> tuple[list[MetricVerdict], int]:
        """The verdicts, after up to K extra runs on the same server while it looks regressed (--dsr1-confirm K)."""
        alpha = self.options.alpha
        verdicts = compare(baseline, m.samples, tolerances, alpha, histories)
        confirmations = 0
        while regressed(verdicts) and confirmations < self.runner.confirm_for(m.config) and m.more is not None:
            confirmations += 1
            m.more(1)
            verdicts = compare(baseline, m.samples, tolerances, alpha, histories)
        return verdicts, confirmations

    def _notes(
        self,
        entry: Entry,
        m: Measurement,
        confirmations: int,
        first_server: list[MetricVerdict],
        verdicts: list[MetricVerdict],
    ) -> str:
        """What a reader of the verdict should know: version and machine changes, confirmations, restarts."""
        note = ""
        versions = (entry.fingerprint.get("vllm"), m.fingerprint.get("vllm"))
        if versions[0] != versions[1]:
            self.run_log.version_changes[versions] = self.run_log.version_changes.get(versions, 0) + 1
            note = f"\n(vLLM {versions[0]} in the baseline, {versions[1]} now)"
        for key in NOTED_FINGERPRINT_CHANGES:
            before, now = entry.fingerprint.get(key), m.fingerprint.get(key)
            if before and now and before != now:
                note += f"\n({key} differs: {before!r} in the baseline, {now!r} now)"
        if confirmations:
            note += f"\n(confirmation: {confirmations} extra run(s); every sample is shown)"
        if first_server:
            held = "and it held there" if regressed(verdicts) else "and it did not hold there: not a regression"
            note += (
                "\n(it looked regressed on the config's first server, so it was measured again on a freshly started "
                f"one, {held}; the first server's verdicts:\n{verdict_table(first_server)})"
            )
        return note


# ---------------------------------------------------------------- A/B (--dsr1-ab)


class AbCheck:
    """The verdict on one item in A/B mode: B's start medians against A's, from the starts the runner made.
    Nothing is written to baselines."""

    def __init__(self, runner: Runner, ab: AbRun) -> None:
        self.runner = runner
        self.run_log = runner.run_log
        self.options = runner.options
        self.ab = ab

    def check(self, m: Measurement) -> Decision:
        result = ItemResult(m.key, m.config.id, m.workload, PASSED, measurement=m)
        decision = self._judge(m)
        result.ab_verdicts = self.ab.verdicts.get(m.key, [])
        result.outcome = decision.outcome
        result.message = decision.message if decision.summary is None else decision.summary
        self.run_log.results[m.key] = result
        return decision

    def b_server_command(self, m: Measurement) -> str:
        """B's server command for this item's config, as its fingerprint shows it (port written PORT)."""
        spec = self.ab.spec
        command = str(self.runner.fingerprint_for(b_config(m.config, spec))["server_command"])
        return f"{command} (with {spec.python})" if spec.python else command

    def _judge(self, m: Measurement) -> Decision:
        starts = self.ab.starts_of(m.config.id)
        errors = [f"start {s.index} ({s.side}): {s.item_errors[m.key]}" for s in starts if m.key in s.item_errors]
        if errors:
            # A side that crashes or cannot serve is a finding, not noise: the item fails with the server's words.
            return Decision(FAILED, f"{m.key} was not measured on every A/B start:\n" + "\n".join(errors))
        tolerances = self.runner.matrix.tolerances_for(m.config, self.options.tolerances)
        if not tolerances:
            return Decision(
                SKIPPED,
                f"not compared: every metric's tolerance is off for {m.config.id}; give a metric a tolerance in "
                "the matrix or with --dsr1-tolerance",
            )
        verdicts = ab_item_verdicts(starts, m.key, tolerances, self.options.alpha)
        self.ab.verdicts[m.key] = verdicts
        table = ab_table(verdicts)
        head = f"{m.key}: {self.ab.b_label}, against {self.ab.a_label}"
        if any(v.failed for v in verdicts):
            servers = f"server (A): {m.server_command}\nserver (B): {self.b_server_command(m)}"
            side = {x: side_medians([s for s in starts if s.side == x], m.key) for x in ("A", "B")}
            b_context = server_context(b_config(m.config, self.ab.spec), m.workload.batch_size, side["B"])
            server_side = server_side_text(side["A"], side["B"], b_context, against="A")
            return Decision(
                REGRESSED,
                f"{head}: B is slower\n{table}\n"
                + (f"{server_side}\n" if server_side else "")
                + f"{servers}\nbenchmark: {m.bench_command}",
                summary=table,
            )
        unsure = [(v.metric, v.reason) for v in verdicts if v.verdict == INCONCLUSIVE]
        if unsure:
            return inconclusive_decision(f"{head}:", unsure, table, self.options.inconclusive)
        return Decision(PASSED, f"{head}\n{table}", summary=table)


def config_verdicts(run_log: RunLog, matrix: Matrix, overrides: Mapping[str, Tolerance]) -> list[ConfigVerdict]:
    """A verdict per config and gated metric, over every item of the config that was compared (see judge_configs)."""
    by_config: dict[str, list[tuple[MetricVerdict, tuple[float, ...]]]] = {}
    for result in run_log.results.values():
        by_config.setdefault(result.config_id, []).extend(
            (v, result.histories.get(v.metric, ())) for v in result.verdicts
        )
    return judge_configs(by_config, matrix, overrides)

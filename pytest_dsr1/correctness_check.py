"""A config's correctness item: its greedy generations on the server that is up (no extra start), recorded as the
logprob reference (--dsr1-record) or judged against it (verdict/correctness.py), per machine kind. In an A/B run,
B's generations against A's, start by start.

No pytest here: `check` returns a Decision, which the plugin turns into a pass, a skip or a failure.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from pytest_dsr1.ab.data import AbRun
from pytest_dsr1.baseline import BaselineError, BaselineStore
from pytest_dsr1.errors import ItemFailed
from pytest_dsr1.hardware import machine_key
from pytest_dsr1.logprob_reference import LogprobReference, load, reference_path, write_reference
from pytest_dsr1.logprobs import compare
from pytest_dsr1.matrix import ServerConfig
from pytest_dsr1.verdict.correctness import CorrectnessVerdict, judge_logprobs
from pytest_dsr1.verdict.item import Decision
from pytest_dsr1.verdict.outcomes import FAILED, PASSED, RECORDED, SKIPPED

if TYPE_CHECKING:
    from pytest_dsr1.runner import Runner, ServerHandle


def off_reason(config: ServerConfig) -> str | None:
    """Why `config` has no logprob check, or None."""
    if config.model.logprobs is None:
        return f"{config.id}: the logprob check is off for model {config.model.name} (accuracy.logprobs: off)"
    return None


class CorrectnessCheck:
    def __init__(self, runner: Runner, store: BaselineStore) -> None:
        self.runner = runner
        self.store = store
        self.options = runner.options
        self.run_log = runner.run_log

    def check(self, handle: ServerHandle) -> Decision:
        config = handle.config
        off = off_reason(config)
        if off:
            return self._keep(config.id, Decision(SKIPPED, off), CorrectnessVerdict(config.id, SKIPPED, off))
        check = config.model.logprobs
        assert check is not None
        try:
            generations = self.runner.generate(handle, check)
        except ItemFailed as exc:
            said = str(exc)
            return self._keep(config.id, Decision(FAILED, said), CorrectnessVerdict(config.id, FAILED, said))
        kind = machine_key(handle.fingerprint)
        hw, model = config.hardware.name, config.model.name
        path = reference_path(self.store.directory, hw, model)
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        reference = LogprobReference(now, handle.fingerprint, check, tuple(generations))
        try:
            if self.options.record:
                write_reference(path, hw, model, config.id, kind, reference)
                self.run_log.recorded_references.setdefault((hw, model), {}).setdefault(config.id, {})[kind] = reference
                said = f"{config.id}: logprob reference recorded into {path} for {kind} ({check.describe()})"
                return self._keep(config.id, Decision(RECORDED, said), CorrectnessVerdict(config.id, RECORDED, said))
            return self._compare(handle, reference, kind, path)
        except BaselineError as exc:
            said = f"{config.id}: {exc}"
            return self._keep(config.id, Decision(FAILED, said), CorrectnessVerdict(config.id, FAILED, said))

    def _compare(self, handle: ServerHandle, now: LogprobReference, kind: str, path: object) -> Decision:
        config = handle.config
        hw, model = config.hardware.name, config.model.name
        committed = load(reference_path(self.store.directory, hw, model), hw, model)
        kinds = committed.configs.get(config.id, {})
        found = kinds.get(kind)
        where = f"{committed.path} [{kind}]"
        missing = None
        if found is None:
            others = f" (it holds {', '.join(sorted(kinds))})" if kinds else ""
            missing = (
                f"no logprob reference for {config.id} on this machine kind ({kind}) in {committed.path}{others}: "
                "record one with --dsr1-record"
            )
            if self.options.missing_baseline == "skip" and self.store.local_directory is not None:
                return self._local(handle, now, kind, missing)
        decision, verdict = judge_logprobs(
            config.id,
            now.generations,
            now.check,
            found,
            where,
            missing,
            self.options.missing_baseline,
            now.fingerprint.get("vllm"),
        )
        return self._keep(config.id, decision, verdict)

    def _local(self, handle: ServerHandle, now: LogprobReference, kind: str, problem: str) -> Decision:
        """No committed reference fits this machine: use (or start) this machine's own, as speed baselines do."""
        config = handle.config
        hw, model = config.hardware.name, config.model.name
        assert self.store.local_directory is not None
        path = reference_path(self.store.local_directory / kind, hw, model)
        found = load(path, hw, model).configs.get(config.id, {}).get(kind)
        if found is not None:
            decision, verdict = judge_logprobs(
                config.id,
                now.generations,
                now.check,
                found,
                f"{path}, this machine's own",
                None,
                self.options.missing_baseline,
                now.fingerprint.get("vllm"),
            )
            return self._keep(config.id, decision, verdict)
        write_reference(path, hw, model, config.id, kind, now)
        said = (
            f"{config.id}: correctness not checked: {problem}. This run is now this machine's own logprob reference "
            f"({path}); the next run compares against it"
        )
        return self._keep(config.id, Decision(SKIPPED, said), CorrectnessVerdict(config.id, SKIPPED, said))

    def _keep(self, config_id: str, decision: Decision, verdict: CorrectnessVerdict) -> Decision:
        self.run_log.correctness[config_id] = verdict
        return decision


FIRST_A, A_OUTPUT = "A's first start", "A's output"


def judge_ab_outputs(ab: AbRun, config: ServerConfig) -> tuple[Decision, CorrectnessVerdict]:
    """A/B: every start's generations against A's first start. A's own starts must agree (else the check cannot
    tell B from A's own wobble); a B start that diverges makes it `B diverges`, whatever its speed."""
    check = config.model.logprobs
    assert check is not None
    for start in ab.starts_of(config.id):
        if start.generation_error is not None:
            said = (
                f"{config.id}: {start.side} start {start.index} could not answer the logprob check: "
                f"{start.generation_error}"
            )
            return Decision(FAILED, said), CorrectnessVerdict(config.id, FAILED, said.splitlines()[0])
    starts = [s for s in ab.starts_of(config.id) if s.generations is not None]
    a_starts = [s for s in starts if s.side == "A"]
    b_starts = [s for s in starts if s.side == "B"]
    if not a_starts or not b_starts:
        said = f"{config.id}: outputs not compared: no A or no B start answered the logprob check"
        return Decision(FAILED, said), CorrectnessVerdict(config.id, FAILED, said)
    first = a_starts[0]
    assert first.generations is not None
    for start in a_starts[1:]:
        assert start.generations is not None
        own = compare(first.generations, start.generations, check.max_drift)
        if not own.close:
            said = (
                f"{config.id}: outputs not compared: A's own starts disagree (A start {start.index} against A start "
                f"{first.index}: {own.describe(FIRST_A)})"
            )
            return Decision(FAILED, said), CorrectnessVerdict(config.id, FAILED, said, own)
    worst = None
    for start in b_starts:
        assert start.generations is not None
        against = compare(first.generations, start.generations, check.max_drift)
        if not against.close:
            said = (
                f"{config.id}: B diverges: B start {start.index} against A start {first.index}: "
                f"{against.describe(A_OUTPUT)}"
            )
            return Decision(FAILED, said), CorrectnessVerdict(config.id, FAILED, said, against)
        worst = against if worst is None or against.max_drift > worst.max_drift else worst
    seen = worst.describe(A_OUTPUT) if worst else ""
    said = f"{config.id}: B's outputs match A's over {len(b_starts)} B start(s): {seen}"
    return Decision(PASSED, said), CorrectnessVerdict(config.id, PASSED, said, worst)

"""A config's correctness item: its greedy generations on the server that is up (no extra start), recorded as the
logprob reference (--dsr1-record) or judged against it (verdict/correctness.py), per machine kind. In an A/B run,
B's generations against A's, start by start.

No pytest here: `check` returns a Decision, which the plugin turns into a pass, a skip or a failure.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_dsr1.ab.data import AbRun
from pytest_dsr1.baseline import BaselineError, BaselineStore
from pytest_dsr1.errors import ItemFailed
from pytest_dsr1.gsm8k import Gsm8kCheck, dataset_problem, judge_gsm8k
from pytest_dsr1.hardware import machine_key
from pytest_dsr1.logprob_reference import LogprobReference, load, reference_path, write_reference
from pytest_dsr1.logprobs import Generation, compare
from pytest_dsr1.matrix import ServerConfig
from pytest_dsr1.verdict.correctness import CorrectnessVerdict, judge_logprobs
from pytest_dsr1.verdict.item import Decision
from pytest_dsr1.verdict.outcomes import FAILED, PASSED, RECORDED, SKIPPED, Outcome, SkipOrFail

if TYPE_CHECKING:
    from pytest_dsr1.runner import Runner, ServerHandle


def off_reason(config: ServerConfig) -> str | None:
    """Why `config` has no correctness check, or None."""
    if config.model.logprobs is None and config.model.gsm8k is None:
        return (
            f"{config.id}: the correctness checks are off for model {config.model.name} "
            "(accuracy.logprobs: off, and no accuracy.gsm8k)"
        )
    return None


@dataclass
class Answers:
    """What the server answered for the config's checks: the logprob generations, the GSM8K score, or why not."""

    generations: tuple[Generation, ...] = ()
    gsm8k: tuple[float, int] | None = None
    gsm8k_missing: str | None = None  # the GSM8K check could not run here: no data (how to provide it)


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
        try:
            answers = self._ask(handle)
        except ItemFailed as exc:
            said = str(exc)
            first = said.splitlines()[0]
            return self._keep(config.id, Decision(FAILED, said), CorrectnessVerdict(config.id, FAILED, first))
        kind = machine_key(handle.fingerprint)
        hw, model = config.hardware.name, config.model.name
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        reference = LogprobReference(now, handle.fingerprint, config.model.logprobs, answers.generations, answers.gsm8k)
        try:
            if self.options.record:
                return self._record(config, reference, kind, answers)
            committed = load(reference_path(self.store.directory, hw, model), hw, model)
            kinds = committed.configs.get(config.id, {})
            found = kinds.get(kind)
            if found is not None:
                return self._judge(config, reference, found, f"{committed.path} [{kind}]", None, answers)
            others = f" (it holds {', '.join(sorted(kinds))})" if kinds else ""
            missing = (
                f"no reference for {config.id} on this machine kind ({kind}) in {committed.path}{others}: "
                "record one with --dsr1-record"
            )
            if self.options.missing_baseline == "skip" and self.store.local_directory is not None:
                return self._local(config, reference, kind, missing, answers)
            return self._judge(config, reference, None, str(committed.path), missing, answers)
        except BaselineError as exc:
            said = f"{config.id}: {exc}"
            return self._keep(config.id, Decision(FAILED, said), CorrectnessVerdict(config.id, FAILED, said))

    def _ask(self, handle: ServerHandle) -> Answers:
        """The config's questions to its server: the logprob prompts, then GSM8K where its data is here."""
        model = handle.config.model
        answers = Answers()
        if model.logprobs is not None:
            answers.generations = tuple(self.runner.generate(handle, model.logprobs))
        if model.gsm8k is not None:
            answers.gsm8k_missing = dataset_problem(model.gsm8k)
            if answers.gsm8k_missing is None:
                answers.gsm8k = self.runner.run_gsm8k(handle, model.gsm8k)
        return answers

    def _record(self, config: ServerConfig, reference: LogprobReference, kind: str, answers: Answers) -> Decision:
        hw, model = config.hardware.name, config.model.name
        path = reference_path(self.store.directory, hw, model)
        write_reference(path, hw, model, config.id, kind, reference)
        self.run_log.recorded_references.setdefault((hw, model), {}).setdefault(config.id, {})[kind] = reference
        what = [config.model.logprobs.describe()] if config.model.logprobs is not None else []
        if answers.gsm8k is not None:
            what.append(f"GSM8K exact match {answers.gsm8k[0]:.3f} over {answers.gsm8k[1]} questions")
        said = f"{config.id}: reference recorded into {path} for {kind} ({'; '.join(what)})"
        if answers.gsm8k_missing:  # the logprob part is recorded; GSM8K could not run here
            said += f"; GSM8K not recorded: {answers.gsm8k_missing}"
            outcome: Outcome = FAILED if self.options.missing_baseline == "fail" else RECORDED
            return self._keep(config.id, Decision(outcome, said), CorrectnessVerdict(config.id, outcome, said))
        return self._keep(config.id, Decision(RECORDED, said), CorrectnessVerdict(config.id, RECORDED, said))

    def _local(
        self, config: ServerConfig, now: LogprobReference, kind: str, problem: str, answers: Answers
    ) -> Decision:
        """No committed reference fits this machine: use (or start) this machine's own, as speed baselines do."""
        hw, model = config.hardware.name, config.model.name
        assert self.store.local_directory is not None
        path = reference_path(self.store.local_directory / kind, hw, model)
        found = load(path, hw, model).configs.get(config.id, {}).get(kind)
        if found is not None:
            return self._judge(config, now, found, f"{path}, this machine's own", None, answers)
        write_reference(path, hw, model, config.id, kind, now)
        said = (
            f"{config.id}: correctness not checked: {problem}. This run is now this machine's own reference "
            f"({path}); the next run compares against it"
        )
        return self._keep(config.id, Decision(SKIPPED, said), CorrectnessVerdict(config.id, SKIPPED, said))

    def _judge(
        self,
        config: ServerConfig,
        now: LogprobReference,
        found: LogprobReference | None,
        where: str,
        missing: str | None,
        answers: Answers,
    ) -> Decision:
        """Each check that ran, against the reference; the item's decision is the worst of them."""
        mode = self.options.missing_baseline
        parts: list[tuple[Decision, CorrectnessVerdict]] = []
        if config.model.logprobs is not None:
            parts.append(
                judge_logprobs(
                    config.id,
                    now.generations,
                    config.model.logprobs,
                    found,
                    where,
                    missing,
                    mode,
                    now.fingerprint.get("vllm"),
                )
            )
        if config.model.gsm8k is not None:
            parts.append(judge_task(config.id, config.model.gsm8k, answers, found, mode))
        decision, verdict = combine(config.id, parts)
        return self._keep(config.id, decision, verdict)

    def _keep(self, config_id: str, decision: Decision, verdict: CorrectnessVerdict) -> Decision:
        self.run_log.correctness[config_id] = verdict
        return decision


def judge_task(
    config_id: str, check: Gsm8kCheck, answers: Answers, found: LogprobReference | None, mode: SkipOrFail
) -> tuple[Decision, CorrectnessVerdict]:
    """The GSM8K part: not run for want of data (the missing-baseline rule), or judged against the recorded score
    (where there is one) and the floor."""
    if answers.gsm8k is None:
        said = f"{config_id}: GSM8K not checked: {answers.gsm8k_missing}"
        outcome: Outcome = FAILED if mode == "fail" else SKIPPED
        return Decision(outcome, said), CorrectnessVerdict(config_id, outcome, said)
    recorded = found.gsm8k[0] if found is not None and found.gsm8k is not None else None
    result = judge_gsm8k(answers.gsm8k[0], answers.gsm8k[1], recorded, check.floor)
    said = f"{config_id}: {result.line()}"
    outcome = FAILED if result.failed else PASSED
    return Decision(outcome, said), CorrectnessVerdict(config_id, outcome, said, gsm8k=result)


def combine(config_id: str, parts: list[tuple[Decision, CorrectnessVerdict]]) -> tuple[Decision, CorrectnessVerdict]:
    """One decision for the item: failed if any check failed, else skipped if any could not be checked, else
    passed; its message and line hold every check's."""
    outcomes = [d.outcome for d, _ in parts]
    outcome: Outcome = FAILED if FAILED in outcomes else SKIPPED if SKIPPED in outcomes else PASSED
    message = "\n".join(d.message for d, _ in parts)
    summary = "; ".join(v.summary.removeprefix(f"{config_id}: ") for _, v in parts)
    comparison = next((v.comparison for _, v in parts if v.comparison is not None), None)
    reference = next((v.reference for _, v in parts if v.reference is not None), None)
    gsm8k = next((v.gsm8k for _, v in parts if v.gsm8k is not None), None)
    verdict = CorrectnessVerdict(config_id, outcome, f"{config_id}: {summary}", comparison, reference, gsm8k)
    return Decision(outcome, message), verdict


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

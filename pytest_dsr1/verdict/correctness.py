"""The correctness verdict of a config: its greedy generations against its recorded logprob reference (the rule
is logprobs.compare). Pure: the reference, the generations and the rules in; a Decision out.

A missing reference follows the missing-baseline rule (skip, or fail under --dsr1-missing-baseline=fail and
--dsr1-strict), since a check that compared nothing must not read as a pass. A reference of another vLLM
version is still compared (catching a numerics change across an upgrade is the point), and a divergence then
says which versions, so that an intended change is re-recorded rather than chased.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pytest_dsr1.gsm8k import Gsm8kResult
from pytest_dsr1.logprob_reference import LogprobReference
from pytest_dsr1.logprobs import Comparison, Generation, LogprobCheck, compare
from pytest_dsr1.verdict.item import Decision
from pytest_dsr1.verdict.outcomes import FAILED, PASSED, SKIPPED, Outcome, SkipOrFail

CORRECTNESS = "logprobs"  # the check's name in reports


@dataclass(frozen=True)
class CorrectnessVerdict:
    """What the reports keep of a config's check."""

    config_id: str
    outcome: Outcome  # passed | failed | skipped | recorded
    summary: str  # one line
    comparison: Comparison | None = None
    reference: str | None = None  # the file (and machine kind) it was compared with
    gsm8k: Gsm8kResult | None = None  # the GSM8K check, where it ran


def judge_logprobs(
    config_id: str,
    generations: Sequence[Generation],
    check: LogprobCheck,
    reference: LogprobReference | None,
    where: str,
    missing: str | None,
    mode: SkipOrFail,
    vllm_now: str | None,
) -> tuple[Decision, CorrectnessVerdict]:
    """Judge `generations` against `reference` (found at `where`), or say why it cannot be (`missing`)."""
    if reference is None or missing is not None:
        problem = missing or f"no logprob reference for {config_id} in {where}"
        message = f"{config_id}: correctness not checked: {problem}"
        outcome: Outcome = FAILED if mode == "fail" else SKIPPED
        return Decision(outcome, message), CorrectnessVerdict(config_id, outcome, message, None, where)
    if reference.check is None or not reference.check.same_request(check):
        asked = reference.check.describe() if reference.check is not None else "no logprob check"
        message = (
            f"{config_id}: correctness not checked: the reference in {where} answered other requests "
            f"({asked}) than the matrix asks now ({check.describe()}): re-record it with "
            "--dsr1-record"
        )
        outcome = FAILED if mode == "fail" else SKIPPED
        return Decision(outcome, message), CorrectnessVerdict(config_id, outcome, message, None, where)
    comparison = compare(reference.generations, generations, check.max_drift)
    said = f"{config_id}: {comparison.describe()} ({where}, recorded {reference.date})"
    if comparison.close:
        return Decision(PASSED, said), CorrectnessVerdict(config_id, PASSED, said, comparison, where)
    vllm_then = reference.fingerprint.get("vllm")
    hint = (
        f" The reference was recorded with vLLM {vllm_then}, this server is vLLM {vllm_now}: if that upgrade is "
        "meant to change the numerics, re-record the reference with --dsr1-record."
        if vllm_then and vllm_now and vllm_then != vllm_now
        else " Same vLLM version as the reference: the server computes something else than it did (a kernel, "
        "a setting, the weights)."
    )
    message = f"{config_id}: WRONG OUTPUT: {comparison.describe()} ({where}).{hint}"
    return Decision(FAILED, message), CorrectnessVerdict(config_id, FAILED, message.split(". ")[0], comparison, where)

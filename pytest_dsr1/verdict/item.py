"""An item's verdict: its samples against its reference, under the run's rules -> a Decision, or what to measure
next. Data in, data out: the caller measures, writes files and calls again (check.py does, for a serving item).

A regression is believed only once it holds: while an item looks regressed the verdict asks for more runs on the
same server (up to `Rules.extra_runs`), then for a freshly started server (shared machines shift a whole server's
speed between starts), whose samples alone then decide.

An item that is not regressed but undecided (`undecided`: its median's interval holds the edge of the allowed
change, the noise test could not tell, or too few samples to reach alpha) asks for more runs on the same server,
up to `Rules.undecided_runs` (the measurement budget, budget.py). A clear pass or failure asks for nothing.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal

from pytest_dsr1 import server_metrics
from pytest_dsr1.tolerance import Tolerance
from pytest_dsr1.verdict.metric import (
    MetricVerdict,
    compare,
    inconclusive,
    median_or_none,
    regressed,
    smallest_p,
    t95,
)
from pytest_dsr1.verdict.outcomes import (
    ALPHA,
    FAILED,
    INCONCLUSIVE,
    NOISE,
    NOT_COMPARED,
    OK,
    PASSED,
    REGRESSED,
    SKIPPED,
    STALE,
    Outcome,
    SkipOrFail,
    is_worse,
    judgeable_ceiling,
)
from pytest_dsr1.verdict.text import brief, server_side_text, verdict_table

if TYPE_CHECKING:
    from pytest_dsr1.baseline import Entry

# Fingerprint fields that may differ from the baseline's without stopping the comparison, but are worth a note.
NOTED_FINGERPRINT_CHANGES = ("host_cpu", "driver", "cuda")

MORE_RUNS: Final = "more runs on this server"
FRESH_SERVER: Final = "a fresh server"
UNDECIDED_RUNS: Final = "more runs while undecided"  # paid from the measurement budget
NextStep = Literal["more runs on this server", "a fresh server", "more runs while undecided"]


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


def tolerances_off(config_id: str, measured: str = "") -> Decision:
    """The one rule for a config whose every metric has its tolerance turned off: nothing to judge, said so."""
    seen = f" (measured: {measured})" if measured else ""
    return Decision(
        SKIPPED,
        f"not compared: every metric's tolerance is off for {config_id}{seen}; give a metric a tolerance in the "
        "matrix or with --dsr1-tolerance",
    )


@dataclass(frozen=True)
class Reference:
    """What an item is judged against: the newest comparable session's samples (the noise test's baseline), each
    comparable session's median per metric (the history band), and where it came from."""

    samples: Mapping[str, Sequence[float]]
    histories: Mapping[str, tuple[float, ...]]
    medians: Mapping[str, float]  # the newest comparable session's medians: the server-side table's baseline column
    label: str  # e.g. "recorded baseline of 2026-12-05T08:00:00Z (baselines/cpu/tiny.json)"
    fingerprint: Mapping[str, Any]  # the entry's: version and machine notes
    note: str = ""  # said on a pass, e.g. that this machine's own baseline was used
    basis: str = ""  # what a history band rests on: "5 sessions from 1 machine on 1 day"
    history_dates: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # per metric, beside `histories`


def reference_of(entry: Entry, fingerprint: Mapping[str, Any], source: str, note: str = "") -> Reference:
    """A baseline entry as the reference of a measurement taken on a machine with `fingerprint`: only sessions
    recorded on a machine of the same kind count."""
    sessions = entry.sessions_like(dict(fingerprint))
    histories: dict[str, list[float]] = {}
    dates: dict[str, list[str]] = {}
    for session in sessions:
        for name, samples in session.metrics.items():
            value = median_or_none(samples)
            if value is not None:
                histories.setdefault(name, []).append(value)
                dates.setdefault(name, []).append(session.date)
    return Reference(
        samples=sessions[-1].metrics if sessions else entry.metrics,
        histories={k: tuple(v) for k, v in histories.items()},
        # This kind's newest session, as `samples`: never another kind's, whose numbers judge nothing here.
        medians=medians_of(sessions[-1].metrics if sessions else entry.metrics),
        label=f"{entry.provenance} baseline of {entry.date} ({source})",
        fingerprint=entry.fingerprint,
        note=note,
        basis=sessions_basis([s.date for s in sessions]),
        history_dates={k: tuple(v) for k, v in dates.items()},
    )


def sessions_basis(dates: Sequence[str]) -> str:
    """What a history rests on, as independent evidence goes: how many sessions, on how many days, and over what
    span of time ("5 session(s) on 1 day(s), within 7 minutes"). Sessions minutes apart are one phase of one
    machine, not five nights. (Machines are not counted: the recorded machine id is the same on every machine of
    some hosting platforms.)"""
    times = sorted(dt.datetime.fromisoformat(d.replace("Z", "+00:00")) for d in dates if d)
    if not times:
        return f"{len(dates)} session(s)"
    days = len({t.date() for t in times})
    span_h = (times[-1] - times[0]).total_seconds() / 3600
    span = (
        f"{span_h * 60:.0f} minutes"
        if span_h < 2
        else f"{span_h:.1f} hours"
        if span_h < 48
        else f"{span_h / 24:.0f} days"
    )
    return f"{len(dates)} session(s) on {days} day(s), within {span}"


def medians_of(samples: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {k: v for k, xs in samples.items() if (v := median_or_none(xs)) is not None}


@dataclass(frozen=True)
class Item:
    """What the verdict's text says about the item: its id, commands, load and the server's cap on it."""

    key: str
    config_id: str
    server_command: str
    bench_command: str
    concurrency: int
    max_num_seqs: int | None = None
    fingerprint: Mapping[str, Any] = field(default_factory=dict)  # the machine it was measured on


@dataclass(frozen=True)
class Rules:
    """How an item is judged: the gated metrics' tolerances, alpha, what an inconclusive item does, and how much
    more may be measured before a regression is believed."""

    tolerances: Mapping[str, Tolerance]
    alpha: float = ALPHA
    inconclusive: SkipOrFail = "skip"
    extra_runs: int = 0  # runs that may be added on the same server while the item looks regressed
    fresh_server: bool = False  # whether a regression must then hold on a freshly started server too
    ceilings: Mapping[str, float] = field(default_factory=dict)  # metric -> widest allowed change that may pass
    undecided_runs: int = 0  # runs that may be added on the same server while the item is undecided (the budget)


@dataclass(frozen=True)
class Progress:
    """What was measured for the item so far, beyond its planned runs."""

    extra_runs: int = 0  # added on the current server while it looked regressed
    first_server: tuple[MetricVerdict, ...] = ()  # the verdicts on the server the current one replaced
    undecided_runs: int = 0  # added while it was undecided (the budget's runs)


@dataclass(frozen=True)
class ItemVerdict:
    """The verdicts per metric, and either the decision or the next thing to measure."""

    verdicts: tuple[MetricVerdict, ...]
    decision: Decision | None = None
    next_step: NextStep | None = None
    why: str = ""  # why the next step: the item looked regressed, or what was undecided


def undecided(v: MetricVerdict, alpha: float = ALPHA, more: int = 1) -> str | None:
    """Why `more` runs on the same server could change this metric's verdict, or None where they could not (a
    clear pass or failure, or a gate whose allowed change alone decides). Undecided: the noise test could not tell;
    too few samples to reach alpha, where `more` would reach it; or the 95% interval of the measured median holds
    the edge of the allowed change."""
    n, n_baseline = len(v.measured_samples), len(v.baseline_samples)
    if v.verdict == NOISE:
        return f"{v.metric}: beyond the allowed change, but the noise test could not tell (p={v.p_value:.3f})"
    if v.verdict == INCONCLUSIVE and not v.history and n_baseline:
        if smallest_p(n_baseline, n) > alpha >= smallest_p(n_baseline, n + more):
            return f"{v.metric}: {n} samples against {n_baseline} cannot reach p <= {alpha}"
        return None
    if v.verdict not in (OK, REGRESSED) or n < 2 or v.baseline is None or v.allowed is None or v.measured is None:
        return None
    edge = v.baseline - v.allowed if is_worse(v.metric, -1.0) else v.baseline + v.allowed  # a fall is worse
    half = t95(n - 1) * statistics.stdev(v.measured_samples) / math.sqrt(n)
    if abs(v.measured - edge) >= half:
        return None
    return (
        f"{v.metric}: the 95% interval of its median, {_num(v.measured - half)} to {_num(v.measured + half)} "
        f"({n} runs), holds the edge of the allowed change, {_num(edge)}"
    )


def _num(x: float) -> str:
    return f"{x:,.1f}" if abs(x) < 1000 else f"{x:,.0f}"


def with_basis(v: MetricVerdict, basis: str) -> MetricVerdict:
    """A band-based verdict says what its band rests on: sessions minutes apart on one machine are not nights."""
    if not v.history or not basis:
        return v
    return replace(v, reason=f"{v.reason}; the band rests on {basis}")


def at_ceiling(v: MetricVerdict, ceiling: float | None, basis: str) -> MetricVerdict:
    """A verdict whose allowed change reaches its ceiling cannot fail where it matters: unless it regressed even
    so, it is inconclusive, too noisy to judge here, never ok. A throughput's ceiling is below 100% whatever is
    set (a gate of 100% passes at zero)."""
    if ceiling is None or v.verdict in (REGRESSED, NOT_COMPARED) or v.allowed is None or not v.baseline:
        return v
    allowed = v.allowed / abs(v.baseline)
    ceiling = judgeable_ceiling(v.metric, ceiling)
    if allowed < ceiling:
        return v
    source = f"the band rests on {basis}" if v.history else f"the tolerance {v.tolerance}"
    why = f"too noisy to judge here (allowed ±{allowed * 100:.1f}%, ceiling ±{ceiling * 100:.0f}%; {source})"
    return replace(v, verdict=INCONCLUSIVE, reason=why)


def server_context(item: Item, now: Mapping[str, float]) -> server_metrics.Context:
    """What a failure's likely causes are judged against: concurrency, the server's cap, the client's latencies
    (`now`: this run's medians)."""
    return server_metrics.Context(
        concurrency=item.concurrency,
        max_num_seqs=item.max_num_seqs,
        client_ttft_ms=now.get("mean_ttft_ms"),
        client_itl_ms=now.get("mean_itl_ms"),
    )


def judge_item(
    item: Item,
    samples: Mapping[str, Sequence[float]],
    reference: Reference,
    rules: Rules,
    progress: Progress = Progress(),
) -> ItemVerdict:
    """The item's samples against its reference: a Decision, or the next step (MORE_RUNS, then FRESH_SERVER)
    while it looks regressed and the rules allow more measurement."""
    if not rules.tolerances:
        return ItemVerdict((), tolerances_off(item.config_id, brief(samples)))
    compared = compare(reference.samples, samples, rules.tolerances, rules.alpha, reference.histories)
    verdicts = tuple(
        at_ceiling(with_basis(v, reference.basis), rules.ceilings.get(v.metric), reference.basis) for v in compared
    )
    if regressed(verdicts):
        if progress.extra_runs < rules.extra_runs:
            return ItemVerdict(verdicts, next_step=MORE_RUNS, why="it looked regressed")
        if rules.fresh_server and not progress.first_server:
            return ItemVerdict(verdicts, next_step=FRESH_SERVER)
    elif progress.undecided_runs < rules.undecided_runs:
        more = rules.undecided_runs - progress.undecided_runs
        reasons = [why for v in verdicts if (why := undecided(v, rules.alpha, more))]
        if reasons:
            more_metrics = f"; and {len(reasons) - 1} more metric(s)" if len(reasons) > 1 else ""
            return ItemVerdict(verdicts, next_step=UNDECIDED_RUNS, why=reasons[0] + more_metrics)
    return ItemVerdict(verdicts, _decide(item, samples, reference, rules, progress, verdicts))


def _decide(
    item: Item,
    samples: Mapping[str, Sequence[float]],
    reference: Reference,
    rules: Rules,
    progress: Progress,
    verdicts: tuple[MetricVerdict, ...],
) -> Decision:
    note = notes(reference.fingerprint, item.fingerprint, progress, verdicts)
    if regressed(verdicts):
        table = verdict_table(verdicts) + note
        now = medians_of(samples)
        server_side = server_side_text(reference.medians, now, server_context(item, now))
        return Decision(
            REGRESSED,
            f"{item.key} regressed against {reference.label}:\n{table}\n"
            + (f"{server_side}\n" if server_side else "")
            + f"server: {item.server_command}\nbenchmark: {item.bench_command}",
            summary=table,
        )
    unsure = inconclusive(verdicts)
    if unsure:
        reasons = [(v.metric, v.reason) for v in unsure]
        return inconclusive_decision(item.key, reasons, verdict_table(verdicts) + note, rules.inconclusive)
    stale = [f"{v.metric}: {v.reason}" for v in verdicts if v.verdict == STALE]
    if stale:
        return Decision(PASSED, "; ".join(stale))
    return Decision(PASSED, note.strip() if progress.first_server else reference.note)


def version_change(baseline: Mapping[str, Any], now: Mapping[str, Any]) -> tuple[str | None, str | None] | None:
    """(vLLM in the baseline, vLLM now) where they differ."""
    versions = (baseline.get("vllm"), now.get("vllm"))
    return versions if versions[0] != versions[1] else None


def notes(
    baseline: Mapping[str, Any], now: Mapping[str, Any], progress: Progress, verdicts: Sequence[MetricVerdict]
) -> str:
    """What a reader of the verdict should know: version and machine changes, confirmations, restarts."""
    note = ""
    versions = version_change(baseline, now)
    if versions:
        note = f"\n(vLLM {versions[0]} in the baseline, {versions[1]} now)"
    for key in NOTED_FINGERPRINT_CHANGES:
        before, current = baseline.get(key), now.get(key)
        if before and current and before != current:
            note += f"\n({key} differs: {before!r} in the baseline, {current!r} now)"
    if progress.extra_runs:
        note += f"\n(confirmation: {progress.extra_runs} extra run(s); every sample is shown)"
    if progress.undecided_runs:
        note += f"\n(measured more while undecided: {progress.undecided_runs} extra run(s); every sample is shown)"
    if progress.first_server:
        held = "and it held there" if regressed(verdicts) else "and it did not hold there: not a regression"
        note += (
            "\n(it looked regressed on the config's first server, so it was measured again on a freshly started "
            f"one, {held}; the first server's verdicts:\n{verdict_table(progress.first_server)})"
        )
    return note

"""What people read: the verdict table of a failed item, the session summary, results.json and summary.md."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from pytest_dsr1 import html_report
from pytest_dsr1.ab.report import ab_json, ab_markdown, ab_terminal, starts_text
from pytest_dsr1.baseline import BaselineFile, baseline_path, write_atomic
from pytest_dsr1.budget import Ledger
from pytest_dsr1.logprob_reference import reference_path, write_reference
from pytest_dsr1.metric_catalog import METRICS
from pytest_dsr1.run_log import ItemResult, RunLog
from pytest_dsr1.timing import TIMING_HEADER, gpu_wait_lines, metrics_line, starts_line, timing_rows, worker_line
from pytest_dsr1.verdict.config import ConfigVerdict
from pytest_dsr1.verdict.correctness import CORRECTNESS, CorrectnessVerdict
from pytest_dsr1.verdict.metric import MetricVerdict
from pytest_dsr1.verdict.outcomes import (
    BEYOND_TOLERANCE,
    FAILED,
    IMPROVED,
    INCONCLUSIVE,
    NOISE,
    NOT_COMPARED,
    OK,
    RECORDED,
    REGRESSED,
    SKIPPED,
    STALE,
    Outcome,
    worsening,
)
from pytest_dsr1.verdict.text import (
    VERDICT_HEADER,
    allowed_text,
    caught_text,
    format_table,
    md_table,
    num,
    pct,
    verdict_rows,
)

RESULTS_SCHEMA_VERSION = 1


def junit_properties(result: ItemResult) -> list[tuple[str, str]]:
    props: list[tuple[str, str]] = [("dsr1_outcome", result.outcome)]
    for v in result.verdicts:
        props += [
            (f"dsr1_{v.metric}", num(v.measured)),
            (f"dsr1_{v.metric}_baseline", num(v.baseline)),
            (f"dsr1_{v.metric}_verdict", v.verdict),
        ]
    for ab in result.ab_verdicts:
        props += [
            (f"dsr1_{ab.metric}_a", starts_text(ab.a_starts)),
            (f"dsr1_{ab.metric}_b", starts_text(ab.b_starts)),
            (f"dsr1_{ab.metric}_ab_change", pct(ab.change_pct)),
            (f"dsr1_{ab.metric}_ab_verdict", ab.verdict),
        ]
    if not result.verdicts and not result.ab_verdicts and result.measurement is not None:
        for k, xs in result.measurement.samples.items():
            props.append((f"dsr1_{k}", num(statistics.median(xs))))
    return props


def _severity(v: MetricVerdict) -> tuple[int, float]:
    order = {REGRESSED: 0, INCONCLUSIVE: 1, NOISE: 1, STALE: 3, IMPROVED: 4, OK: 2, NOT_COMPARED: 5}
    worse = 0.0
    if v.change_pct is not None:
        worse = worsening(v.metric, v.change_pct)
    return order.get(v.verdict, 9), -worse


def summary_rows(run_log: RunLog) -> list[list[str]]:
    flat = [(r.key, v) for r in run_log.results.values() for v in r.verdicts]
    flat.sort(key=lambda kv: _severity(kv[1]))
    return [[key, *row] for key, v in flat for row in verdict_rows([v])]


def terminal_summary(run_log: RunLog, tr: Any) -> None:
    if run_log.dry_run:
        tr.section("dsr1 dry run: the commands each item would run", sep="=")
        for lines in run_log.dry_run.values():
            for line in lines:
                tr.write_line(line)
            tr.write_line("")
    if not run_log.configs_run and not run_log.results and not run_log.baseline_writes:
        return
    tr.section("dsr1 serving summary", sep="=")
    rows = summary_rows(run_log)
    if rows:
        table = format_table(["item", *VERDICT_HEADER], rows)
        for line in table.splitlines():
            markup = (
                {"red": True, "bold": True}
                if f" {REGRESSED}" in line
                else ({"yellow": True} if f" {STALE}" in line else {})
            )
            tr.write_line(line, **markup)
    for cv in run_log.config_verdicts:
        tr.write_line(f"dsr1: config {cv.line()}", **({"red": True, "bold": True} if cv.failed else {}))
    for line in detection_lines(run_log):
        tr.write_line(f"dsr1: {line}")
    for check in run_log.correctness.values():
        markup = {"red": True, "bold": True} if check.outcome == FAILED else {}
        tr.write_line(f"dsr1: correctness {check.summary}", **markup)
    for cid in dict.fromkeys(run_log.configs_run):
        for override in run_log.stats[cid].overrides:
            tr.write_line(f"dsr1: {cid}: {override}", yellow=True)
    for line in no_verdict_lines(run_log):
        tr.write_line(f"dsr1: {line}", yellow=True)
    if run_log.results and not run_log.spending.budget.off:
        head, *details = run_log.spending.lines()
        tr.write_line(f"dsr1: {head}")
        for line in details:
            tr.write_line(f"  {line}")
    if run_log.ab is not None:
        ab_terminal(run_log.ab, tr)
    other = [r for r in run_log.results.values() if not r.verdicts and not r.ab_verdicts]
    for r in other:
        if r.outcome == RECORDED:
            continue
        tr.write_line(
            f"{r.key}: {r.outcome}: {r.message.splitlines()[0] if r.message else ''}",
            **({"red": True} if r.outcome == "failed" else {}),
        )
    for (before, now), n in run_log.version_changes.items():
        tr.write_line(
            f"dsr1: compared across vLLM versions: {before} in the baseline, {now} now ({n} item(s))", yellow=True
        )
    for path, uses in run_log.local_baseline_uses.items():
        compared = sum(what == "compared" for _, what in uses)
        recorded = len(uses) - compared
        if compared:
            tr.write_line(
                f"dsr1: {compared} item(s) compared with this machine's own baseline {path} "
                "(no committed baseline was recorded on this machine)",
                yellow=True,
            )
        if recorded:
            tr.write_line(
                f"dsr1: {recorded} item(s) had no baseline for this machine: this run is now its own baseline "
                f"{path}, and the next run compares against it",
                yellow=True,
            )
    stale = [r for r in run_log.results.values() if any(v.verdict == STALE for v in r.verdicts)]
    for r in stale:
        tr.write_line(f"warning: {r.key}: {r.message}", yellow=True)
    if run_log.baseline_writes:
        tr.write_line("")
        for path in dict.fromkeys(r[0] for r in run_log.baseline_writes):
            tr.write_line(f"recorded baselines into {path} (old -> new median):")
            by_item: dict[str, list[str]] = {}
            for p, key, metric, old, new in run_log.baseline_writes:
                if p == path and metric in ("output_throughput", "mean_ttft_ms", "mean_tpot_ms"):
                    by_item.setdefault(key, []).append(f"{metric} {num(old)} -> {num(new)}")
            for key, changes in by_item.items():
                tr.write_line(f"  {key}: " + ", ".join(changes))
    if run_log.configs_run:
        tr.write_line("")
        for line in format_table(TIMING_HEADER, timing_rows(run_log)).splitlines():
            tr.write_line(line)
        n = len(run_log.configs_run)
        tr.write_line(f"dsr1: {starts_line(run_log)}")
        if run_log.worker_wait_s is not None:
            tr.write_line(f"dsr1: {worker_line(run_log.worker_wait_s)}")
        for note in [metrics_line(run_log), *gpu_wait_lines(run_log)]:
            if note:
                tr.write_line(f"dsr1: {note}")
        for cid in dict.fromkeys(run_log.configs_run):
            mem = run_log.stats[cid].gpu_memory_after_stop
            if mem:
                tr.write_line(
                    f"dsr1: GPU memory used after stopping {cid} (MiB): " + ", ".join(f"{u}/{t}" for u, t in mem)
                )
        if run_log.part_logs:  # pytest -n: each worker kept its servers' logs
            tr.write_line("dsr1: logs in " + ", ".join(dict.fromkeys(run_log.part_logs)))
        elif n:
            tr.write_line(f"dsr1: logs in {run_log.run_dir}")
    for info in run_log.stale_cleaned:
        tr.write_line(
            f"dsr1: stopped a leftover server of an earlier run: {info.get('name')} (pgid {info['pgid']})", yellow=True
        )


# ---------------------------------------------------------------- files


def _verdict_json(v: MetricVerdict) -> dict[str, Any]:
    return {
        "metric": v.metric,
        "baseline": v.baseline,
        "measured": v.measured,
        "change_pct": v.change_pct,
        "allowed": v.allowed,
        "tolerance": v.tolerance,
        "verdict": v.verdict,
        "reason": v.reason,
        "p_value": v.p_value,
        "baseline_samples": list(v.baseline_samples),
        "measured_samples": list(v.measured_samples),
        "history": list(v.history),
        "detection_pct": v.detection_pct,
    }


def _item_json(r: ItemResult) -> dict[str, Any]:
    m = r.measurement
    return {
        "id": r.key,
        "config": r.config_id,
        "workload": {
            "name": r.workload.name,
            "input_len": r.workload.input_len,
            "output_len": r.workload.output_len,
            "batch_size": r.workload.batch_size,
        },
        "outcome": r.outcome,
        "message": r.message,
        "wall_s": r.wall_s,
        "measured_s": sum(float(run.get("duration") or 0) for run in m.runs) if m else None,
        "server_command": m.server_command if m else None,
        "bench_command": m.bench_command if m else None,
        "fingerprint": m.fingerprint if m else None,
        "samples": m.samples if m else {},
        "earlier_samples": m.earlier_samples if m else {},  # on a server replaced to confirm a regression
        "baseline_medians": r.baseline_medians,
        # This machine kind's recorded sessions, per metric: each one's median and when it was recorded.
        "histories": {k: list(v) for k, v in r.histories.items()},
        "history_dates": {k: list(v) for k, v in r.history_dates.items()},
        "runs": m.runs if m else [],
        "earlier_runs": m.earlier_runs if m else [],
        "verdicts": [_verdict_json(v) for v in r.verdicts],
        "first_server_verdicts": [_verdict_json(v) for v in r.first_server_verdicts],
    }


def results_json(run_log: RunLog) -> dict[str, Any]:
    out = _results_json(run_log)
    if run_log.ab is not None:
        out["ab"] = ab_json(run_log.ab)
    return out


def _results_json(run_log: RunLog) -> dict[str, Any]:
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "metadata": vars(run_log.metadata),
        "server_starts": run_log.server_starts,
        "confirm_restarts": run_log.restarts,
        "worker_wait_s": run_log.worker_wait_s,
        "logs": str(run_log.run_dir) if run_log.configs_run and not run_log.part_logs else None,
        "part_logs": run_log.part_logs,
        "recorded": [list(r) for r in run_log.baseline_writes],
        "shard": run_log.shard,
        "outcomes": run_log.outcomes,
        "config_verdicts": [vars(v) for v in run_log.config_verdicts],
        "configs_run": run_log.configs_run,
        "timing": {cid: vars(run_log.stats[cid]) for cid in dict.fromkeys(run_log.configs_run)},
        "items": [_item_json(r) for r in run_log.results.values()],
        "measurement_budget": budget_json(run_log.spending),
        "correctness": {cid: correctness_json(v) for cid, v in run_log.correctness.items()},
    }


def correctness_json(v: CorrectnessVerdict) -> dict[str, Any]:
    """A config's logprob check: its outcome, one line, and what the rule saw (the first divergence, if any)."""
    return {
        "check": CORRECTNESS,
        "outcome": v.outcome,
        "summary": v.summary,
        "reference": v.reference,
        "comparison": dataclasses.asdict(v.comparison) if v.comparison is not None else None,
        "gsm8k": dataclasses.asdict(v.gsm8k) if v.gsm8k is not None else None,
    }


def budget_json(ledger: Ledger) -> dict[str, Any]:
    """The budget and what it bought: per item, the runs and seconds added while its verdict was undecided."""
    return {
        "runs_per_item": ledger.budget.runs_per_item,
        "session_s": ledger.budget.session_s,
        "spent_s": round(ledger.seconds, 3),
        "runs": ledger.runs,
        "spends": [vars(s) for s in ledger.spends],
        "refused": ledger.refused,
    }


def no_verdict_lines(run_log: RunLog) -> list[str]:
    """The items that were measured but produced no verdict, by cause: what a strict nightly fails on."""
    causes: dict[str, list[str]] = {}
    for r in run_log.results.values():
        if r.outcome == INCONCLUSIVE:
            causes.setdefault("inconclusive", []).append(r.key)
        elif r.outcome in (FAILED, SKIPPED) and r.message.startswith("not compared"):
            causes.setdefault("no comparable baseline", []).append(r.key)
    for cv in run_log.correctness.values():
        if cv.outcome == SKIPPED or (cv.outcome == FAILED and "correctness not checked" in cv.summary):
            causes.setdefault("no logprob reference", []).append(f"{cv.config_id}[correctness]")
    if not causes:
        return []
    n = sum(map(len, causes.values()))
    return [f"{n} item(s) produced no verdict: " + "; ".join(f"{c}: {', '.join(keys)}" for c, keys in causes.items())]


def detection_lines(run_log: RunLog) -> list[str]:
    """Per config, what the run could have caught: its config verdicts' detection limits, one line a config."""
    by_config: dict[str, list[str]] = {}
    for v in run_log.config_verdicts:
        by_config.setdefault(v.config_id, []).append(v.caught())
    return [f"{config_id}: would have caught {'; '.join(caught)}" for config_id, caught in by_config.items()]


def config_rows(run_log: RunLog) -> list[list[str]]:
    def row(v: ConfigVerdict) -> list[str]:
        interval = f"[{v.low_pct:+.1f}%, {v.high_pct:+.1f}%]"
        return [
            v.config_id,
            v.metric,
            f"{v.change_pct:+.1f}%",
            interval,
            str(v.items),
            f"±{v.allowed_pct:.1f}%",
            caught_text(v.metric, v.detection_pct),
            f"{v.verdict}: {v.reason}",
        ]

    return [row(v) for v in sorted(run_log.config_verdicts, key=lambda v: (not v.failed, v.config_id))]


def outcome_counts(run_log: RunLog) -> str:
    """'12 item(s): 10 passed, 1 REGRESSED, 1 skipped', in a fixed order."""
    counts = Counter(r.outcome for r in run_log.results.values())
    outcomes: tuple[Outcome, ...] = ("passed", "REGRESSED", "failed", "inconclusive", "skipped", "recorded")
    parts = [f"{counts[o]} {o}" for o in outcomes if counts[o]]
    return f"{len(run_log.results)} item(s)" + (": " + ", ".join(parts) if parts else "")


def beyond_tolerance(run_log: RunLog) -> list[tuple[str, str, MetricVerdict]]:
    """Every gated change beyond its tolerance, whatever the noise test said about it: (item, where, verdict).
    `where` says which server measured it when a fresh one was started to confirm a regression."""
    out = []
    for r in run_log.results.values():
        fresh = bool(r.first_server_verdicts)
        for where, verdicts in (
            ("first server", r.first_server_verdicts),
            ("fresh server" if fresh else "", r.verdicts),
        ):
            out += [(r.key, where, v) for v in verdicts if v.verdict in BEYOND_TOLERANCE]
    out.sort(key=lambda kv: _severity(kv[2]))
    return out


def summary_markdown(run_log: RunLog) -> str:
    beyond = beyond_tolerance(run_log)
    noise = sum(v.verdict == NOISE for _, _, v in beyond)
    out = [f"## pytest-dsr1: {outcome_counts(run_log)}", ""]
    if run_log.ab is None:
        out.append(
            f"{len(beyond)} gated change(s) beyond tolerance"
            + (f", {noise} of them judged noise by the Mann-Whitney test" if noise else "")
            + "."
        )
    else:
        slower = sum(v.failed for vs in run_log.ab.verdicts.values() for v in vs)
        out.append(f"A/B: {slower} gated metric(s) B slower, over {len(run_log.ab.verdicts)} item(s).")
    out.append("")
    meta = run_log.metadata
    out += md_table(
        ["plugin", "vLLM", "commit", "host", "started (UTC)"],
        [[meta.plugin_version, meta.vllm or "-", meta.git_commit or "-", meta.host or "-", meta.started_at]],
    )
    out += ["", f"`{meta.command_line}`", ""]
    if beyond:
        out += ["### Changes beyond tolerance", ""]
        rows = [
            [
                key,
                f"{v.metric} ({METRICS[v.metric].unit})",
                num(v.baseline),
                num(v.measured),
                pct(v.change_pct),
                allowed_text(v),
                v.verdict,
                "-" if v.p_value is None else f"{v.p_value:.3f}",
                where or "-",
            ]
            for key, where, v in beyond
        ]
        header = ["item", "metric", "baseline", "measured", "change", "allowed", "verdict", "p", "server"]
        out += md_table(header, rows)
        out.append("")
    if run_log.config_verdicts:
        out += ["### Per configuration (all its items together)", ""]
        out += md_table(
            ["config", "metric", "change", "95% interval", "items", "allowed", "catches", "verdict"],
            config_rows(run_log),
        )
        out.append("")
    if run_log.correctness:
        out += ["### Correctness (greedy outputs against the logprob reference)", ""]
        out += md_table(
            ["config", "outcome", "what the check saw"],
            [[cid, v.outcome, v.summary.removeprefix(f"{cid}: ")] for cid, v in run_log.correctness.items()],
        )
        out.append("")
    if run_log.ab is not None:
        out += ab_markdown(run_log.ab)
    if run_log.results and not run_log.spending.budget.off:
        head, *items = run_log.spending.lines()
        out += ["### Measured more where undecided", "", head[0].upper() + head[1:] + ".", ""]
        out += [f"- {line}" for line in items] + ([""] if items else [])
    rows = summary_rows(run_log)
    if rows:
        out += ["### Every gated metric", ""]
        out += md_table(["item", *VERDICT_HEADER], rows)
        out.append("")
    others = [r for r in run_log.results.values() if not r.verdicts and not r.ab_verdicts]
    if others:
        notes = [[r.key, r.outcome, r.message.splitlines()[0] if r.message else ""] for r in others]
        out += md_table(["item", "outcome", "note"], notes)
        out.append("")
    t = timing_rows(run_log)
    if t:
        out += md_table(TIMING_HEADER, t)
        out.append("")
        out.append(starts_line(run_log) + ".")
        if run_log.worker_wait_s is not None:
            out += ["", worker_line(run_log.worker_wait_s) + "."]
        out += [line + "." for line in [metrics_line(run_log), *gpu_wait_lines(run_log)] if line]
    return "\n".join(out) + "\n"


def write_recorded(run_log: RunLog, directory: Path) -> list[Path]:
    """The sessions and logprob references a record run wrote, as baseline files under DIR/baselines/: what a shard
    hands to merge."""
    written = []
    for (hardware, model), entries in sorted(run_log.recorded_entries.items()):
        path = baseline_path(directory / "baselines", hardware, model)
        write_atomic(path, BaselineFile(path, hardware, model, dict(entries)).to_json())
        written.append(path)
    for (hardware, model), configs in sorted(run_log.recorded_references.items()):
        path = reference_path(directory / "baselines", hardware, model)
        for config_id, kinds in sorted(configs.items()):
            for kind, reference in sorted(kinds.items()):
                write_reference(path, hardware, model, config_id, kind, reference)
        written.append(path)
    return written


def write_reports(run_log: RunLog, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_recorded(run_log, directory)
    data = results_json(run_log)
    (directory / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    md = summary_markdown(run_log)
    (directory / "summary.md").write_text(md)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as f:
            f.write(md)
    # The page renders what results.json holds, as JSON would read it back (a report folder can be re-rendered).
    html_report.write_html(directory, json.loads(json.dumps(data, default=str)))
    try:
        from pytest_dsr1 import plots
    except ImportError:  # matplotlib is optional
        return directory
    plots.write_plots(run_log, directory)
    return directory

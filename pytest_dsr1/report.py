"""What people read: the verdict table of a failed item, the session summary, results.json and summary.md."""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_dsr1 import server_metrics
from pytest_dsr1.ab import AbConfigVerdict, AbVerdict
from pytest_dsr1.baseline import BaselineFile, baseline_path, write_atomic
from pytest_dsr1.compare import (
    BEYOND_TOLERANCE,
    IMPROVED,
    INCONCLUSIVE,
    NOISE,
    NOT_COMPARED,
    OK,
    REGRESSED,
    STALE,
    ConfigVerdict,
    MetricVerdict,
)
from pytest_dsr1.metric_catalog import METRICS
from pytest_dsr1.run_log import RECORDED, AbRun, ItemResult, Outcome, RunLog

RESULTS_SCHEMA_VERSION = 1


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.2f}" if abs(x) < 1e5 else f"{x:,.0f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f}%"


def _allowed(v: MetricVerdict) -> str:
    if v.allowed is None or not v.baseline:
        return v.tolerance
    return f"±{v.allowed / abs(v.baseline) * 100:.1f}% ({v.tolerance})"


def verdict_rows(verdicts: Iterable[MetricVerdict]) -> list[list[str]]:
    rows = []
    for v in verdicts:
        unit = METRICS[v.metric].unit
        samples = ""
        if len(v.measured_samples) > 1 or len(v.baseline_samples) > 1:
            samples = " [" + ", ".join(_num(s) for s in v.measured_samples) + "]"
        rows.append(
            [
                f"{v.metric} ({unit})",
                _num(v.baseline),
                _num(v.measured) + samples,
                _pct(v.change_pct),
                _allowed(v),
                v.verdict + (f": {v.reason}" if v.verdict not in (OK,) and v.reason else ""),
            ]
        )
    return rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


VERDICT_HEADER = ["metric", "baseline", "measured", "change", "allowed", "verdict"]


def server_side_text(
    baseline: Mapping[str, float], now: Mapping[str, float], ctx: server_metrics.Context, against: str = "baseline"
) -> str:
    """A failure message's "server side": vLLM's own metrics, `against` (the baseline, or A) and now, and the
    known causes the numbers show. "" when neither side has server metrics."""
    rows = server_metrics.server_side(baseline, now)
    if not rows:
        return ""
    text = "server side (vLLM /metrics and the device, median per run):\n" + format_table(
        ["metric", against, "now", "change"], rows
    )
    if any("-" in (row[1], row[2]) for row in rows):
        text += (
            f"\n(-: no value on that side: a gauge, sampled at {server_metrics.SAMPLE_HZ:g} Hz, can miss a run of a "
            "second or so, and a baseline recorded before server metrics has none)"
        )
    found = server_metrics.causes(baseline, now, ctx)
    if found:
        text += "\nlikely cause(s):\n" + "\n".join(f"- {c}" for c in found)
    return text


def verdict_table(verdicts: Iterable[MetricVerdict]) -> str:
    return format_table(VERDICT_HEADER, verdict_rows(verdicts))


AB_HEADER = [
    "metric",
    "A (per start)",
    "B (per start)",
    "B vs A",
    "interval",
    "p (B worse by > margin)",
    "margin",
    "verdict",
]


def _starts(values: tuple[float, ...]) -> str:
    if not values:
        return "-"
    mid = statistics.median(values)
    return f"{_num(mid)} [" + ", ".join(_num(x) for x in values) + "]"


def ab_rows(verdicts: Iterable[AbVerdict]) -> list[list[str]]:
    rows = []
    for v in verdicts:
        interval = (
            "-"
            if v.low_pct is None or v.high_pct is None
            else f"{v.level_pct:g}% [{v.low_pct:+.1f}, {v.high_pct:+.1f}]"
        )
        rows.append(
            [
                f"{v.metric} ({METRICS[v.metric].unit})",
                _starts(v.a_starts),
                _starts(v.b_starts),
                _pct(v.change_pct),
                interval,
                "-" if v.p_worse is None else f"{v.p_worse:.3f}",
                f"±{v.margin_pct:.1f}%",
                v.verdict + (f": {v.reason}" if v.verdict != "no difference" else ""),
            ]
        )
    return rows


def ab_table(verdicts: Iterable[AbVerdict]) -> str:
    """An item's A/B verdicts: each side's start medians (their median first), B's change and the verdict."""
    return format_table(AB_HEADER, ab_rows(verdicts))


def ab_cost_line(ab: AbRun) -> str:
    """What the comparison cost, so that a user can weigh rounds against time."""
    a, b = ab.wall_s("A"), ab.wall_s("B")
    n_a = sum(s.side == "A" for s in ab.starts)
    n_b = len(ab.starts) - n_a
    return (
        f"A/B cost: {len(ab.starts)} server starts ({n_a} A, {n_b} B; {ab.rounds} ABBA round(s) per config), "
        f"{(a + b) / 60:.1f} min wall: A {a / 60:.1f} min, B {b / 60:.1f} min"
    )


def brief(samples: dict[str, list[float]]) -> str:
    keys = ("output_throughput", "mean_ttft_ms", "mean_tpot_ms")
    return ", ".join(f"{k}={statistics.median(samples[k]):.2f}" for k in keys if samples.get(k))


def junit_properties(result: ItemResult) -> list[tuple[str, str]]:
    props: list[tuple[str, str]] = [("dsr1_outcome", result.outcome)]
    for v in result.verdicts:
        props += [
            (f"dsr1_{v.metric}", _num(v.measured)),
            (f"dsr1_{v.metric}_baseline", _num(v.baseline)),
            (f"dsr1_{v.metric}_verdict", v.verdict),
        ]
    for ab in result.ab_verdicts:
        props += [
            (f"dsr1_{ab.metric}_a", _starts(ab.a_starts)),
            (f"dsr1_{ab.metric}_b", _starts(ab.b_starts)),
            (f"dsr1_{ab.metric}_ab_change", _pct(ab.change_pct)),
            (f"dsr1_{ab.metric}_ab_verdict", ab.verdict),
        ]
    if not result.verdicts and not result.ab_verdicts and result.measurement is not None:
        for k, xs in result.measurement.samples.items():
            props.append((f"dsr1_{k}", _num(statistics.median(xs))))
    return props


def _severity(v: MetricVerdict) -> tuple[int, float]:
    order = {REGRESSED: 0, INCONCLUSIVE: 1, NOISE: 1, STALE: 3, IMPROVED: 4, OK: 2, NOT_COMPARED: 5}
    worse = 0.0
    if v.change_pct is not None:
        worse = -v.change_pct if METRICS[v.metric].higher_is_better else v.change_pct
    return order.get(v.verdict, 9), -worse


def summary_rows(run_log: RunLog) -> list[list[str]]:
    flat = [(r.key, v) for r in run_log.results.values() for v in r.verdicts]
    flat.sort(key=lambda kv: _severity(kv[1]))
    return [[key, *row] for key, v in flat for row in verdict_rows([v])]


def timing_rows(run_log: RunLog) -> list[list[str]]:
    rows = []
    tot = [0.0] * 6
    for cid in dict.fromkeys(run_log.configs_run):
        s = run_log.stats[cid]
        # pytest -n: waiting for a GPU that another worker's server held is neither this config's nor the harness's.
        overhead = s.wall_s - s.startup_s - s.bench_s - s.stop_s - s.gpu_wait_s
        ready = "failed" if s.start_failed else (f"{s.ready_s:.1f}s" if s.ready_s is not None else "-")
        vals = (s.startup_s, s.bench_s, s.measured_s, s.stop_s, overhead, s.wall_s)
        rows.append([cid, ready, *(f"{x:.1f}s" for x in vals), str(s.items)])
        tot = [a + b for a, b in zip(tot, vals, strict=True)]
    if rows:
        rows.append(
            [
                "total",
                "",
                *(f"{x:.1f}s" for x in tot),
                str(sum(run_log.stats[c].items for c in dict.fromkeys(run_log.configs_run))),
            ]
        )
    return rows


# start-up: launch until ready (and model generation); benchmarks: time inside the benchmark worker's calls
# (warm-up included), of which `measured` is the benchmark's own duration; overhead: everything else
# (pytest, what is left of the worker's vLLM import, the /metrics snapshots around each run, comparisons), not
# counting a pytest -n worker's wait for GPUs.
TIMING_HEADER = ["config", "ready after", "start-up", "benchmarks", "measured", "stop", "overhead", "wall", "items"]


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
    if run_log.ab is not None:
        _ab_terminal(run_log.ab, tr)
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
                    by_item.setdefault(key, []).append(f"{metric} {_num(old)} -> {_num(new)}")
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


def _ab_terminal(ab: AbRun, tr: Any) -> None:
    tr.write_line(f"dsr1 A/B: {ab.b_label}, against {ab.a_label}")
    rows = [[key, *row] for key, verdicts in ab.verdicts.items() for row in ab_rows(verdicts)]
    if rows:
        for line in format_table(["item", *AB_HEADER], rows).splitlines():
            tr.write_line(line, **({"red": True, "bold": True} if " B slower" in line else {}))
    for cv in ab.config_verdicts:
        tr.write_line(f"dsr1: A/B config {cv.line()}", **({"red": True, "bold": True} if cv.failed else {}))
    tr.write_line(f"dsr1: {ab_cost_line(ab)}")


def metrics_line(run_log: RunLog) -> str | None:
    """How much of the overhead column the /metrics snapshots around the runs took (--dsr1-server-metrics)."""
    configs = list(dict.fromkeys(run_log.configs_run))
    spent = sum(run_log.stats[c].metrics_s for c in configs)
    wall = sum(run_log.stats[c].wall_s for c in configs)
    if spent <= 0 or wall <= 0:
        return None
    return (
        f"server metrics: {spent:.1f}s of the overhead ({spent / wall:.1%} of the wall time) went to the /metrics "
        "snapshots around the runs (--dsr1-server-metrics off saves it)"
    )


def gpu_wait_lines(run_log: RunLog) -> list[str]:
    """pytest -n on a GPU host: how long each config waited for its GPUs (kept out of the overhead column)."""
    return [
        f"{cid} waited {s.gpu_wait_s:.1f}s for its GPU(s) while another worker's server held them "
        "(pytest -n; not in the overhead column)"
        for cid, s in run_log.stats.items()
        if s.gpu_wait_s >= 1.0
    ]


def worker_line(waited_s: float) -> str:
    return (
        "benchmark worker: vLLM imported while the first server started; "
        f"{waited_s:.1f}s waited for it after the server was ready (in the overhead column)"
    )


def starts_line(run_log: RunLog) -> str:
    """Server starts against configurations: one each, plus the fresh servers that confirmed a regression."""
    configs, restarts = len(set(run_log.configs_run)), sum(run_log.restarts.values())
    line = f"{run_log.server_starts} server start(s) for {configs} configuration(s) run"
    if run_log.ab is not None:
        per = 4 * run_log.ab.rounds
        line += f" (A/B: {per} fresh starts per configuration, ABBA x{run_log.ab.rounds})"
        if run_log.server_starts != per * configs:
            line += " (MISMATCH: not every A/B start was made)"
        return line
    if restarts:
        line += (
            f" ({restarts} of them fresh start(s) to confirm a regression: "
            + ", ".join(f"{cid} x{n}" for cid, n in run_log.restarts.items())
            + ")"
        )
    if run_log.server_starts - restarts != configs:
        line += " (MISMATCH: a configuration started more than once)"
    return line


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
        "runs": m.runs if m else [],
        "earlier_runs": m.earlier_runs if m else [],
        "verdicts": [_verdict_json(v) for v in r.verdicts],
        "first_server_verdicts": [_verdict_json(v) for v in r.first_server_verdicts],
    }


def _ab_json(ab: AbRun) -> dict[str, Any]:
    def verdict(v: AbVerdict) -> dict[str, Any]:
        return {**vars(v), "a_starts": list(v.a_starts), "b_starts": list(v.b_starts)}

    def config(v: AbConfigVerdict) -> dict[str, Any]:
        return vars(v)

    return {
        "a": ab.a_label,
        "b": ab.b_label,
        "rounds": ab.rounds,
        "starts": [
            {
                "config": s.config_id,
                "side": s.side,
                "index": s.index,
                "ready_s": s.ready_s,
                "wall_s": s.wall_s,
                "error": s.error,
                "medians": {key: s.medians(key) for key in s.runs},
                "item_errors": s.item_errors,
            }
            for s in ab.starts
        ],
        "items": {key: [verdict(v) for v in vs] for key, vs in ab.verdicts.items()},
        "config_verdicts": [config(v) for v in ab.config_verdicts],
        "cost": {"starts": len(ab.starts), "wall_s": {"A": ab.wall_s("A"), "B": ab.wall_s("B")}},
    }


def results_json(run_log: RunLog) -> dict[str, Any]:
    out = _results_json(run_log)
    if run_log.ab is not None:
        out["ab"] = _ab_json(run_log.ab)
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
    }


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


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    cells = [[c.replace("|", "\\|") for c in row] for row in rows]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in cells)]


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
    out += _md_table(
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
                _num(v.baseline),
                _num(v.measured),
                _pct(v.change_pct),
                _allowed(v),
                v.verdict,
                "-" if v.p_value is None else f"{v.p_value:.3f}",
                where or "-",
            ]
            for key, where, v in beyond
        ]
        header = ["item", "metric", "baseline", "measured", "change", "allowed", "verdict", "p", "server"]
        out += _md_table(header, rows)
        out.append("")
    if run_log.config_verdicts:
        out += ["### Per configuration (all its items together)", ""]
        out += _md_table(
            ["config", "metric", "change", "95% interval", "items", "allowed", "verdict"], config_rows(run_log)
        )
        out.append("")
    if run_log.ab is not None:
        out += _ab_markdown(run_log.ab)
    rows = summary_rows(run_log)
    if rows:
        out += ["### Every gated metric", ""]
        out += _md_table(["item", *VERDICT_HEADER], rows)
        out.append("")
    others = [r for r in run_log.results.values() if not r.verdicts and not r.ab_verdicts]
    if others:
        notes = [[r.key, r.outcome, r.message.splitlines()[0] if r.message else ""] for r in others]
        out += _md_table(["item", "outcome", "note"], notes)
        out.append("")
    t = timing_rows(run_log)
    if t:
        out += _md_table(TIMING_HEADER, t)
        out.append("")
        out.append(starts_line(run_log) + ".")
        if run_log.worker_wait_s is not None:
            out += ["", worker_line(run_log.worker_wait_s) + "."]
        out += [line + "." for line in [metrics_line(run_log), *gpu_wait_lines(run_log)] if line]
    return "\n".join(out) + "\n"


def _ab_markdown(ab: AbRun) -> list[str]:
    out = [f"### A/B: {ab.b_label}, against {ab.a_label}", ""]
    if ab.config_verdicts:
        rows = [
            [
                v.config_id,
                v.metric,
                f"{v.change_pct:+.1f}%",
                f"[{v.low_pct:+.1f}%, {v.high_pct:+.1f}%]",
                str(v.items),
                str(v.starts),
                f"±{v.allowed_pct:.1f}%",
                v.verdict,
            ]
            for v in ab.config_verdicts
        ]
        out += _md_table(["config", "metric", "B vs A", "interval", "items", "starts", "allowed", "verdict"], rows)
        out.append("")
    rows = [[key, *row] for key, verdicts in ab.verdicts.items() for row in ab_rows(verdicts)]
    if rows:
        out += _md_table(["item", *AB_HEADER], rows)
        out.append("")
    starts = [
        [
            s.config_id,
            str(s.index),
            s.side,
            "failed" if s.ready_s is None else f"{s.ready_s:.1f}s",
            f"{s.wall_s:.1f}s",
            s.error.splitlines()[0] if s.error else "-",
        ]
        for s in ab.starts
    ]
    out += _md_table(["config", "start", "side", "ready after", "wall", "error"], starts)
    out += ["", ab_cost_line(ab) + ".", ""]
    return out


def write_recorded(run_log: RunLog, directory: Path) -> list[Path]:
    """The sessions a record run wrote, as baseline files under DIR/baselines/: what a shard hands to merge."""
    written = []
    for (hardware, model), entries in sorted(run_log.recorded_entries.items()):
        path = baseline_path(directory / "baselines", hardware, model)
        write_atomic(path, BaselineFile(path, hardware, model, dict(entries)).to_json())
        written.append(path)
    return written


def write_reports(run_log: RunLog, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_recorded(run_log, directory)
    (directory / "results.json").write_text(json.dumps(results_json(run_log), indent=2, default=str) + "\n")
    md = summary_markdown(run_log)
    (directory / "summary.md").write_text(md)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as f:
            f.write(md)
    try:
        from pytest_dsr1 import plots
    except ImportError:  # matplotlib is optional
        return directory
    plots.write_plots(run_log, directory)
    return directory

"""Merge the reports of shards (--dsr1-shard K/N, each with --dsr1-report DIR) into one run's reports.

`python -m pytest_dsr1 merge OUT SHARD_DIR...` reads each shard's results.json back into a RunRecord, checks
that every item of the plan was reported by its shard, and writes one results.json, summary.md and the plots
with the same code a single run uses. For record runs, the sessions each shard recorded (its report's
baselines/ folder) are appended to the baseline files, with the same locked, atomic write as a local record.

Configs never split across shards, so a config's verdict comes whole from the shard that ran it. No pytest here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_dsr1 import baseline
from pytest_dsr1.budget import Budget, Ledger, Spend
from pytest_dsr1.errors import InputError
from pytest_dsr1.gsm8k import Gsm8kResult
from pytest_dsr1.logprob_reference import REFERENCE_SUFFIX, reference_path, write_reference
from pytest_dsr1.logprob_reference import load as load_references
from pytest_dsr1.logprobs import Comparison, Divergence
from pytest_dsr1.matrix import Matrix, Workload
from pytest_dsr1.run_log import BaselineWrite, ConfigStats, ItemResult, Measurement, RunLog, RunMetadata
from pytest_dsr1.verdict.config import ConfigVerdict
from pytest_dsr1.verdict.correctness import CorrectnessVerdict
from pytest_dsr1.verdict.metric import MetricVerdict

RECORDS_DIR = "baselines"  # in a shard's report folder: the sessions its record run wrote, as baseline files


class MergeError(InputError):
    """A shard folder that cannot be merged: says which, what is wrong, and the fix."""


@dataclass
class Shard:
    directory: Path
    data: dict[str, Any]
    run_log: RunLog


@dataclass
class Merged:
    run_log: RunLog
    missing: dict[str, int] = field(default_factory=dict)  # item -> the shard that should have reported it
    shards: list[Shard] = field(default_factory=list)


def _verdict(raw: dict[str, Any]) -> MetricVerdict:
    return MetricVerdict(
        metric=raw["metric"],
        baseline=raw.get("baseline"),
        measured=raw.get("measured"),
        allowed=raw.get("allowed"),
        tolerance=raw.get("tolerance", ""),
        verdict=raw["verdict"],
        reason=raw.get("reason", ""),
        p_value=raw.get("p_value"),
        baseline_samples=tuple(raw.get("baseline_samples") or ()),
        measured_samples=tuple(raw.get("measured_samples") or ()),
        history=tuple(raw.get("history") or ()),
        detection_pct=raw.get("detection_pct"),
    )


def _item(raw: dict[str, Any], matrix: Matrix, where: Path) -> ItemResult:
    try:
        config = matrix.config(raw["config"])
    except KeyError:
        raise MergeError(
            where,
            f"items[{raw.get('id')}].config",
            f"config {raw.get('config')!r} is not in the matrix ({', '.join(matrix.files)})",
            "give merge the matrix the shards ran with: --matrix PATH (as their --dsr1-matrix)",
        ) from None
    workload = Workload(**raw["workload"])
    measurement = None
    if raw.get("server_command") is not None:
        measurement = Measurement(
            config,
            workload,
            raw["id"],
            raw["server_command"],
            raw.get("bench_command") or "",
            raw.get("fingerprint") or {},
            runs=list(raw.get("runs") or []),
            earlier_runs=list(raw.get("earlier_runs") or []),
        )
    return ItemResult(
        key=raw["id"],
        config_id=raw["config"],
        workload=workload,
        outcome=raw["outcome"],
        message=raw.get("message", ""),
        verdicts=[_verdict(v) for v in raw.get("verdicts") or []],
        measurement=measurement,
        baseline_medians=dict(raw.get("baseline_medians") or {}),
        wall_s=raw.get("wall_s"),
        first_server_verdicts=[_verdict(v) for v in raw.get("first_server_verdicts") or []],
        histories={k: tuple(v) for k, v in (raw.get("histories") or {}).items()},
        history_dates={k: tuple(v) for k, v in (raw.get("history_dates") or {}).items()},
    )


def _stats(raw: dict[str, Any]) -> ConfigStats:
    known = {k: raw[k] for k in ConfigStats.__dataclass_fields__ if k in raw}
    if known.get("gpu_memory_after_stop") is not None:
        known["gpu_memory_after_stop"] = [tuple(x) for x in known["gpu_memory_after_stop"]]
    return ConfigStats(**known)


def read_run_log(directory: Path, matrix: Matrix) -> tuple[dict[str, Any], RunLog]:
    """A report folder's results.json, back as the RunRecord the reports are written from."""
    path = directory / "results.json"
    if not path.is_file():
        raise MergeError(
            path,
            "(file)",
            "missing: this shard wrote no report (it did not run, or was cancelled before its end)",
            "run the shard again with --dsr1-report, or leave its folder out and accept its items as missing",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise MergeError(path, "(content)", f"not JSON ({exc})", "run the shard again with --dsr1-report") from None
    return data, run_log_from_json(data, matrix, path)


def run_log_from_json(data: Any, matrix: Matrix, where: Path) -> RunLog:
    """results.json's content (a report, or an xdist worker's payload), back as a RunRecord."""
    try:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("ab") is not None:
            raise MergeError(
                where,
                "ab",
                "an A/B run: its verdicts come from every start of a config together, not per shard",
                "run A/B comparisons unsharded (one job per config selection with -k)",
            )
        run_log = RunLog(matrix, Path(data.get("logs") or where.parent), RunMetadata(**data["metadata"]))
        run_log.server_starts = int(data["server_starts"])
        run_log.restarts = dict(data.get("confirm_restarts") or {})
        run_log.configs_run = list(data["configs_run"])
        run_log.stats = {cid: _stats(raw) for cid, raw in data["timing"].items()}
        run_log.config_verdicts = [ConfigVerdict(**v) for v in data.get("config_verdicts") or []]
        run_log.results = {raw["id"]: _item(raw, matrix, where) for raw in data["items"]}
        run_log.worker_wait_s = data.get("worker_wait_s")
        run_log.shard = data.get("shard")
        run_log.outcomes = dict(data.get("outcomes") or {})
        run_log.baseline_writes = [BaselineWrite(*r) for r in data.get("recorded") or []]
        run_log.part_logs = [str(p) for p in data.get("part_logs") or []]
        run_log.spending = _ledger(data.get("measurement_budget") or {})
        run_log.correctness = {cid: _correctness(cid, raw) for cid, raw in (data.get("correctness") or {}).items()}
    except MergeError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise MergeError(
            where,
            "(content)",
            f"not a pytest-dsr1 results.json of this version ({exc!r})",
            "merge the reports of shards run with the same pytest-dsr1 version",
        ) from None
    return run_log


def _ledger(raw: dict[str, Any]) -> Ledger:
    budget = Budget(int(raw.get("runs_per_item", 0)), float(raw.get("session_s", 0.0)))
    return Ledger(budget, [Spend(**s) for s in raw.get("spends") or []], list(raw.get("refused") or []))


def _correctness(config_id: str, raw: dict[str, Any]) -> CorrectnessVerdict:
    comparison = raw.get("comparison")
    if comparison is not None:
        divergence = comparison.get("divergence")
        comparison = Comparison(**{**comparison, "divergence": Divergence(**divergence) if divergence else None})
    gsm8k = Gsm8kResult(**raw["gsm8k"]) if raw.get("gsm8k") else None
    return CorrectnessVerdict(config_id, raw["outcome"], raw["summary"], comparison, raw.get("reference"), gsm8k)


def add_into(merged: RunLog, r: RunLog) -> None:
    """Add one part's record (a shard, an xdist worker) to the merged one. Configs never split across parts."""
    merged.server_starts += r.server_starts
    merged.restarts.update(r.restarts)
    merged.configs_run += r.configs_run
    merged.stats.update(r.stats)
    merged.config_verdicts += r.config_verdicts
    merged.results.update(r.results)
    merged.correctness.update(r.correctness)
    merged.outcomes.update(r.outcomes)
    merged.baseline_writes += r.baseline_writes
    if merged.spending.budget.off:  # every part ran under the same options
        merged.spending.budget = r.spending.budget
    merged.spending.spends += r.spending.spends
    merged.spending.refused += r.spending.refused
    for path, uses in r.local_baseline_uses.items():
        merged.local_baseline_uses.setdefault(path, []).extend(uses)
    for key, n in r.version_changes.items():
        merged.version_changes[key] = merged.version_changes.get(key, 0) + n
    merged.stale_cleaned += r.stale_cleaned
    if r.configs_run:
        merged.part_logs += r.part_logs or [str(r.run_dir)]
    for cid, lines in r.dry_run.items():
        merged.dry_run.setdefault(cid, []).extend(lines)
    if r.worker_wait_s is not None:
        merged.worker_wait_s = max(merged.worker_wait_s or 0.0, r.worker_wait_s)


def merge(directories: list[Path], matrix: Matrix) -> Merged:
    """Read every shard and merge them into one RunRecord; `missing` names the planned items no shard reported."""
    shards = []
    for d in directories:
        data, run_log = read_run_log(d, matrix)
        shards.append(Shard(d, data, run_log))
    plans = [s.data.get("shard") for s in shards]
    plan = next((p for p in plans if p), None)
    for s, p in zip(shards, plans, strict=True):
        if p is None and len(shards) > 1:
            raise MergeError(
                s.directory / "results.json",
                "shard",
                "not a shard's report (run without --dsr1-shard)",
                "merge the folders of one sharded run: pytest ... --dsr1-shard K/N --dsr1-report DIR",
            )
        if p is not None and plan is not None and (p["count"], p["items"]) != (plan["count"], plan["items"]):
            raise MergeError(
                s.directory / "results.json",
                "shard.items",
                "planned another split than the first shard: the shards ran different selections or baselines",
                "run every shard with the same options (-m, -k, --dsr1-model) from the same commit",
            )
    seen = [p["index"] for p in plans if p]
    dupes = sorted({i for i in seen if seen.count(i) > 1})
    if dupes:
        raise MergeError(
            shards[0].directory,
            "shard.index",
            f"shard(s) {', '.join(map(str, dupes))} given more than once",
            "give each shard's report folder once",
        )
    first = shards[0].run_log
    hosts = list(dict.fromkeys(s.run_log.metadata.host for s in shards if s.run_log.metadata.host))
    command = first.metadata.command_line
    if plan is not None:
        command += f" (merged: {len(shards)} of {plan['count']} shards)"
    meta = RunMetadata(**{**vars(first.metadata), "host": "; ".join(hosts), "command_line": command})
    merged = RunLog(matrix, first.run_dir, meta)
    for s in shards:
        add_into(merged, s.run_log)
    planned: dict[str, int] = dict(plan["items"]) if plan else {k: 1 for k in merged.results}
    reported = set(merged.results) | set(merged.outcomes)  # skipped items too (no result), as pytest reported
    missing = {item: shard for item, shard in planned.items() if item not in reported}
    return Merged(merged, missing, shards)


def recorded_files(directory: Path) -> list[Path]:
    """The baseline files a shard's record run left in its report folder."""
    root = directory / RECORDS_DIR
    return sorted(p for p in root.glob("*/*.json") if not p.name.endswith(REFERENCE_SUFFIX)) if root.is_dir() else []


def recorded_references(directory: Path) -> list[Path]:
    """The logprob reference files a shard's record run left in its report folder."""
    root = directory / RECORDS_DIR
    return sorted(root.glob(f"*/*{REFERENCE_SUFFIX}")) if root.is_dir() else []


def apply_recorded_sessions(
    shards: list[Path], target: Path, keep: int = baseline.DEFAULT_KEEP_SESSIONS, fresh: bool = False
) -> list[tuple[Path, str]]:
    """Append each recorded session of every shard to `target`'s baseline files (locked, atomic, one entry at a
    time, as a record run writes). Returns (file, item) per entry written."""
    written = []
    for shard in shards:
        for path in recorded_files(shard):
            hardware, model = path.parent.name, path.stem
            recorded = baseline.load(path, hardware, model)
            for item_id, entry in sorted(recorded.entries.items()):
                dest = baseline.baseline_path(target, hardware, model)
                baseline.append_session(dest, hardware, model, item_id, entry, keep, fresh)
                written.append((dest, item_id))
        for path in recorded_references(shard):
            hardware, model = path.parent.name, path.name.removesuffix(REFERENCE_SUFFIX)
            dest = reference_path(target, hardware, model)
            for config_id, kinds in sorted(load_references(path, hardware, model).configs.items()):
                for kind, reference in sorted(kinds.items()):
                    write_reference(dest, hardware, model, config_id, kind, reference)
                    written.append((dest, f"{config_id} logprob reference [{kind}]"))
    return written


def worker_payload(run_log: RunLog) -> dict[str, Any]:
    """What an xdist worker hands to the controller: its results.json, and what the terminal summary shows
    beyond it (machine-local baselines used, version changes, leftovers stopped, dry-run commands)."""
    from pytest_dsr1.report import results_json

    return {
        "results": results_json(run_log),
        "local_baseline_uses": run_log.local_baseline_uses,
        "version_changes": [[before, now, n] for (before, now), n in run_log.version_changes.items()],
        "stale_cleaned": run_log.stale_cleaned,
        "dry_run": run_log.dry_run,
    }


def absorb_worker(into: RunLog, payload: dict[str, Any], worker: str) -> None:
    """Add an xdist worker's payload (worker_payload) to the controller's record."""
    part = run_log_from_json(payload["results"], into.matrix, Path(worker))
    part.local_baseline_uses = {k: [tuple(u) for u in v] for k, v in payload.get("local_baseline_uses", {}).items()}
    part.version_changes = {(b, n): c for b, n, c in payload.get("version_changes", [])}
    part.stale_cleaned = list(payload.get("stale_cleaned", []))
    part.dry_run = dict(payload.get("dry_run", {}))
    add_into(into, part)
    if into.metadata.git_commit is None:  # the controller collects nothing, so it never looked the commit up
        into.metadata = replace(into.metadata, git_commit=part.metadata.git_commit)

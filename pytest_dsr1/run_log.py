"""The record of a run: what was started, measured, judged and recorded. Reports read it; nothing here runs
anything (the processes are runner.py's)."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from pytest_dsr1 import __version__
from pytest_dsr1.ab.data import AbRun, AbVerdict
from pytest_dsr1.budget import Budget, Ledger
from pytest_dsr1.command import redact
from pytest_dsr1.logprob_reference import LogprobReference
from pytest_dsr1.matrix import Matrix, ServerConfig, Workload
from pytest_dsr1.metric_catalog import samples_of
from pytest_dsr1.verdict.config import ConfigVerdict
from pytest_dsr1.verdict.correctness import CorrectnessVerdict
from pytest_dsr1.verdict.item import Decision, Item
from pytest_dsr1.verdict.metric import MetricVerdict
from pytest_dsr1.verdict.outcomes import Outcome


@dataclass
class ConfigStats:
    startup_s: float = 0.0
    ready_s: float | None = None
    bench_s: float = 0.0  # inside the benchmark worker's calls (warm-up, tokenizer, dataset, measurement)
    measured_s: float = 0.0  # the benchmark's own measured duration, summed
    stop_s: float = 0.0
    wall_s: float = 0.0
    items: int = 0
    start_failed: bool = False
    gpu_memory_after_stop: list[tuple[int, int]] | None = None  # (used, total) MiB per GPU
    gpu_wait_s: float = 0.0  # pytest -n: waited for free GPUs (another worker's server held them)
    metrics_s: float = 0.0  # the /metrics snapshots and CPU-time reads around the runs (part of the overhead)
    overrides: list[str] = field(default_factory=list)  # what the server's log says it overrode (overrides.py)


@dataclass
class Measurement:
    config: ServerConfig
    workload: Workload
    key: str
    server_command: str
    bench_command: str
    fingerprint: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    # Adds n runs on the same server (confirmation); set by the runner, absent in a measurement built by hand.
    more: Callable[[int], None] | None = None
    # Measures the workload again on a freshly started server of the same config (confirmation).
    fresh: Callable[[], Measurement] | None = None
    # Completes the runs' server metrics, which the runner reads while the next run goes on; `samples` calls it.
    settle: Callable[[], None] | None = None
    earlier_runs: list[dict[str, Any]] = field(default_factory=list)  # runs on a server that was since replaced

    @property
    def samples(self) -> dict[str, list[float]]:
        if self.settle is not None:
            self.settle()
        return samples_of(self.runs)

    @property
    def earlier_samples(self) -> dict[str, list[float]]:
        return samples_of(self.earlier_runs)

    def item(self, config: ServerConfig | None = None) -> Item:
        """The item as its verdict's text names it; `config`: another server config it ran on (A/B's B)."""
        config = config or self.config
        cap = dict(config.settings).get("max_num_seqs")
        return Item(
            key=self.key,
            config_id=self.config.id,
            server_command=self.server_command,
            bench_command=self.bench_command,
            concurrency=self.workload.batch_size,
            max_num_seqs=int(cap) if cap is not None and str(cap).isdigit() else None,
            fingerprint=self.fingerprint,
        )


@dataclass
class ItemResult:
    key: str
    config_id: str
    workload: Workload
    outcome: Outcome
    message: str = ""
    verdicts: list[MetricVerdict] = field(default_factory=list)
    measurement: Measurement | None = None
    baseline_medians: dict[str, float] = field(default_factory=dict)
    wall_s: float | None = None  # the item's call phase: benchmarks, comparisons and harness
    # The verdicts on the config's first server, when a fresh server was started to confirm a regression.
    first_server_verdicts: list[MetricVerdict] = field(default_factory=list)
    # Per metric, the median of each comparable recorded session, oldest first (the config verdict's band).
    histories: dict[str, tuple[float, ...]] = field(default_factory=dict)
    history_dates: dict[str, tuple[str, ...]] = field(default_factory=dict)  # when each of those was recorded
    ab_verdicts: list[AbVerdict] = field(default_factory=list)  # an A/B run: B against A, per gated metric


class BaselineWrite(NamedTuple):
    """One metric written into a baseline file by --dsr1-record: old and new median."""

    path: str
    item: str
    metric: str
    old: float | None
    new: float


@dataclass(frozen=True)
class RunMetadata:
    """What a reader of a report needs to reproduce it."""

    plugin_version: str
    vllm: str | None
    python: str
    command_line: str
    git_commit: str | None
    started_at: str  # UTC, ISO 8601
    host: str  # CPU model and GPUs


def git_commit(directory: Path) -> str | None:
    """The checked-out commit of `directory` (with '+dirty' when it has local changes), or None."""
    try:
        head = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_metadata(
    args: list[str], rootdir: Path | None, vllm: str | None, host: str, secrets: tuple[str, ...] = ()
) -> RunMetadata:
    """The run's metadata; the git commit of `rootdir`, or None when `rootdir` is None (looked up later)."""
    return RunMetadata(
        plugin_version=__version__,
        vllm=vllm,
        python=f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        command_line=redact(" ".join(["pytest", *args]), secrets),
        git_commit=git_commit(rootdir) if rootdir is not None else None,
        started_at=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        host=host,
    )


@dataclass
class RunLog:
    """Everything the reports show. The runner and the baseline check write it; nobody else."""

    matrix: Matrix
    run_dir: Path
    metadata: RunMetadata
    server_starts: int = 0
    restarts: dict[str, int] = field(default_factory=dict)  # config id -> fresh servers to confirm a regression
    configs_run: list[str] = field(default_factory=list)
    stats: dict[str, ConfigStats] = field(default_factory=dict)
    results: dict[str, ItemResult] = field(default_factory=dict)
    baseline_writes: list[BaselineWrite] = field(default_factory=list)
    dry_run: dict[str, list[str]] = field(default_factory=dict)  # config id -> the commands its items would run
    stale_cleaned: list[dict[str, Any]] = field(default_factory=list)  # leftover servers of earlier runs, stopped
    version_changes: dict[tuple[str | None, str | None], int] = field(default_factory=dict)  # (baseline, now) -> n
    # Machine-local baselines used: file -> [(item, "compared" | "recorded")]
    local_baseline_uses: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    config_verdicts: list[ConfigVerdict] = field(default_factory=list)  # at the end of the run
    ab: AbRun | None = None  # an A/B run (--dsr1-ab); its items are judged against A, not baselines
    # Waited for the benchmark worker's vLLM import after a server was ready (the rest overlapped its start-up).
    worker_wait_s: float | None = None
    # A record merged from parts (pytest -n workers, shards): the log folders of the parts that started servers.
    part_logs: list[str] = field(default_factory=list)
    shard: dict[str, Any] | None = None  # --dsr1-shard: this shard and the whole plan (shard.plan_json)
    outcomes: dict[str, str] = field(default_factory=dict)  # item -> pytest's outcome, skipped items included
    # --dsr1-record: each recorded session as written, by (hardware, model) -> item -> entry (baseline.Entry)
    recorded_entries: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # The measurement budget (--dsr1-budget) and what the undecided items were given of it.
    spending: Ledger = field(default_factory=lambda: Ledger(Budget(0, 0.0)))
    targets: dict[str, str] = field(default_factory=dict)  # --dsr1-target: config id -> the URL that served it
    # The logprob check of each config whose correctness item ran (config id -> its verdict).
    correctness: dict[str, CorrectnessVerdict] = field(default_factory=dict)
    # --dsr1-record: the logprob references written, by (hardware, model) -> config -> machine kind (a shard's
    # report carries them to the merge, as recorded_entries carries the baseline sessions)
    recorded_references: dict[tuple[str, str], dict[str, dict[str, LogprobReference]]] = field(default_factory=dict)

    def keep(self, result: ItemResult, decision: Decision) -> None:
        """An item's result, as its decision says: what the run's reports show of it."""
        result.outcome = decision.outcome
        result.message = decision.message if decision.summary is None else decision.summary
        self.results[result.key] = result

    def stats_for(self, config_id: str) -> ConfigStats:
        return self.stats.setdefault(config_id, ConfigStats())

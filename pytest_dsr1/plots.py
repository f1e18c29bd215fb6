"""PNG plots of a run, current against baseline (matplotlib, headless).

Per configuration:
- `<config>-throughput-interactivity.png`: output throughput per GPU (per server on the CPU) against per-user
  interactivity (tok/s/user = 1000 / mean TPOT) across batch sizes, one line per workload: the chart the field uses to
  compare serving setups (up and to the right is better);
- `<config>-latency.png`: mean TTFT and mean TPOT against batch size.
The current run is drawn solid with filled markers, the baseline dashed with hollow markers. In an A/B run
(--dsr1-ab), B is drawn solid and A dashed, each point the median of that side's start medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: before pyplot is imported
import matplotlib.pyplot as plt

from pytest_dsr1.run_log import ItemResult, RunLog

FIGSIZE = (8, 5)
DPI = 100


Value = Callable[[ItemResult, str, str], "float | None"]  # (item, which line, metric) -> a point


def _value(run_log: RunLog) -> Value:
    def value(r: ItemResult, which: str, metric: str) -> float | None:
        if which == "current":
            xs = r.measurement.samples.get(metric) if r.measurement else None
            return statistics.median(xs) if xs else None
        if which == "baseline":
            return r.baseline_medians.get(metric)
        assert run_log.ab is not None
        medians = [s.medians(r.key).get(metric) for s in run_log.ab.starts_of(r.config_id) if s.side == which]
        present = [m for m in medians if m is not None]
        return statistics.median(present) if present else None

    return value


def _lines(run_log: RunLog) -> tuple[tuple[str, str, bool], ...]:
    """(which, line style, filled markers): the run against its baseline, or B against A."""
    if run_log.ab is not None:
        return (("B", "-", True), ("A", "--", False))
    return (("current", "-", True), ("baseline", "--", False))


def _series(results: list[ItemResult], value: Value, which: str, metric: str) -> list[tuple[int, float]]:
    pts = []
    for r in results:
        v = value(r, which, metric)
        if v is not None:
            pts.append((r.workload.batch_size, v))
    return sorted(pts)


def _by_config(run_log: RunLog) -> dict[str, dict[str, list[ItemResult]]]:
    out: dict[str, dict[str, list[ItemResult]]] = {}
    for r in run_log.results.values():
        if r.measurement is None:
            continue
        out.setdefault(r.config_id, {}).setdefault(r.workload.name, []).append(r)
    return out


def write_plots(run_log: RunLog, directory: Path) -> list[Path]:
    written = []
    for config_id, workloads in _by_config(run_log).items():
        gpus = run_log.matrix.config(config_id).gpus  # 0 on the CPU
        colors = dict(zip(workloads, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
        lines, value = _lines(run_log), _value(run_log)
        written.append(_throughput_interactivity(directory, config_id, workloads, gpus, colors, lines, value))
        written.append(_latency(directory, config_id, workloads, colors, lines, value))
    return written


def throughput_label(gpus: int) -> str:
    """The y-axis of the throughput chart: per GPU on GPUs (the field's unit), the whole server on the CPU."""
    if gpus == 0:
        return "output throughput (tok/s, whole server on the CPU)"
    return f"output throughput per GPU (tok/s/GPU, {gpus} GPU{'s' if gpus > 1 else ''})"


def _throughput_interactivity(
    directory: Path,
    config_id: str,
    workloads: dict[str, list[ItemResult]],
    gpus: int,
    colors: dict[str, Any],
    lines: tuple[tuple[str, str, bool], ...],
    value: Value,
) -> Path:
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    for name, results in workloads.items():
        for which, style, filled in lines:
            face = colors[name] if filled else "none"
            tput = dict(_series(results, value, which, "output_throughput"))
            tpot = dict(_series(results, value, which, "mean_tpot_ms"))
            bss = sorted(set(tput) & set(tpot))
            if not bss:
                continue
            x = [1000.0 / tpot[b] if tpot[b] else 0.0 for b in bss]
            y = [tput[b] / max(1, gpus) for b in bss]
            ax.plot(x, y, style, color=colors[name], marker="o", markerfacecolor=face, label=f"{name} ({which})")
            for xi, yi, b in zip(x, y, bss, strict=True):
                ax.annotate(
                    f"bs{b}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7, color=colors[name]
                )
    ax.set_title(f"{config_id}: throughput{' per GPU' if gpus else ''} vs interactivity")
    ax.set_xlabel("interactivity (tok/s/user = 1000 / mean TPOT)")
    ax.set_ylabel(throughput_label(gpus))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = directory / f"{config_id}-throughput-interactivity.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _latency(
    directory: Path,
    config_id: str,
    workloads: dict[str, list[ItemResult]],
    colors: dict[str, Any],
    lines: tuple[tuple[str, str, bool], ...],
    value: Value,
) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 1.5, FIGSIZE[1]), dpi=DPI)
    for ax, metric, label in ((axes[0], "mean_ttft_ms", "mean TTFT (ms)"), (axes[1], "mean_tpot_ms", "mean TPOT (ms)")):
        for name, results in workloads.items():
            for which, style, filled in lines:
                face = colors[name] if filled else "none"
                pts = _series(results, value, which, metric)
                if pts:
                    ax.plot(
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        style,
                        color=colors[name],
                        marker="o",
                        markerfacecolor=face,
                        label=f"{name} ({which})",
                    )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (concurrent requests)")
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0] + " vs batch size")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    solid, dashed = (line[0] for line in lines)
    fig.suptitle(f"{config_id}: latency, {solid} (solid) vs {dashed} (dashed)")
    fig.tight_layout()
    path = directory / f"{config_id}-latency.png"
    fig.savefig(path)
    plt.close(fig)
    return path

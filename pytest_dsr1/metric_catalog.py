"""Metric names, units and the direction that is better.

Client metrics are vLLM bench serve's own result keys; they are gated by default (DEFAULT_TOLERANCES). Server
metrics are what vLLM's /metrics and the device said during the same run (server_metrics.py), put into the run's
result under these names by the runner: recorded in baselines and shown beside a failure, gated only where a
matrix or --dsr1-tolerance gives one a tolerance by name (never by `*`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    name: str  # the key in vLLM's benchmark result JSON (or, for a server metric, the runner's)
    unit: str
    higher_is_better: bool
    server: bool = False  # from the server's /metrics or the device, not the benchmark client


_M = [
    Metric("output_throughput", "tok/s", True),
    Metric("total_token_throughput", "tok/s", True),
    Metric("request_throughput", "req/s", True),
    Metric("mean_ttft_ms", "ms", False),
    Metric("median_ttft_ms", "ms", False),
    Metric("p99_ttft_ms", "ms", False),
    Metric("mean_tpot_ms", "ms", False),
    Metric("median_tpot_ms", "ms", False),
    Metric("p99_tpot_ms", "ms", False),
    Metric("mean_itl_ms", "ms", False),
    Metric("median_itl_ms", "ms", False),
    Metric("p99_itl_ms", "ms", False),
    Metric("mean_e2el_ms", "ms", False),
    Metric("p99_e2el_ms", "ms", False),
    Metric("server_preemptions", "count", False, server=True),
    Metric("server_waiting_max", "req", False, server=True),
    Metric("server_running_max", "req", True, server=True),
    Metric("server_kv_cache_usage_max_pct", "%", False, server=True),
    Metric("server_ttft_mean_ms", "ms", False, server=True),
    Metric("server_itl_mean_ms", "ms", False, server=True),
    Metric("server_queue_mean_ms", "ms", False, server=True),
    Metric("server_prefill_mean_ms", "ms", False, server=True),
    Metric("server_decode_mean_ms", "ms", False, server=True),
    Metric("server_prefix_cache_hit_pct", "%", True, server=True),
    Metric("server_spec_accept_pct", "%", True, server=True),
    Metric("server_cpu_s", "s", False, server=True),
    Metric("gpu_util_mean_pct", "%", True, server=True),
    Metric("gpu_sm_clock_mean_mhz", "MHz", True, server=True),
    Metric("gpu_power_mean_w", "W", False, server=True),
    Metric("gpu_memory_used_max_mib", "MiB", False, server=True),
]
METRICS: dict[str, Metric] = {m.name: m for m in _M}
CLIENT_METRICS: tuple[str, ...] = tuple(m.name for m in _M if not m.server)  # what `*` in a tolerance means


def can_worsen_by(metric: str, rel: float) -> bool:
    """Whether the metric can move by `rel` (a fraction) in its bad direction: a throughput cannot fall by 100% or
    more, so a gate, a ceiling or a detection limit at that size on it means nothing can fail."""
    return not (METRICS[metric].higher_is_better and rel >= 1)


def extract(result: dict[str, Any]) -> dict[str, float]:
    """The known metrics present in a benchmark result JSON (with the runner's server metrics), as floats."""
    server = (result.get("server_metrics") or {}).get("interpreted") or {}
    out = {name: float(result[name]) for name in CLIENT_METRICS if isinstance(result.get(name), (int, float))}
    out.update((k, float(v)) for k, v in server.items() if k in METRICS and isinstance(v, (int, float)))
    return out


def samples_of(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Benchmark results -> metric -> one sample per run."""
    out: dict[str, list[float]] = {}
    for run in runs:
        for name, value in extract(run).items():
            out.setdefault(name, []).append(value)
    return out

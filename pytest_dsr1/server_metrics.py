"""vLLM's own server metrics (Prometheus `/metrics`) around a measured run: parse, diff, interpret, explain.

Pure: no pytest, no vLLM, no network (the sampler in server_scraper.py fetches the text). The exposition format is
parsed with prometheus_client's text parser. Counters are cumulative from server start, so a run's value is
after - before; gauges are sampled during the run and kept as max and mean.

Names are kept as the server gives them (`raw`); the few the report interprets are mapped in INTERPRETED, with
the names older vLLM releases used:

- vLLM V1 (0.8+): `vllm:kv_cache_usage_perc` (0.10+; `vllm:gpu_cache_usage_perc` before), `vllm:num_preemptions`
  (counter; `vllm:num_preemptions_total` as a gauge-like counter in V0), `vllm:prefix_cache_queries/hits`
  (`vllm:gpu_prefix_cache_queries/hits` before 0.10), `vllm:inter_token_latency_seconds` (0.11+;
  `vllm:time_per_output_token_seconds` before), `vllm:spec_decode_num_draft_tokens/accepted_tokens`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

SAMPLE_HZ = 4.0  # the gauges (and the device) are sampled this often during a run; the report says so too
# Gauges sampled during a run. Per label set (one per engine of a data-parallel server) they are summed, except
# a share (`_perc`), of which the largest engine's is kept.
GAUGES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
)


@dataclass
class Snapshot:
    """One scrape: counter totals and histogram sums/counts per family name, summed over label sets."""

    counters: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (sum, count)
    gauges: dict[str, float] = field(default_factory=dict)


def parse(text: str, only: Iterable[str] | None = None) -> Snapshot:
    """A /metrics text as a Snapshot. `only`: keep these families (a cheap line filter first, for the sampler)."""
    if only is not None:
        names = tuple(only)
        text = "\n".join(line for line in text.splitlines() if any(n in line for n in names))
    snap = Snapshot()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            total = sum(s.value for s in family.samples if s.name.endswith("_total"))
            snap.counters[family.name] = snap.counters.get(family.name, 0.0) + total
        elif family.type == "histogram":
            hsum = sum(s.value for s in family.samples if s.name.endswith("_sum"))
            hcount = sum(s.value for s in family.samples if s.name.endswith("_count"))
            snap.histograms[family.name] = (hsum, hcount)
        elif family.type == "gauge" and not family.name.endswith("_created"):  # a counter's creation time
            values = [s.value for s in family.samples if not math.isnan(s.value)]
            if values:
                snap.gauges[family.name] = max(values) if family.name.endswith("_perc") else sum(values)
    return snap


@dataclass
class GaugeTrack:
    """Gauges sampled during a run: max and mean per name."""

    maxima: dict[str, float] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.maxima[name] = max(value, self.maxima.get(name, value))
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def as_json(self) -> dict[str, dict[str, float]]:
        return {
            n: {"max": self.maxima[n], "mean": self.sums[n] / self.counts[n], "samples": self.counts[n]}
            for n in self.maxima
        }


def run_metrics(
    before: Snapshot | None,
    after: Snapshot | None,
    gauges: GaugeTrack,
    device: Mapping[str, Any] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """What one measured run keeps (results.json `runs[i].server_metrics`): counter and histogram differences,
    the gauges' max and mean, the device side, and the interpreted values. Without both snapshots no counter is
    kept: a cumulative total is not a run's value."""
    counters: dict[str, float] = {}
    histograms: dict[str, dict[str, float]] = {}
    if before is not None and after is not None:
        counters = {n: after.counters[n] - before.counters.get(n, 0.0) for n in after.counters}
        for n, (s, c) in after.histograms.items():
            s0, c0 = before.histograms.get(n, (0.0, 0.0))
            histograms[n] = {"sum": s - s0, "count": c - c0}
    raw: dict[str, Any] = {
        "counters": counters,
        "histograms": histograms,
        "gauges": gauges.as_json(),
        "device": dict(device or {}),
    }
    if error:
        raw["error"] = error
    raw["interpreted"] = interpret(raw)
    return raw


# ---------------------------------------------------------------- interpretation


@dataclass(frozen=True)
class Interpreted:
    name: str  # the metric name in samples, baselines and reports (a key of metrics.METRICS)
    label: str  # what the failure message's table calls it


INTERPRETED = (
    Interpreted("server_preemptions", "preemptions"),
    Interpreted("server_waiting_max", "waiting requests (max)"),
    Interpreted("server_running_max", "running requests (max)"),
    Interpreted("server_kv_cache_usage_max_pct", "KV-cache usage (max)"),
    Interpreted("server_ttft_mean_ms", "server TTFT (mean)"),
    Interpreted("server_itl_mean_ms", "server ITL (mean)"),
    Interpreted("server_queue_mean_ms", "queue time (mean)"),
    Interpreted("server_prefill_mean_ms", "prefill time (mean)"),
    Interpreted("server_decode_mean_ms", "decode time (mean)"),
    Interpreted("server_prefix_cache_hit_pct", "prefix-cache hit rate"),
    Interpreted("server_spec_accept_pct", "spec-decode acceptance"),
    Interpreted("server_cpu_s", "server CPU time"),
    Interpreted("gpu_util_mean_pct", "GPU utilization (mean)"),
    Interpreted("gpu_sm_clock_mean_mhz", "GPU SM clock (mean)"),
    Interpreted("gpu_power_mean_w", "GPU power (mean)"),
    Interpreted("gpu_memory_used_max_mib", "GPU memory used (max)"),
)
LABELS = {i.name: i.label for i in INTERPRETED}


def _first(table: Mapping[str, Any], *names: str) -> Any:
    return next((table[n] for n in names if n in table), None)


def _mean_ms(histograms: Mapping[str, Mapping[str, float]], *names: str) -> float | None:
    h = _first(histograms, *names)
    if not h or h["count"] <= 0:
        return None
    return 1000.0 * float(h["sum"]) / float(h["count"])


def _ratio_pct(counters: Mapping[str, float], hits: tuple[str, ...], total: tuple[str, ...]) -> float | None:
    n, d = _first(counters, *hits), _first(counters, *total)
    return None if n is None or not d else 100.0 * n / d


def interpret(raw: Mapping[str, Any]) -> dict[str, float]:
    """The interpreted values of one run, from whichever of a metric's names the server gave."""
    c, h, g, dev = raw["counters"], raw["histograms"], raw["gauges"], raw.get("device", {})
    out: dict[str, float | None] = {
        "server_preemptions": _first(c, "vllm:num_preemptions", "vllm:num_preemptions_total"),
        "server_waiting_max": (_first(g, "vllm:num_requests_waiting") or {}).get("max"),
        "server_running_max": (_first(g, "vllm:num_requests_running") or {}).get("max"),
        "server_kv_cache_usage_max_pct": None,
        "server_ttft_mean_ms": _mean_ms(h, "vllm:time_to_first_token_seconds"),
        "server_itl_mean_ms": _mean_ms(h, "vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
        "server_queue_mean_ms": _mean_ms(h, "vllm:request_queue_time_seconds"),
        "server_prefill_mean_ms": _mean_ms(h, "vllm:request_prefill_time_seconds"),
        "server_decode_mean_ms": _mean_ms(h, "vllm:request_decode_time_seconds"),
        "server_prefix_cache_hit_pct": _ratio_pct(
            c,
            ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits"),
            ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries"),
        ),
        "server_spec_accept_pct": _ratio_pct(
            c, ("vllm:spec_decode_num_accepted_tokens",), ("vllm:spec_decode_num_draft_tokens",)
        ),
        "server_cpu_s": dev.get("server_cpu_s"),
        "gpu_util_mean_pct": dev.get("gpu_util_mean_pct"),
        "gpu_sm_clock_mean_mhz": dev.get("gpu_sm_clock_mean_mhz"),
        "gpu_power_mean_w": dev.get("gpu_power_mean_w"),
        "gpu_memory_used_max_mib": dev.get("gpu_memory_used_max_mib"),
    }
    kv = _first(g, "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
    if kv is not None:
        out["server_kv_cache_usage_max_pct"] = 100.0 * kv["max"]  # a 0-1 share in every release
    return {k: float(v) for k, v in out.items() if v is not None}


# ---------------------------------------------------------------- the failure message's "server side"

KV_NEAR_FULL_PCT = 95.0
DEFAULT_STEP_MS = 50.0  # one engine step, where the run has no ITL of its own to say how long a step took


@dataclass(frozen=True)
class Context:
    """What the causes are judged against: the item's concurrency, the server's cap and the client's view."""

    concurrency: int
    max_num_seqs: int | None  # the server's --max-num-seqs, where the command sets it
    client_ttft_ms: float | None = None
    client_itl_ms: float | None = None


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}"


def server_side(baseline: Mapping[str, float], now: Mapping[str, float]) -> list[list[str]]:
    """Rows of the "server side" table: each interpreted metric that this run or the baseline has."""
    rows = []
    for item in INTERPRETED:
        b, n = baseline.get(item.name), now.get(item.name)
        if b is None and n is None:
            continue
        change = f"{(n / b - 1) * 100:+.1f}%" if b and n is not None else "-"
        rows.append([item.label, _fmt(b), _fmt(n), change])
    return rows


def causes(baseline: Mapping[str, float], now: Mapping[str, float], ctx: Context) -> list[str]:
    """Known causes that the numbers show, most specific first."""
    out: list[str] = []
    pre_b, pre_n = baseline.get("server_preemptions"), now.get("server_preemptions")
    if pre_n and not pre_b:
        had = "none" if pre_b is not None else "no server metrics"
        out.append(
            f"preemptions: {pre_n:.0f} per run where the baseline had {had}: the KV cache is too small for this "
            "batch (gpu_memory_utilization, max_model_len, or the cache size)"
        )
    kv = now.get("server_kv_cache_usage_max_pct")
    if kv is not None and kv >= KV_NEAR_FULL_PCT:
        kv_b = baseline.get("server_kv_cache_usage_max_pct")
        was = f" (baseline {kv_b:.0f}%)" if kv_b is not None else ""
        out.append(f"KV-cache usage at {kv:.0f}%{was}: the cache is full, so requests wait or are preempted")
    cap = (
        f"the server's max_num_seqs is {ctx.max_num_seqs}, below the {ctx.concurrency} concurrent requests"
        if ctx.max_num_seqs is not None and ctx.max_num_seqs < ctx.concurrency
        else f"at a concurrency of {ctx.concurrency}, which the server should hold at once"
    )
    held_back = "a scheduler cap (max_num_seqs, max_num_batched_tokens) or too little KV cache holds requests back"
    wait_b, wait_n = baseline.get("server_waiting_max"), now.get("server_waiting_max")
    # Requests may wait a step or two at a burst's start in a clean run too: only more waiting than that counts.
    if wait_b is not None and wait_n is not None and wait_n >= 2 * wait_b + 1:
        out.append(
            f"waiting requests: up to {wait_n:.0f} queued, against {wait_b:.0f} in the baseline; {cap}: {held_back}"
        )
    else:
        # The waiting gauge is sampled, and a run of a second or two may end before any sample comes back (a busy
        # front end answers late): then the queue-time histogram, a counter that misses nothing, tells the same.
        # A request that arrives during a step waits for the next one in a clean run too: more than a step counts.
        q_b, q_n = baseline.get("server_queue_mean_ms"), now.get("server_queue_mean_ms")
        step_ms = now.get("server_itl_mean_ms") or DEFAULT_STEP_MS
        if q_b is not None and q_n is not None and q_n >= 2 * q_b + step_ms:
            out.append(
                f"queue time: requests waited {_fmt(q_n)} ms on average before the scheduler took them, against "
                f"{_fmt(q_b)} ms in the baseline; {cap}: {held_back}"
            )
    for metric, what in (("gpu_sm_clock_mean_mhz", "SM clock"), ("gpu_util_mean_pct", "GPU utilization")):
        b, n = baseline.get(metric), now.get(metric)
        if b and n is not None and n < 0.9 * b:
            out.append(f"lower {what}: {n:,.0f} against {b:,.0f} in the baseline (throttling, power cap, or a stall)")
    for server_name, client, what in (
        ("server_ttft_mean_ms", ctx.client_ttft_ms, "TTFT"),
        ("server_itl_mean_ms", ctx.client_itl_ms, "ITL"),
    ):
        s_now, s_base = now.get(server_name), baseline.get(server_name)
        if s_now is None or s_base is None or not s_base or client is None:
            continue
        server_change = s_now / s_base - 1
        if abs(server_change) < 0.1:
            continue
        where = "in the engine" if abs(s_now - client) <= max(0.25 * client, 1.0) else "in the front end or client"
        out.append(
            f"{what}: the server's own {what} moved {server_change * 100:+.0f}% ({_fmt(s_base)} -> {_fmt(s_now)} ms) "
            f"and the client measured {_fmt(client)} ms: the time is {where}"
        )
    return out

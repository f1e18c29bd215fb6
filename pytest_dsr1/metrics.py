"""Metric names (vLLM bench serve's own result keys), units and the direction that is better."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    name: str  # the key in vLLM's benchmark result JSON
    unit: str
    higher_is_better: bool


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
]
METRICS: dict[str, Metric] = {m.name: m for m in _M}


def extract(result: dict[str, Any]) -> dict[str, float]:
    """The known metrics present in a benchmark result JSON, as floats."""
    return {name: float(result[name]) for name in METRICS if isinstance(result.get(name), (int, float))}

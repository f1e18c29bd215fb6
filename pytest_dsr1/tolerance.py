"""Tolerance expressions: '10%' (relative) or '15%:5' (relative, with an absolute floor in the metric's unit).

The allowed change is max(rel * baseline, abs): 0.2 ms of jitter on a 1 ms ITL is not a regression.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

_EXPR = re.compile(r"^\s*(?P<rel>\d+(?:\.\d+)?)\s*%\s*(?::\s*(?P<abs>\d+(?:\.\d+)?)\s*)?$")


class ToleranceError(ValueError):
    pass


@dataclass(frozen=True)
class Tolerance:
    rel: float  # fraction, 0.10 for 10%
    abs: float = 0.0

    def allowed(self, baseline: float) -> float:
        return max(self.rel * abs(baseline), self.abs)

    def __str__(self) -> str:
        s = f"{self.rel * 100:g}%"
        return f"{s}:{self.abs:g}" if self.abs else s


# The lowest layer of every matrix: the headline numbers of `vllm bench serve`'s printout, with the recipe's
# tolerances. P99s are recorded and shown but too noisy on short runs to gate on; a matrix may add them.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "output_throughput": Tolerance(0.10),
    "total_token_throughput": Tolerance(0.10),
    "mean_ttft_ms": Tolerance(0.15, 5.0),
    "mean_tpot_ms": Tolerance(0.10, 0.5),
    "mean_itl_ms": Tolerance(0.10, 0.5),
}


def parse_tolerance(expr: str) -> Tolerance:
    m = _EXPR.match(expr)
    if not m:
        raise ToleranceError(
            f"bad tolerance {expr!r}: write '10%' or '15%:5' (relative %, then an optional absolute floor)"
        )
    rel = float(m["rel"]) / 100
    if rel >= 10:
        raise ToleranceError(f"bad tolerance {expr!r}: {m['rel']}% is not a tolerance")
    return Tolerance(rel, float(m["abs"] or 0))


# The widest allowed change a gate may have and still pass (a fraction of the reference): beyond it the gate is too
# wide to fail, and the metric is `inconclusive: too noisy to judge here`, never ok. A throughput that may fall by
# half, or a latency that may double, tells a performance engineer nothing; a matrix or --dsr1-ceiling may say
# otherwise. A higher-is-better metric can never be judged at 100% or more, whatever is set.
DEFAULT_THROUGHPUT_CEILING = 0.5
DEFAULT_LATENCY_CEILING = 1.0


def default_ceiling(metric: str) -> float:
    from pytest_dsr1.metric_catalog import METRICS

    return DEFAULT_THROUGHPUT_CEILING if METRICS[metric].higher_is_better else DEFAULT_LATENCY_CEILING


def parse_ceiling(expr: str) -> float:
    """'50%' -> 0.5: the widest allowed change of a gate, as a fraction."""
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$", expr)
    if not m or not 0 < float(m[1]) <= 1000:
        raise ToleranceError(f"bad ceiling {expr!r}: write a percentage above 0 and up to 1000%, e.g. '50%'")
    return float(m[1]) / 100


def _metric_and_value(text: str, example: str) -> tuple[str, str]:
    """A METRIC=VALUE option split in two ('*' for every metric), or an argparse error naming the fix."""
    from pytest_dsr1.metric_catalog import METRICS

    metric, sep, expr = text.partition("=")
    metric = metric.strip()
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: write {example}")
    if metric != "*" and metric not in METRICS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: unknown metric {metric!r}; use '*' or one of: {', '.join(METRICS)}"
        )
    return metric, expr


def parse_ceiling_override(text: str) -> tuple[str, float]:
    """argparse type for --dsr1-ceiling METRIC=PCT ('*' for every metric)."""
    metric, expr = _metric_and_value(text, "METRIC=PERCENT, e.g. output_throughput=40% or '*=60%'")
    try:
        return metric, parse_ceiling(expr)
    except ToleranceError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def gate_tolerance(metric: str, tol: Tolerance) -> Tolerance:
    """Refuse a tolerance that switches its gate off by accident: a throughput cannot fall by 100% or more, so
    such a gate can never fail. Switching a gate off is said with `off`."""
    from pytest_dsr1.metric_catalog import can_worsen_by

    if not can_worsen_by(metric, tol.rel):
        raise ToleranceError(
            f"{tol} on {metric} can never fail (a throughput cannot fall by {tol.rel * 100:g}%): "
            "use a tolerance below 100%, or off to record it without gating"
        )
    return tol


def parse_tolerance_override(text: str) -> tuple[str, Tolerance]:
    """argparse type for --dsr1-tolerance METRIC=EXPR ('*' for every metric)."""
    from pytest_dsr1.metric_catalog import CLIENT_METRICS

    metric, expr = _metric_and_value(text, "METRIC=TOLERANCE, e.g. mean_ttft_ms=15%:5 or '*=10%'")
    try:
        tol = parse_tolerance(expr)
        for name in CLIENT_METRICS if metric == "*" else (metric,):
            gate_tolerance(name, tol)
        return metric, tol
    except ToleranceError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

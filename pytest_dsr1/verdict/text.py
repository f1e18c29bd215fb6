"""The text a verdict shows: its table, the server-side table with likely causes, numbers as reports print them."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence

from pytest_dsr1 import server_metrics
from pytest_dsr1.metric_catalog import METRICS
from pytest_dsr1.verdict.metric import MetricVerdict
from pytest_dsr1.verdict.outcomes import OK


def num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.2f}" if abs(x) < 1e5 else f"{x:,.0f}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f}%"


def allowed_text(v: MetricVerdict) -> str:
    if v.allowed is None or not v.baseline:
        return v.tolerance
    return f"±{v.allowed / abs(v.baseline) * 100:.1f}% ({v.tolerance})"


def caught_text(metric: str, detection_pct: float | None) -> str:
    """A detection limit as a signed change in the metric's bad direction ("-12.5%", "+40.0%"), or "never"."""
    if detection_pct is None:
        return "never"
    return f"{-detection_pct if METRICS[metric].higher_is_better else detection_pct:+.1f}%"


def verdict_rows(verdicts: Iterable[MetricVerdict]) -> list[list[str]]:
    rows = []
    for v in verdicts:
        unit = METRICS[v.metric].unit
        samples = ""
        if len(v.measured_samples) > 1 or len(v.baseline_samples) > 1:
            samples = " [" + ", ".join(num(s) for s in v.measured_samples) + "]"
        rows.append(
            [
                f"{v.metric} ({unit})",
                num(v.baseline),
                num(v.measured) + samples,
                pct(v.change_pct),
                allowed_text(v),
                caught_text(v.metric, v.detection_pct),
                v.verdict + (f": {v.reason}" if v.verdict not in (OK,) and v.reason else ""),
            ]
        )
    return rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


# "catches": the detection limit, the smallest change in the bad direction that this comparison would have failed.
VERDICT_HEADER = ["metric", "baseline", "measured", "change", "allowed", "catches", "verdict"]


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


def brief(samples: Mapping[str, Sequence[float]]) -> str:
    keys = ("output_throughput", "mean_ttft_ms", "mean_tpot_ms")
    return ", ".join(f"{k}={statistics.median(samples[k]):.2f}" for k in keys if samples.get(k))


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    cells = [[c.replace("|", "\\|") for c in row] for row in rows]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in cells)]

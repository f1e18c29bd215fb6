"""Trends across nights: many --dsr1-report folders (or merges of shards) into one page per config and metric, with
the change points where a series shifted.

A night's value of a config on a metric is the geometric mean over its items of each item's median, each item
first divided by its own median over all the nights it was measured in: one number per night that moves as the
config's items move together, and items of very different scales weigh alike. Series are kept apart by machine
kind (the CPU model, core count and kernel tier, or the GPU model and count), since kinds differ by several times.

Change points come from binary segmentation of the log values: `ruptures` finds each segment's best split, and a
split stands where Student's t of the two sides' means (their pooled spread within each side) is significant at
5%, the suite's own level, after a Bonferroni correction for the segment's candidate splits (none for the newest
night alone, the one question a nightly asks), and the means differ by at least `min_shift_pct` (default 10%): a
quiet series does not sprout changes nobody would act on, and nights that move up and down around one level
(machines of one kind differ) are noise, not changes.

Apache Otava (the E-divisive means of MongoDB's and Hunter's lineage) was the first choice; its release pins
numpy 2.2.0 exactly and pulls BigQuery, Postgres and Slack clients, which cannot be installed beside vLLM's numpy,
so ruptures (numpy and scipy only) serves instead.

Pure: results.json dicts in, series and change points out; the page is drawn with matplotlib SVG.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_dsr1.errors import InputError
from pytest_dsr1.hardware import machine_key
from pytest_dsr1.html_report import inline_svg, svg_figure
from pytest_dsr1.metric_catalog import METRICS
from pytest_dsr1.verdict.outcomes import ALPHA as VERDICT_ALPHA

DEFAULT_MIN_SHIFT_PCT = 10.0
# The suite's own significance level (its verdicts'), per series, after the Bonferroni correction for the candidate
# splits of a segment.
ALPHA = VERDICT_ALPHA
MIN_NOISE = 0.005  # the least spread assumed (0.5% in log terms): identical values never make infinite t
TREND_METRICS = ("output_throughput", "median_tpot_ms", "median_ttft_ms", "median_itl_ms")


@dataclass(frozen=True)
class Night:
    """One report folder: when it ran, and per (machine kind, config) each item's median per metric."""

    where: str
    started_at: dt.datetime
    medians: Mapping[tuple[str, str], Mapping[str, Mapping[str, float]]]  # (kind, config) -> item -> metric -> median


@dataclass(frozen=True)
class ChangePoint:
    at: int  # index of the first night after the shift
    when: str
    shift_pct: float  # mean after / mean before - 1
    worse: bool


@dataclass
class Series:
    kind: str
    config_id: str
    metric: str
    nights: list[tuple[dt.datetime, str, float]] = field(default_factory=list)  # (when, folder, index value)
    changes: list[ChangePoint] = field(default_factory=list)
    # The smallest shift of one more night, either way, that would be marked, given the spread of the nights since
    # the last change point: what this series can see tomorrow (None: too few nights since).
    next_night_pct: float | None = None


def read_night(directory: Path) -> Night:
    """A report folder's results.json as a night. InputError names the folder and what is wrong."""
    path = directory / "results.json"
    try:
        data = json.loads(path.read_text())
        started = dt.datetime.fromisoformat(str(data["metadata"]["started_at"]).replace("Z", "+00:00"))
        items = data["items"]
    except FileNotFoundError:
        raise InputError(
            path, "(file)", "missing: not a --dsr1-report folder", "give the --dsr1-report folders of the nights"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            path, "metadata.started_at, items", f"unreadable ({exc})", "give report folders written by pytest-dsr1"
        ) from None
    medians: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for item in items:
        samples = item.get("samples") or {}
        fp = item.get("fingerprint") or {}
        if not samples or not fp:
            continue
        kind = machine_key(fp)
        per_metric = {m: statistics.median(v) for m, v in samples.items() if m in TREND_METRICS and v}
        if per_metric:
            medians.setdefault((kind, str(item["config"])), {})[str(item["id"])] = per_metric
    return Night(str(directory), started, medians)


def series_of(nights: Sequence[Night]) -> list[Series]:
    """Per (machine kind, config, metric), the config's index per night, oldest first."""
    nights = sorted(nights, key=lambda n: n.started_at)
    keys = sorted({key for n in nights for key in n.medians})
    out = []
    for kind, config_id in keys:
        for metric in TREND_METRICS:
            per_item: dict[str, list[float]] = {}
            for n in nights:
                for item, values in n.medians.get((kind, config_id), {}).items():
                    if values.get(metric, 0) > 0:
                        per_item.setdefault(item, []).append(values[metric])
            if not per_item:
                continue
            centers = {item: statistics.median(v) for item, v in per_item.items()}
            s = Series(kind, config_id, metric)
            for n in nights:
                logs = [
                    math.log(values[metric] / centers[item])
                    for item, values in n.medians.get((kind, config_id), {}).items()
                    if values.get(metric, 0) > 0
                ]
                if logs:
                    s.nights.append((n.started_at, n.where, math.exp(statistics.fmean(logs))))
            if len(s.nights) >= 3:
                out.append(s)
    return out


def change_points(
    values: Sequence[float], min_shift_pct: float = DEFAULT_MIN_SHIFT_PCT, alpha: float = ALPHA
) -> list[tuple[int, float]]:
    """(index of the first value after a shift, the shift in %) for each change point in `values` (positive).

    Binary segmentation: ruptures finds the best split of a segment (the largest drop in squared error of the
    log values); the split stands where Student's t of the two sides' means, with their pooled
    within-side spread, is significant at `alpha` after a Bonferroni correction for the segment's candidate splits
    (none where the split leaves the newest night alone), and the shift is at least `min_shift_pct`. Then each
    side is split again. A night alone after the split is judged against the spread of the nights before it."""
    import numpy as np
    import ruptures
    from scipy.stats import t as student

    logs = np.log(np.asarray(values, dtype=float))
    found: list[tuple[int, float]] = []

    def split(lo: int, hi: int) -> None:
        segment = logs[lo:hi]
        if len(segment) < 3:
            return
        k = ruptures.Binseg(model="l2", min_size=1, jump=1).fit(segment.reshape(-1, 1)).predict(n_bkps=1)[0]
        before, after = segment[:k], segment[k:]
        dof = len(segment) - 2
        spread = float(((before - before.mean()) ** 2).sum() + ((after - after.mean()) ** 2).sum())
        sd = max(math.sqrt(spread / dof), MIN_NOISE)
        diff = float(after.mean() - before.mean())
        t_stat = diff / (sd * math.sqrt(1 / len(before) + 1 / len(after)))
        # The newest night alone after the split is the one question a nightly asks ("did tonight shift?"): one
        # test. Any other split is the best of the segment's candidates: corrected for all of them.
        newest_alone = hi == len(logs) and k == len(segment) - 1
        tests = 1 if newest_alone else len(segment) - 1
        p = min(1.0, 2 * float(student.sf(abs(t_stat), dof)) * tests)
        shift = math.expm1(diff) * 100
        if p <= alpha and abs(shift) >= min_shift_pct:
            found.append((lo + k, shift))
            split(lo, lo + k)
            split(lo + k, hi)

    split(0, len(logs))
    return sorted(found)


def next_night_limit(
    values: Sequence[float], min_shift_pct: float = DEFAULT_MIN_SHIFT_PCT, alpha: float = ALPHA
) -> float | None:
    """The smallest shift (%) of one more night against `values` that change_points would mark: Student's t at
    `alpha` (two-sided, one test) with the spread of `values`, and at least `min_shift_pct`."""
    from scipy.stats import t as student

    if len(values) < 2:
        return None
    logs = [math.log(v) for v in values]
    sd = max(statistics.stdev(logs), MIN_NOISE)
    edge = float(student.ppf(1 - alpha / 2, len(logs) - 1)) * sd * math.sqrt(1 + 1 / len(logs))
    return max(abs(math.expm1(-edge)) * 100, min_shift_pct)


def analyse(nights: Sequence[Night], min_shift_pct: float = DEFAULT_MIN_SHIFT_PCT) -> list[Series]:
    out = series_of(nights)
    for s in out:
        values = [v for _, _, v in s.nights]
        higher_is_better = METRICS[s.metric].higher_is_better
        for at, shift in change_points(values, min_shift_pct):
            when = s.nights[at][0].strftime("%Y-%m-%d %H:%M")
            s.changes.append(ChangePoint(at, when, shift, (shift < 0) == higher_is_better))
        since = s.changes[-1].at if s.changes else 0
        s.next_night_pct = next_night_limit(values[since:], min_shift_pct)
    return out


def _chart(s: Series) -> str:
    fig, ax = svg_figure((7.2, 3.0))
    xs: list[Any] = [when for when, _, _ in s.nights]
    ys = [v * 100 for _, _, v in s.nights]
    (line,) = ax.plot(xs, ys, marker="o", linewidth=1.2)
    line.set_gid(f"series {s.kind} {s.config_id} {s.metric}")
    for change in s.changes:
        marker = ax.axvline(xs[change.at], color="#b31d28" if change.worse else "#116329", linestyle="--")
        marker.set_gid(f"change {s.config_id} {s.metric} {change.at}")
        ax.annotate(f"{change.shift_pct:+.0f}%", (xs[change.at], max(ys)), fontsize=8, ha="left", va="top")
    ax.axhline(100, color="#444", linewidth=0.8)
    worse = "lower" if METRICS[s.metric].higher_is_better else "higher"
    ax.set_title(f"{s.config_id}: {s.metric}, % of each item's median over the nights ({worse} is worse)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    return inline_svg(fig)


def page(series: Sequence[Series], folders: Iterable[str]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(s.kind)}</td><td>{e(s.config_id)}</td><td>{e(s.metric)}</td><td>{e(c.when)}</td>"
        f"<td>{c.shift_pct:+.1f}%</td><td>{'worse' if c.worse else 'better'}</td></tr>"
        for s in series
        for c in s.changes
    )
    limits = "".join(
        f"<tr><td>{e(s.kind)}</td><td>{e(s.config_id)}</td><td>{e(s.metric)}</td><td>{len(s.nights)}</td>"
        f"<td>{'±' + format(s.next_night_pct, '.0f') + '%' if s.next_night_pct is not None else '-'}</td></tr>"
        for s in series
    )
    limits_table = (
        "<h2>What the next night could show</h2><p>The smallest shift of one more night, either way, that would be "
        "marked, from the spread of the nights since the last change point.</p><table><tr><th>machine kind</th>"
        f"<th>config</th><th>metric</th><th>nights</th><th>next night marked from</th></tr>{limits}</table>"
    )
    table = (
        "<table><tr><th>machine kind</th><th>config</th><th>metric</th><th>from</th><th>shift</th><th></th></tr>"
        f"{rows}</table>"
        if rows
        else "<p>No change point: no series shifted by the minimum or more.</p>"
    )
    charts = []
    for kind in dict.fromkeys(s.kind for s in series):
        charts.append(f"<h2>{e(kind)}</h2>")
        for s in (s for s in series if s.kind == kind):
            charts.append(f'<div class="chart" data-config="{e(s.config_id)}" data-metric="{e(s.metric)}">')
            charts.append(_chart(s) + "</div>")
    listed = "".join(f"<li><code>{e(f)}</code></li>" for f in folders)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>pytest-dsr1 trends</title><style>"
        "body{font:14px system-ui,sans-serif;max-width:1280px;margin:0 auto;padding:0 16px}table{border-collapse:"
        "collapse}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}.chart svg{width:100%;"
        "max-width:900px;height:auto}</style></head><body><h1>pytest-dsr1 trends</h1>"
        f"<h2>Change points</h2>{table}{limits_table}{''.join(charts)}<h2>Nights</h2><ul>{listed}</ul></body></html>"
    )


def trend_json(series: Sequence[Series]) -> dict[str, Any]:
    return {
        "series": [
            {
                "kind": s.kind,
                "config": s.config_id,
                "metric": s.metric,
                "nights": [{"started_at": w.isoformat(), "folder": f, "index": v} for w, f, v in s.nights],
                "change_points": [vars(c) for c in s.changes],
                "next_night_pct": s.next_night_pct,
            }
            for s in series
        ]
    }


def write_trend(out: Path, folders: Sequence[Path], min_shift_pct: float = DEFAULT_MIN_SHIFT_PCT) -> list[Series]:
    nights = [read_night(f) for f in folders]
    series = analyse(nights, min_shift_pct)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trend.json").write_text(json.dumps(trend_json(series), indent=2) + "\n")
    (out / "trend.html").write_text(page(series, [str(f) for f in folders]), encoding="utf-8")
    return series

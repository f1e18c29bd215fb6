"""report.html: one self-contained page per report folder, drawn from its results.json.

It opens from a CI artifact with no server and no network: the charts are matplotlib SVG written into the page,
the table's sorting and filtering a few lines of inline script. What it shows, in order:
- the verdict table, failed, inconclusive and improved items first, sortable and filterable by config, workload
  and batch size, then each config's correctness item;
- per config and gated metric, a chart of every item's recorded session medians over time (as % of the reference
  its verdict used), tonight's value with the spread of its runs, the config's allowed band and the smallest
  change it could have caught;
- per failed item, its message (the verdict table, the server-side table and causes), its exact commands and
  links to its logs;
- in an A/B run, A's and B's start medians and B's interval.

Pure: a results.json dict in, HTML out. matplotlib is imported only where charts are drawn; without it the page
says so and keeps its tables.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_dsr1.metric_catalog import METRICS

HTML_NAME = "report.html"

# Outcome -> sort rank (lower first) and css class: what a reader must see first comes first.
_RANK = {"failed": 0, "REGRESSED": 0, "error": 0, "inconclusive": 1, "improved": 2, "passed": 3, "recorded": 3}
_FAIL = {"failed", "REGRESSED", "error"}

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1280px;padding:0 16px;
color:#1b1f23}
h1{font-size:20px;margin:16px 0 4px}h2{font-size:17px;margin:24px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}.meta{color:#555;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:3px 6px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}th{background:#f6f8fa;position:sticky;top:0;cursor:pointer;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}.o-failed,.o-REGRESSED,.o-error{color:#b31d28;
font-weight:600}.o-inconclusive{color:#9a6700;font-weight:600}.o-improved{color:#116329}.o-skipped{color:#777}
.charts{display:flex;flex-wrap:wrap;gap:8px}.chart{flex:1 1 600px;max-width:100%}.chart svg{width:100%;height:auto}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px;white-space:pre}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}.filters{margin:8px 0}.filters select{margin-right:12px}
"""

# Sorting by a column (numbers as numbers) and filtering by config, workload and batch: no library, no network.
_SCRIPT = """
const table=document.getElementById('verdicts');
function applyFilters(){const f={};document.querySelectorAll('.filters select').forEach(s=>{f[s.dataset.col]=s.value});
for(const r of table.tBodies[0].rows){let show=true;for(const c in f){if(f[c]&&r.dataset[c]!==f[c])show=false}
r.hidden=!show}}
document.querySelectorAll('.filters select').forEach(s=>s.addEventListener('change',applyFilters));
table.querySelectorAll('th').forEach((th,i)=>th.addEventListener('click',()=>{const rows=[...table.tBodies[0].rows];
const dir=th.dataset.dir==='asc'?-1:1;th.dataset.dir=dir===1?'asc':'desc';rows.sort((a,b)=>{
const x=a.cells[i].dataset.v??a.cells[i].textContent,y=b.cells[i].dataset.v??b.cells[i].textContent;
const nx=parseFloat(x),ny=parseFloat(y);return dir*(isNaN(nx)||isNaN(ny)?x.localeCompare(y):nx-ny)});
rows.forEach(r=>table.tBodies[0].appendChild(r))}));
window.addEventListener('load',()=>{document.documentElement.dataset.loadedMs=Math.round(performance.now())});
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}%" if signed else f"{value:.1f}%"


def _gated(items: Iterable[Mapping[str, Any]]) -> list[str]:
    """The gated metrics the items were judged on, in the catalog's order."""
    seen = {v["metric"] for item in items for v in item.get("verdicts") or []}
    return [m for m in METRICS if m in seen]


def _item_rank(item: Mapping[str, Any]) -> tuple[int, str, str, int]:
    """Failed first, then inconclusive, improved, the rest; within each by config, workload and batch size."""
    wl = item.get("workload") or {}
    batch = wl.get("batch_size")
    rank = _RANK.get(_shown_outcome(item), 4)
    return rank, str(item.get("config")), str(wl.get("name", "")), batch if isinstance(batch, int) else 0


def _shown_outcome(item: Mapping[str, Any]) -> str:
    outcome = str(item.get("outcome"))
    verdicts = [v.get("verdict") for v in item.get("verdicts") or []]
    if outcome == "passed" and "improved" in verdicts:
        return "improved"
    if outcome == "skipped" and "inconclusive" in verdicts:
        return "inconclusive"
    return outcome


def verdict_table(items: Sequence[Mapping[str, Any]]) -> str:
    """The items, failed first: outcome, and per gated metric the change, the allowed change and what it would have
    caught."""
    metrics = _gated(items)
    head = ["config", "workload", "batch", "outcome"]
    for m in metrics:
        label = short_name(m)
        head += [f"{label} change", "allowed", "catches"]
    rows = []
    for item in sorted(items, key=_item_rank):
        wl = item.get("workload") or {}
        outcome = _shown_outcome(item)
        by_metric = {v["metric"]: v for v in item.get("verdicts") or []}
        cells = [
            f'<td title="{_e(item.get("id"))}">{_e(item.get("config"))}</td>',
            f"<td>{_e(wl.get('name', ''))}</td>",
            f"<td class=num>{_e(wl.get('batch_size', ''))}</td>",
            f'<td class="o-{_e(outcome)}" data-v="{_RANK.get(outcome, 4)}">{_e(outcome)}</td>',
        ]
        for m in metrics:
            v = by_metric.get(m)
            if v is None:
                cells += ["<td></td>"] * 3
                continue
            change = v.get("change_pct")  # the verdict's own, as results.json carries it
            allowed = _allowed_pct(v)
            det = v.get("detection_pct")
            sign = "-" if METRICS[m].higher_is_better else "+"
            cells += [
                f'<td class="num o-{_e(v.get("verdict"))}" data-v="{change if change is not None else ""}" '
                f'title="{_e(v.get("verdict"))}: {_e(v.get("reason", ""))}">{_pct(change)}</td>',
                f'<td class=num data-v="{allowed if allowed is not None else ""}">'
                f"{'±' + _pct(allowed, False) if allowed is not None else '-'}</td>",
                f'<td class=num data-v="{det if det is not None else ""}">'
                f"{sign + _pct(det, False) if det is not None else '-'}</td>",
            ]
        data = (
            f'data-config="{_e(item.get("config"))}" data-workload="{_e(wl.get("name", ""))}" '
            f'data-batch="{_e(wl.get("batch_size", ""))}"'
        )
        rows.append(f'<tr id="item-{_e(item.get("id"))}" {data}>{"".join(cells)}</tr>')
    filters = []
    for col, values in (
        ("config", sorted({str(i.get("config")) for i in items})),
        ("workload", sorted({str((i.get("workload") or {}).get("name", "")) for i in items})),
        ("batch", sorted({str((i.get("workload") or {}).get("batch_size", "")) for i in items}, key=_int_or_text)),
    ):
        options = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
        filters.append(f'<label>{col} <select data-col="{col}"><option value="">all</option>{options}</select></label>')
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (
        f'<div class="filters">{"".join(filters)}</div>'
        f'<table id="verdicts"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def short_name(metric: str) -> str:
    """A table header's name for a metric: output_throughput -> throughput, median_tpot_ms -> median TPOT."""
    if metric == "output_throughput":
        return "throughput"
    words = metric.removesuffix("_ms").split("_")
    return " ".join(w.upper() if w in ("ttft", "tpot", "itl", "e2el") else w for w in words)


def _int_or_text(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (10**9, text)


def _allowed_pct(v: Mapping[str, Any]) -> float | None:
    base, allowed = v.get("baseline"), v.get("allowed")
    if not base or allowed is None:
        return None
    return float(allowed) / float(base) * 100


def config_table(config_verdicts: Sequence[Mapping[str, Any]]) -> str:
    if not config_verdicts:
        return "<p>No config verdict (fewer than two items of a config were compared).</p>"
    rows = []
    for cv in sorted(config_verdicts, key=lambda c: (c.get("verdict") != "REGRESSED", c["config_id"], c["metric"])):
        det = cv.get("detection_pct")
        sign = "-" if METRICS.get(cv["metric"]) is None or METRICS[cv["metric"]].higher_is_better else "+"
        rows.append(
            "<tr>"
            f"<td>{_e(cv['config_id'])}</td><td>{_e(cv['metric'])}</td><td class=num>{cv.get('items', '')}</td>"
            f"<td class=num>{_pct(cv.get('change_pct'))}</td>"
            f"<td class=num>[{_pct(cv.get('low_pct'))}, {_pct(cv.get('high_pct'))}]</td>"
            f"<td class=num>±{_pct(cv.get('allowed_pct'), False)}</td>"
            f"<td class=num>{sign + _pct(det, False) if det is not None else '-'}</td>"
            f'<td class="o-{_e(cv.get("verdict"))}">{_e(cv.get("verdict"))}</td><td>{_e(cv.get("reason", ""))}</td>'
            "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("config", "metric", "items", "change", "95% interval", "allowed", "catches", "verdict", "why")
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _when(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def svg_figure(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A headless matplotlib figure and axes for an inline SVG chart (text kept as text: a smaller page, searchable
    labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"
    return plt.subplots(figsize=figsize, dpi=100)


def inline_svg(fig: Any) -> str:
    """`fig` as an <svg> element to write into a page (no XML prolog, no metadata), and closed."""
    import matplotlib.pyplot as plt

    out = io.StringIO()
    fig.savefig(out, format="svg")
    plt.close(fig)
    svg = re.sub(r"<metadata>.*?</metadata>", "", out.getvalue(), flags=re.S)  # matplotlib's RDF: bytes nobody reads
    return svg[svg.index("<svg") :]


def config_chart(
    config_id: str,
    metric: str,
    items: Sequence[Mapping[str, Any]],
    config_verdict: Mapping[str, Any] | None,
    tonight: dt.datetime | None,
) -> str | None:
    """One config's items on one metric, as % of the reference each verdict used: every recorded session of this
    machine kind over time, tonight's median with its runs' spread, the config's allowed band and what it could
    have caught. An SVG string, or None where no item has a reference."""
    info = METRICS[metric]
    series = []
    for item in items:
        v = next((x for x in item.get("verdicts") or [] if x.get("metric") == metric), None)
        if v is None or not v.get("baseline") or v.get("measured") is None:
            continue
        base = float(v["baseline"])
        history = [float(h) / base * 100 for h in (item.get("histories") or {}).get(metric, [])]
        dates = [_when(d) for d in (item.get("history_dates") or {}).get(metric, [])]
        samples = [float(s) / base * 100 for s in v.get("measured_samples") or []]
        series.append((str(item.get("id")), history, dates, float(v["measured"]) / base * 100, samples))
    if not series:
        return None
    fig, ax = svg_figure((7.2, 3.4))
    use_dates = (
        tonight is not None
        and all(d is not None for _, h, ds, _, _ in series for d in ds)
        and any(ds for _, _, ds, _, _ in series)
    )
    for label, history, dates, now, samples in series:
        name = label.split("[", 1)[-1].rstrip("]")
        if use_dates and tonight is not None:
            xs: list[Any] = [*dates, tonight]
        else:
            xs = list(range(len(history) + 1))
        (line,) = ax.plot(xs[:-1], history, marker="o", markersize=3, linewidth=1, alpha=0.7, label=name)
        line.set_gid(f"history {label}")  # the SVG group's id: each item's history and tonight can be found
        low, high = (min(samples), max(samples)) if samples else (now, now)
        point = ax.errorbar(
            [xs[-1]], [now], yerr=[[now - low], [high - now]], fmt="D", markersize=6, color=line.get_color(), capsize=3
        )
        point.lines[0].set_gid(f"tonight {label}")
    ax.axhline(100, color="#444", linewidth=0.8)
    if config_verdict is not None:
        allowed = float(config_verdict.get("allowed_pct") or 0)
        ax.axhspan(100 - allowed, 100 + allowed, color="#2da44e", alpha=0.08, label=f"config allowed ±{allowed:.0f}%")
        det = config_verdict.get("detection_pct")
        if det is not None:
            edge = 100 - float(det) if info.higher_is_better else 100 + float(det)
            ax.axhline(
                edge, color="#b31d28", linestyle="--", linewidth=1, label=f"would have caught {edge - 100:+.0f}%"
            )
        change = config_verdict.get("change_pct")
        if change is not None and series:
            x_now: Any = tonight if use_dates else max(len(s[1]) for s in series)
            lo, hi = float(config_verdict.get("low_pct") or change), float(config_verdict.get("high_pct") or change)
            ax.errorbar(
                [x_now], [100 + float(change)], yerr=[[float(change) - lo], [hi - float(change)]], fmt="s",
                color="black", markersize=7, capsize=5, label=f"config {float(change):+.1f}% [{lo:+.1f}, {hi:+.1f}]",
            )  # fmt: skip
    worse = "lower" if info.higher_is_better else "higher"
    ax.set_title(f"{config_id}: {metric} ({info.unit}, % of each item's reference; {worse} is worse)", fontsize=10)
    ax.set_ylabel("% of reference")
    ax.grid(alpha=0.3)
    if use_dates:
        fig.autofmt_xdate()
    else:
        ax.set_xlabel("recorded session (tonight last)")
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    return inline_svg(fig)


def charts(data: Mapping[str, Any]) -> str:
    items = [i for i in data.get("items") or [] if i.get("verdicts")]
    if not items:
        return "<p>No item was compared with a reference in this run, so there is no history to draw.</p>"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "<p>Charts need matplotlib: <code>pip install 'pytest-dsr1[report]'</code>.</p>"
    tonight = _when((data.get("metadata") or {}).get("started_at"))
    verdicts = {(c["config_id"], c["metric"]): c for c in data.get("config_verdicts") or []}
    out = []
    by_config: dict[str, list[Mapping[str, Any]]] = {}
    for item in items:
        by_config.setdefault(str(item.get("config")), []).append(item)
    for config_id, its in by_config.items():
        drawn = []
        for metric in _gated(its):
            svg = config_chart(config_id, metric, its, verdicts.get((config_id, metric)), tonight)
            if svg:
                drawn.append(f'<div class="chart" data-config="{_e(config_id)}" data-metric="{_e(metric)}">{svg}</div>')
        if drawn:
            out.append(f"<h3>{_e(config_id)}</h3><div class=charts>{''.join(drawn)}</div>")
    return "".join(out)


def correctness_table(correctness: Mapping[str, Mapping[str, Any]]) -> str:
    """Each config's correctness item: its outcome and what its check saw (the first divergence, GSM8K's interval)."""
    if not correctness:
        return "<p>No correctness item ran.</p>"
    rows = "".join(
        f'<tr id="correctness-{_e(cid)}"><td>{_e(cid)}</td><td class="o-{_e(c.get("outcome"))}">'
        f"{_e(c.get('outcome'))}</td><td>{_e(c.get('summary', ''))}</td></tr>"
        for cid, c in sorted(correctness.items(), key=lambda kv: (_RANK.get(str(kv[1].get("outcome")), 4), kv[0]))
    )
    return f"<table><thead><tr><th>config</th><th>outcome</th><th>check</th></tr></thead><tbody>{rows}</tbody></table>"


def _log_links(item: Mapping[str, Any], logs: str | None, directory: Path) -> str:
    """Links to the item's config's server log and the benchmark worker's log: in the report folder's `logs/`
    (where .ci/gpu-shard copies them), else where the run kept them."""
    config = str(item.get("config"))
    local = directory / "logs"
    found = sorted(p for p in local.glob(f"{config}*") if p.is_file()) if local.is_dir() else []
    if local.is_dir():
        found += sorted(p for p in local.glob("bench-worker*.log") if p.is_file())
        return " ".join(f'<a href="{_e(p.relative_to(directory).as_posix())}">{_e(p.name)}</a>' for p in found)
    if logs:
        return f"<code>{_e(logs)}</code> (not copied into this folder)"
    return ""


def failed_items(data: Mapping[str, Any], directory: Path) -> str:
    failed = [i for i in data.get("items") or [] if i.get("outcome") in _FAIL]
    if not failed:
        return "<p>No item failed.</p>"
    out = []
    for item in failed:
        links = _log_links(item, data.get("logs"), directory)
        out.append(
            f"<details open><summary class=o-failed>{_e(item.get('id'))}: {_e(item.get('outcome'))}</summary>"
            f"<pre>{_e(item.get('message', ''))}</pre>"
            f"<p>server: <code>{_e(item.get('server_command') or '-')}</code></p>"
            f"<p>benchmark: <code>{_e(item.get('bench_command') or '-')}</code></p>"
            + (f"<p>logs: {links}</p>" if links else "")
            + "</details>"
        )
    return "".join(out)


def ab_section(ab: Mapping[str, Any]) -> str:
    """An A/B run: each side's start medians per item and metric, B's change with its interval, and the starts."""
    rows = []
    for key, verdicts in (ab.get("items") or {}).items():
        for v in verdicts:
            rows.append(
                f"<tr><td>{_e(key)}</td><td>{_e(v['metric'])}</td>"
                f"<td class=num>{_e(', '.join(f'{x:,.1f}' for x in v.get('a_starts') or []))}</td>"
                f"<td class=num>{_e(', '.join(f'{x:,.1f}' for x in v.get('b_starts') or []))}</td>"
                f"<td class=num>{_pct(v.get('change_pct'))}</td>"
                f"<td class=num>[{_pct(v.get('low_pct'))}, {_pct(v.get('high_pct'))}]</td>"
                f"<td class=num>±{_pct(v.get('margin_pct'), False)}</td>"
                f'<td class="o-{_e(v.get("verdict")).replace(" ", "-")}">{_e(v.get("verdict"))}</td></tr>'
            )
    head = "".join(f"<th>{h}</th>" for h in ("item", "metric", "A starts", "B starts", "B vs A", "90% interval"))
    head += "<th>allowed</th><th>verdict</th>"
    starts = "".join(
        f"<tr><td class=num>{s.get('index')}</td><td>{_e(s.get('side'))}</td><td>{_e(s.get('config'))}</td>"
        f"<td class=num>{_num(s.get('ready_s'))}</td><td class=num>{_num(s.get('wall_s'))}</td>"
        f"<td>{_e(s.get('error') or '')}</td></tr>"
        for s in ab.get("starts") or []
    )
    return (
        f"<p>{_e(ab.get('b_label', 'B'))}, against {_e(ab.get('a_label', 'A'))}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<h3>Starts</h3><table><thead><tr><th>start</th><th>side</th><th>config</th><th>ready after (s)</th>"
        f"<th>wall (s)</th><th>error</th></tr></thead><tbody>{starts}</tbody></table>"
    )


def _num(value: Any) -> str:
    return f"{float(value):.1f}" if isinstance(value, (int, float)) else "-"


def _counts(data: Mapping[str, Any]) -> str:
    counts: dict[str, int] = {}
    for item in data.get("items") or []:
        outcome = _shown_outcome(item)
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{n} {o}" for o, n in sorted(counts.items(), key=lambda kv: _RANK.get(kv[0], 4)))


def render(data: Mapping[str, Any], directory: Path) -> str:
    """The page of one report folder (`directory`, for the links to its logs)."""
    meta = data.get("metadata") or {}
    title = f"pytest-dsr1 report, {meta.get('started_at', '')}"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p class=meta>{_e(meta.get('command_line', ''))}<br>vLLM {_e(meta.get('vllm'))}, "
        f"commit {_e(meta.get('git_commit'))}, {_e(meta.get('host', ''))}</p>",
        f"<p id=counts><b>{_e(_counts(data))}</b></p>",
        "<h2>Verdicts</h2>",
        verdict_table(data.get("items") or []),
        "<h2>Correctness</h2>",
        correctness_table(data.get("correctness") or {}),
        "<h2>Per config</h2>",
        config_table(data.get("config_verdicts") or []),
        "<h2>History and tonight</h2>",
        charts(data),
        "<h2>Failed items</h2>",
        failed_items(data, directory),
    ]
    if data.get("ab"):
        parts += ["<h2>A/B</h2>", ab_section(data["ab"])]
    parts += [f"<script>{_SCRIPT}</script></body></html>"]
    return "\n".join(parts)


def write_html(directory: Path, data: Mapping[str, Any] | None = None) -> Path:
    """Write DIR/report.html from `data` (or DIR/results.json)."""
    if data is None:
        data = json.loads((directory / "results.json").read_text())
    path = directory / HTML_NAME
    path.write_text(render(data, directory), encoding="utf-8")
    return path

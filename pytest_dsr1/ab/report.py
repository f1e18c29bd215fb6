"""The A/B parts of the reports: an item's table, the terminal lines, summary.md and results.json."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from pytest_dsr1.ab.data import AbConfigVerdict, AbRun, AbVerdict
from pytest_dsr1.metric_catalog import METRICS
from pytest_dsr1.verdict.text import format_table, md_table, num, pct

AB_HEADER = [
    "metric",
    "A (per start)",
    "B (per start)",
    "B vs A",
    "interval",
    "p (B worse by > margin)",
    "margin",
    "verdict",
]


def starts_text(values: tuple[float, ...]) -> str:
    if not values:
        return "-"
    mid = statistics.median(values)
    return f"{num(mid)} [" + ", ".join(num(x) for x in values) + "]"


def ab_rows(verdicts: Iterable[AbVerdict]) -> list[list[str]]:
    rows = []
    for v in verdicts:
        interval = (
            "-"
            if v.low_pct is None or v.high_pct is None
            else f"{v.level_pct:g}% [{v.low_pct:+.1f}, {v.high_pct:+.1f}]"
        )
        rows.append(
            [
                f"{v.metric} ({METRICS[v.metric].unit})",
                starts_text(v.a_starts),
                starts_text(v.b_starts),
                pct(v.change_pct),
                interval,
                "-" if v.p_worse is None else f"{v.p_worse:.3f}",
                f"±{v.margin_pct:.1f}%",
                v.verdict + (f": {v.reason}" if v.verdict != "no difference" else ""),
            ]
        )
    return rows


def ab_table(verdicts: Iterable[AbVerdict]) -> str:
    """An item's A/B verdicts: each side's start medians (their median first), B's change and the verdict."""
    return format_table(AB_HEADER, ab_rows(verdicts))


def ab_cost_line(ab: AbRun) -> str:
    """What the comparison cost, so that a user can weigh rounds against time."""
    a, b = ab.wall_s("A"), ab.wall_s("B")
    n_a = sum(s.side == "A" for s in ab.starts)
    n_b = len(ab.starts) - n_a
    what = "bursts on two live endpoints" if ab.spec.target else "server starts"
    return (
        f"A/B cost: {len(ab.starts)} {what} ({n_a} A, {n_b} B; {ab.rounds} ABBA round(s) per config), "
        f"{(a + b) / 60:.1f} min wall: A {a / 60:.1f} min, B {b / 60:.1f} min"
    )


def ab_terminal(ab: AbRun, tr: Any) -> None:
    tr.write_line(f"dsr1 A/B: {ab.b_label}, against {ab.a_label}")
    rows = [[key, *row] for key, verdicts in ab.verdicts.items() for row in ab_rows(verdicts)]
    if rows:
        for line in format_table(["item", *AB_HEADER], rows).splitlines():
            tr.write_line(line, **({"red": True, "bold": True} if " B slower" in line else {}))
    for cv in ab.config_verdicts:
        tr.write_line(f"dsr1: A/B config {cv.line()}", **({"red": True, "bold": True} if cv.failed else {}))
    tr.write_line(f"dsr1: {ab_cost_line(ab)}")


def ab_json(ab: AbRun) -> dict[str, Any]:
    def verdict(v: AbVerdict) -> dict[str, Any]:
        return {**vars(v), "a_starts": list(v.a_starts), "b_starts": list(v.b_starts)}

    def config(v: AbConfigVerdict) -> dict[str, Any]:
        return vars(v)

    return {
        "a": ab.a_label,
        "b": ab.b_label,
        "rounds": ab.rounds,
        "starts": [
            {
                "config": s.config_id,
                "side": s.side,
                "index": s.index,
                "ready_s": s.ready_s,
                "wall_s": s.wall_s,
                "error": s.error,
                "medians": {key: s.medians(key) for key in s.runs},
                "item_errors": s.item_errors,
            }
            for s in ab.starts
        ],
        "items": {key: [verdict(v) for v in vs] for key, vs in ab.verdicts.items()},
        "config_verdicts": [config(v) for v in ab.config_verdicts],
        "cost": {"starts": len(ab.starts), "wall_s": {"A": ab.wall_s("A"), "B": ab.wall_s("B")}},
    }


def ab_markdown(ab: AbRun) -> list[str]:
    out = [f"### A/B: {ab.b_label}, against {ab.a_label}", ""]
    if ab.config_verdicts:
        rows = [
            [
                v.config_id,
                v.metric,
                f"{v.change_pct:+.1f}%",
                f"[{v.low_pct:+.1f}%, {v.high_pct:+.1f}%]",
                str(v.items),
                str(v.starts),
                f"±{v.allowed_pct:.1f}%",
                v.verdict,
            ]
            for v in ab.config_verdicts
        ]
        out += md_table(["config", "metric", "B vs A", "interval", "items", "starts", "allowed", "verdict"], rows)
        out.append("")
    rows = [[key, *row] for key, verdicts in ab.verdicts.items() for row in ab_rows(verdicts)]
    if rows:
        out += md_table(["item", *AB_HEADER], rows)
        out.append("")
    starts = [
        [
            s.config_id,
            str(s.index),
            s.side,
            "failed" if s.ready_s is None else f"{s.ready_s:.1f}s",
            f"{s.wall_s:.1f}s",
            s.error.splitlines()[0] if s.error else "-",
        ]
        for s in ab.starts
    ]
    out += md_table(["config", "start", "side", "ready after", "wall", "error"], starts)
    out += ["", ab_cost_line(ab) + ".", ""]
    return out

"""`python -m pytest_dsr1 merge OUT SHARD_DIR...`: one run's reports from the reports of its shards.
`python -m pytest_dsr1 trend OUT DIR...`: one page of trends across nights' report folders, with change points.

Exit codes: 0 every planned item was reported (merge), the page was written (trend); 1 a planned item is missing
(each one is named); 2 a usage error (a folder that is not a report, shards of different plans).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_dsr1 import baseline, report, timing, trend
from pytest_dsr1.errors import InputError
from pytest_dsr1.matrix import MatrixError, load_matrix, matrix_layers
from pytest_dsr1.merge import apply_recorded_sessions, merge, recorded_files, recorded_references


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pytest_dsr1", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser(
        "merge",
        help="merge the --dsr1-report folders of shards (--dsr1-shard K/N) into one report",
        description="Merge the --dsr1-report folders of shards (--dsr1-shard K/N): one results.json, summary.md "
        "and plots in OUT; with record runs, the shards' recorded sessions appended to the baseline files.",
    )
    m.add_argument("out", type=Path, help="folder for the merged results.json, summary.md and plots")
    m.add_argument("shards", type=Path, nargs="+", help="each shard's --dsr1-report folder")
    m.add_argument(
        "--baselines",
        type=Path,
        default=Path("baselines"),
        help="baseline folder that record shards' sessions are appended to (default: ./baselines)",
    )
    m.add_argument(
        "--keep-sessions",
        type=int,
        default=baseline.DEFAULT_KEEP_SESSIONS,
        help="sessions kept per entry and machine kind, as --dsr1-keep-sessions (default: %(default)s)",
    )
    m.add_argument("--fresh-history", action="store_true", help="as --dsr1-fresh-history, for the recorded entries")
    m.add_argument(
        "--matrix",
        type=Path,
        default=None,
        help="the --dsr1-matrix the shards ran with (default: the shipped matrix and ./test_matrix)",
    )
    t = sub.add_parser(
        "trend",
        help="one page of trends across many nights' report folders, with change points",
        description="Trends across nights: each DIR is a --dsr1-report folder (or a merge of shards); OUT gets "
        "trend.html (a chart per machine kind, config and metric, change points marked) and trend.json.",
    )
    t.add_argument("out", type=Path, help="folder for trend.html and trend.json")
    t.add_argument("nights", type=Path, nargs="+", help="report folders, any order (sorted by their start time)")
    t.add_argument(
        "--min-shift",
        type=float,
        default=trend.DEFAULT_MIN_SHIFT_PCT,
        help="the smallest shift of a series' mean, in %%, reported as a change point (default: %(default)s)",
    )
    return ap


def _trend(a: argparse.Namespace) -> int:
    try:
        series = trend.write_trend(a.out, a.nights, a.min_shift)
    except InputError as exc:
        print(f"pytest-dsr1 trend: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # ruptures and matplotlib come with the report extra
        print(f"pytest-dsr1 trend: {exc}; install them with: pip install 'pytest-dsr1[report]'", file=sys.stderr)
        return 2
    changes = [(s, c) for s in series for c in s.changes]
    print(f"pytest-dsr1 trend: {len(a.nights)} night(s), {len(series)} series, {len(changes)} change point(s)")
    for s, c in changes:
        direction = "worse" if c.worse else "better"
        print(f"  {s.config_id} {s.metric} ({s.kind}): {c.shift_pct:+.1f}% from {c.when} ({direction})")
    for s in series:
        if s.metric == "output_throughput" and s.next_night_pct is not None:
            print(f"  {s.config_id} ({s.kind}): the next night's throughput is marked from ±{s.next_night_pct:.0f}%")
    print(f"pytest-dsr1 trend: written to {a.out / 'trend.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if a.command == "trend":
        return _trend(a)
    try:
        matrix = load_matrix(*matrix_layers(Path.cwd(), a.matrix))
        merged = merge(a.shards, matrix)
    except (InputError, MatrixError) as exc:
        print(f"pytest-dsr1 merge: {exc}", file=sys.stderr)
        return 2
    run_log = merged.run_log
    path = report.write_reports(run_log, a.out)
    counts, starts = report.outcome_counts(run_log), timing.starts_line(run_log)
    print(f"pytest-dsr1 merge: {len(merged.shards)} shard(s), {counts}; {starts}")
    print(f"pytest-dsr1 merge: reports written to {path}")
    if any(recorded_files(s) or recorded_references(s) for s in a.shards):
        written = apply_recorded_sessions(a.shards, a.baselines, a.keep_sessions, a.fresh_history)
        for file in dict.fromkeys(p for p, _ in written):
            n = sum(p == file for p, _ in written)
            print(f"pytest-dsr1 merge: recorded {n} entr{'y' if n == 1 else 'ies'} into {file}")
    if merged.missing:
        n = len(merged.missing)
        print(f"pytest-dsr1 merge: {n} planned item(s) missing from the shards' reports:", file=sys.stderr)
        for item, shard in sorted(merged.missing.items(), key=lambda kv: (kv[1], kv[0])):
            print(f"  {item} (shard {shard})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

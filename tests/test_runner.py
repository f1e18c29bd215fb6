"""The runner without a server: what it does before any benchmark run."""

from __future__ import annotations

from pathlib import Path

from helpers import MATRIX

from pytest_dsr1.command import server_command
from pytest_dsr1.errors import ItemFailed
from pytest_dsr1.matrix import item_key, load_matrix
from pytest_dsr1.options import Options
from pytest_dsr1.run_log import RunLog, RunMetadata
from pytest_dsr1.runner import Runner, ServerHandle
from pytest_dsr1.server import VllmServer


class WorkerStandIn:
    """Records the calls the runner makes: the real worker imports vLLM for 8-20 s, which is the point here."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.waited_s = 0.0

    def launch(self) -> None:
        self.calls.append("launch")

    def start(self) -> None:
        self.calls.append("start")

    def run(self, *args: object) -> None:
        self.calls.append("run")
        raise AssertionError("no benchmark run was asked for")

    def close(self) -> None:
        self.calls.append("close")


def test_the_worker_starts_before_the_first_timed_run(tmp_path: Path):
    """With pytest-benchmark, measure(runs=0) comes first and every timed round is a run after it: the worker's
    start (vLLM's import) must happen in measure, or the first round's timing would include it."""
    matrix = load_matrix(MATRIX)
    config = matrix.config("cpu-tiny-tp1")
    run_log = RunLog(matrix, tmp_path, RunMetadata("0", None, "py", "pytest", None, "now", "host"))
    runner = Runner(matrix, Options(run_dir=tmp_path), run_log, lambda line: None)
    worker = WorkerStandIn()
    runner._worker = worker  # type: ignore[assignment]
    command = server_command(config, "m", port=1)
    server = VllmServer(config.id, command, "127.0.0.1", 1, tmp_path / "s.log", "python")
    handle = ServerHandle(config, command, "m", server, fingerprint={"server_command": "vllm serve m"})
    m = runner.measure(handle, matrix.workloads_for(config)[0], runs=0)
    assert worker.calls == ["start"] and m.runs == [] and m.more is not None


def test_an_item_of_a_server_that_did_not_start_fails_with_the_reason(tmp_path: Path):
    matrix = load_matrix(MATRIX)
    config = matrix.config("cpu-tiny-tp1")
    run_log = RunLog(matrix, tmp_path, RunMetadata("0", None, "py", "pytest", None, "now", "host"))
    runner = Runner(matrix, Options(run_dir=tmp_path), run_log, lambda line: None)
    handle = ServerHandle(config, server_command(config, "m"), "m", error="port in use (log tail here)")
    wl = matrix.workloads_for(config)[0]
    try:
        runner.measure(handle, wl)
    except ItemFailed as exc:
        assert "did not start" in str(exc) and "port in use (log tail here)" in str(exc)
    else:
        raise AssertionError("measure must raise ItemFailed")
    assert run_log.results[item_key(config.id, wl.id)].outcome == "failed"

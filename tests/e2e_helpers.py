"""Helpers of the end-to-end tests: run the suite in a real pytest subprocess, scan for leftover processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
from helpers import REPO


def vllm_processes() -> list[psutil.Process]:
    """Every process that is a vLLM server, engine, worker or our benchmark worker (vLLM renames its
    engine processes VLLM::EngineCore, VLLM::Worker...)."""
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            text = " ".join([p.info["name"] or "", *(p.info["cmdline"] or [])])
        except psutil.Error:
            continue
        if p.pid != me and ("vllm.entrypoints" in text or "VLLM::" in text or "pytest_dsr1.bench_worker" in text):
            found.append(p)
    return found


def wait_no_vllm(timeout: float = 20.0) -> list[str]:
    """The descriptions of vLLM processes still alive after `timeout` seconds (empty: none left)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [d for p in vllm_processes() if (d := _describe_alive(p))]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _describe_alive(p: psutil.Process) -> str | None:
    """'PID cmdline' of a live process; None for one that is gone or a zombie (it holds nothing but its pid
    until its parent, perhaps a container's init, reaps it)."""
    try:
        if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE:
            return None
        return f"{p.pid} {' '.join(p.cmdline()[:4])}"
    except psutil.Error:  # gone, or a zombie, between the scan and now
        return None


def run_suite(
    args: list[str], run_dir: Path, timeout: float = 1200, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # The measurement budget is off unless a test asks for it: it would add runs to undecided items, so that a
    # test's outcome and time would depend on how near its items fall to their edges (test_budget_* uses it).
    budget = [] if any(a.startswith("--dsr1-budget") for a in args) else ["--dsr1-budget", "off"]
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rA", "--dsr1-run-dir", str(run_dir)]
    cmd += [*budget, *args]
    result = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    # The whole output, for when an assertion shows only its tail.
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "pytest-stdout.txt").write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
    print(f"suite output: {run_dir / 'pytest-stdout.txt'}")
    return result


def outcome_lines(stdout: str, word: str) -> list[str]:
    return [
        line
        for line in stdout.splitlines()
        if line.startswith("test_") and line.rstrip().endswith(("]", "%]")) and f" {word}" in line
    ]


def perturbed_cache(directory: Path) -> Path:
    """A cache folder (DSR1_CACHE_DIR) holding the tiny checkpoint under its usual name, one routed expert's weights
    scaled x4 by the project's own generator: a wrong model served under the same config id, as a kernel bug would
    serve one."""
    name = subprocess.run(
        [sys.executable, "-c", "from pytest_dsr1.tiny import default_path; print(default_path().name)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pytest_dsr1.tiny", str(directory / name), "--perturb-expert", "3"], check=True
    )
    return directory

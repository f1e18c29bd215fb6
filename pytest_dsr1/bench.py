"""Client side of the benchmark worker (bench_worker.py): start it once, send it workloads, restart it if it dies.

The benchmark runs outside the pytest process, so a crash there cannot take pytest down, and vLLM is
imported once per session instead of once per item (8-10 s here, about 20 s on an H200 machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class BenchError(RuntimeError):
    pass


@dataclass
class BenchRun:
    result: dict[str, Any]
    elapsed_s: float  # wall time of the benchmark call inside the worker (warm-up included)


class BenchWorker:
    def __init__(self, log_path: Path, python: str = sys.executable, import_timeout_s: float = 300.0) -> None:
        self.log_path = Path(log_path)
        self.python = python
        self.import_timeout_s = import_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.ready = False  # its ready line was read: vLLM is imported
        self.waited_s = 0.0  # time spent waiting for the import, over the session (what the overlap did not hide)

    def launch(self) -> None:
        """Start the worker's process and return at once: its vLLM import (10 s on a CPU, about 28 s on an H200
        machine) then runs while the first server starts, instead of after it is ready. Idempotent."""
        if self.alive():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.ready = False
        self.proc = subprocess.Popen(
            [self.python, "-m", "pytest_dsr1.bench_worker", str(self.log_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH")])
                ),
            },
        )

    def start(self) -> None:
        """Launch the worker unless it runs, and wait for its ready line (vLLM imported). Idempotent: call it
        before timing a benchmark so that the import is not timed. Raises BenchError when it fails."""
        self.launch()
        if self.ready:
            return
        t0 = time.monotonic()
        self._read_reply(self.import_timeout_s, "starting the benchmark worker (importing vLLM)")
        self.ready = True
        self.waited_s += time.monotonic() - t0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def run(self, argv: list[str], timeout_s: float, env: dict[str, str] | None = None) -> BenchRun:
        """Run `vllm bench serve ARGV` in the worker. Raises BenchError on a crash, timeout or error."""
        self.start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"argv": argv, "env": env or {}}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self.close()
            raise BenchError(f"benchmark worker died before the request: {exc} (log: {self.log_path})") from None
        reply = self._read_reply(timeout_s, "running the benchmark")
        if not reply.get("ok"):
            raise BenchError(f"vllm bench serve failed: {reply.get('error')} (log: {self.log_path})")
        return BenchRun(reply["result"], float(reply.get("elapsed_s", 0.0)))

    def _read_reply(self, timeout_s: float, doing: str) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.close()  # a worker stuck in a benchmark is not reused
                    raise BenchError(f"timed out after {timeout_s:.0f}s {doing} (log: {self.log_path})")
                if sel.select(timeout=min(left, 1.0)):
                    line = self.proc.stdout.readline()
                    if not line:
                        code = self.proc.wait(timeout=10)
                        self.proc = None
                        raise BenchError(
                            f"benchmark worker exited with code {code} while {doing} (log: {self.log_path}); "
                            "it restarts on the next item"
                        )
                    try:
                        reply = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(reply, dict):
                        return reply

    def close(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        self.ready = False

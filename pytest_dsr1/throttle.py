"""A real fault injector: a CPU quota on the vLLM servers a pytest session starts, by stopping their process
groups (SIGSTOP) for a share of every short period and resuming them (SIGCONT).

This is what a cgroup CPU quota of (1 - level) does: the server gets (1 - level) of the wall time, so its
throughput drops by about `level`. The benchmark client is not throttled. Used by the measurement scripts
(scripts/detection_power.py, scripts/ab_power.py), never by the plugin itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Final

from pytest_dsr1.server import PIDFILE_SUFFIX, group_alive

PERIOD_S: Final = 0.01  # the duty cycle's period: the servers are stopped for `level` of every 10 ms


class Throttle:
    """SIGSTOP/SIGCONT duty cycle on every server process group that a pytest session starts: a CPU quota.

    The groups are found through the suite's pidfiles in the session's run directory; throttling starts once the
    server answers /health (start-up is not throttled) and ends when the group is gone. A context manager: the
    throttling thread runs inside the `with` block (not at all at level 0), and every group it stopped is
    resumed when it ends."""

    def __init__(self, run_root: Path, level: float, only: str = "*") -> None:
        if not 0 <= level < 1:
            raise ValueError(f"throttle level {level!r}: the share of time stopped must be in [0, 1)")
        self.run_root, self.level = run_root, level
        self.only = only  # a glob on the pidfile's name: which servers to throttle (A/B: only B's, "*-B*")
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.stopped_s = self.running_s = 0.0

    def __enter__(self) -> Throttle:
        if self.level > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()

    def _ready_group(self, seen: set[int]) -> int | None:
        for pidfile in self.run_root.glob(f"*/{self.only}{PIDFILE_SUFFIX}"):
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(pidfile.read_text())
                pgid = int(info["pgid"])
                if pgid in seen or not group_alive(pgid):
                    continue
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"http://127.0.0.1:{info['port']}/health", timeout=1) as r,
                ):
                    if r.status == 200:
                        return pgid
        return None

    def _loop(self) -> None:
        _raise_priority()
        seen: set[int] = set()
        while not self.done.is_set():
            pgid = self._ready_group(seen)
            if pgid is None:
                time.sleep(0.5)
                continue
            seen.add(pgid)
            try:
                self._throttle(pgid)
            except ProcessLookupError:
                continue  # the suite stopped this server; look for the next config's
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGCONT)

    def _throttle(self, pgid: int) -> None:
        # On a loaded 2-core machine this thread wakes late; timing each phase and sizing the next stop from
        # the totals keeps the stopped share at `level` however late it wakes (a fixed 4/6 ms cycle measured
        # only 8% stopped at a nominal 40%).
        ratio = self.level / (1 - self.level)
        while not self.done.is_set():
            stop_for = max(0.0, ratio * self.running_s - self.stopped_s)
            t0 = time.monotonic()
            os.killpg(pgid, signal.SIGSTOP)
            time.sleep(stop_for)
            os.killpg(pgid, signal.SIGCONT)
            t1 = time.monotonic()
            time.sleep(PERIOD_S * (1 - self.level))
            t2 = time.monotonic()
            self.stopped_s += t1 - t0
            self.running_s += t2 - t1

    @property
    def applied(self) -> float:
        """The share of wall time the servers were actually stopped while throttled."""
        total = self.stopped_s + self.running_s
        return self.stopped_s / total if total else 0.0


def _raise_priority() -> None:
    """Real-time priority for the calling thread where allowed (root), else the highest nice: the throttling
    thread must wake on time on a loaded machine. It sleeps almost always, so it takes no CPU from the server."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(10))
    except (PermissionError, OSError):
        with contextlib.suppress(PermissionError, OSError):
            os.setpriority(os.PRIO_PROCESS, tid, -20)

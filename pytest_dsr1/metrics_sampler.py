"""Scrapes a live server around one measured run: /metrics before and after, gauges and the device during.

The sampler never fails a measurement: a scrape that fails is kept as the run's `error`, and the run goes on.
On GPUs the device side comes from NVML (nvidia-ml-py, `import pynvml`), where it is installed; on every host
the server's process group's CPU time comes from psutil.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import statistics
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import requests

from pytest_dsr1 import server_metrics

SAMPLE_HZ = 4.0  # gauges and the device, during the run
SCRAPE_TIMEOUT_S = 5.0


def group_cpu_s(pgid: int) -> float | None:
    """User + system CPU seconds of every live process in the process group (the server's API server, engine
    core and workers). Processes that exit during a run take their time with them: the difference of two calls is
    a lower bound then."""
    total, found = 0.0, False
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if os.getpgid(proc.pid) != pgid:
                continue
            t = proc.cpu_times()
            total += t.user + t.system
            found = True
    return total if found else None


def _load_pynvml() -> Any:
    """nvidia-ml-py's `pynvml`; else the copy vLLM ships (vllm/third_party/pynvml.py), loaded from its file so
    that the vllm package is not imported into pytest's process."""
    try:
        import pynvml

        return pynvml
    except ImportError:
        spec = importlib.util.find_spec("vllm")  # finds the package without importing it
        origin = Path(spec.origin).parent / "third_party" / "pynvml.py" if spec and spec.origin else None
        if origin is None or not origin.is_file():
            raise
        vendored = importlib.util.spec_from_file_location("_dsr1_vllm_pynvml", origin)
        assert vendored is not None and vendored.loader is not None
        module = importlib.util.module_from_spec(vendored)
        vendored.loader.exec_module(module)
        return module


class _Nvml:
    """GPU utilization, memory, SM clock and power of the given GPUs; absent when NVML is not available."""

    def __init__(self, indices: list[int] | None) -> None:
        self.handles: list[Any] = []
        self.error: str | None = None
        try:
            pynvml = _load_pynvml()
            pynvml.nvmlInit()
            self.nvml = pynvml
            count = pynvml.nvmlDeviceGetCount()
            wanted = indices if indices is not None else list(range(count))
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in wanted if i < count]
        except Exception as exc:  # NVML is optional: no GPU, no driver, or nvidia-ml-py not installed
            self.error = f"NVML not available: {exc}"

    def sample(self) -> dict[str, float] | None:
        if not self.handles:
            return None
        n = self.nvml
        util = [n.nvmlDeviceGetUtilizationRates(h).gpu for h in self.handles]
        mem = [n.nvmlDeviceGetMemoryInfo(h).used / 2**20 for h in self.handles]
        clock = [n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM) for h in self.handles]
        power = [n.nvmlDeviceGetPowerUsage(h) / 1000.0 for h in self.handles]
        k = len(self.handles)
        return {"util": sum(util) / k, "memory": max(mem), "clock": sum(clock) / k, "power": sum(power) / k}


class ServerMetricsSampler:
    """`with ServerMetricsSampler(url, pgid) as s: run()`; then `s.result` is the run's `server_metrics`."""

    def __init__(
        self,
        base_url: str,
        pgid: int | None,
        gpus: list[int] | None = None,
        hz: float = SAMPLE_HZ,
        before: server_metrics.Snapshot | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/metrics"
        self.pgid = pgid
        self.gpus = gpus  # None: every GPU NVML sees; [] on the CPU
        self.period = 1.0 / hz
        self.gauges = server_metrics.GaugeTrack()
        self.device: dict[str, list[float]] = {"util": [], "memory": [], "clock": [], "power": []}
        self.errors: list[str] = []
        self.result: dict[str, Any] | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="dsr1-server-metrics", daemon=True)
        self._session = requests.Session()
        self._session.trust_env = False  # a local server: no proxy from the environment, no netrc
        # The previous run's `after`, when nothing reached the server since: its counters have not moved, and one
        # scrape of a busy server is saved per run.
        self._before: server_metrics.Snapshot | None = before
        self.after: server_metrics.Snapshot | None = None
        self.cost_s = 0.0  # time the run waited for the sampler (before and after it): harness overhead
        self._cpu_before: float | None = None
        self._nvml: _Nvml | None = None

    def _scrape(
        self, only: tuple[str, ...] | None = None, session: requests.Session | None = None
    ) -> server_metrics.Snapshot | None:
        try:
            r = (session or self._session).get(self.url, timeout=SCRAPE_TIMEOUT_S)
            r.raise_for_status()
            return server_metrics.parse(r.text, only)
        except (requests.RequestException, ValueError) as exc:
            if len(self.errors) < 3:
                self.errors.append(f"{self.url}: {exc}")
            return None

    def __enter__(self) -> ServerMetricsSampler:
        t0 = time.monotonic()
        if self.gpus != []:
            self._nvml = _Nvml(self.gpus)
        if self._before is None:
            self._before = self._scrape()
        self._cpu_before = group_cpu_s(self.pgid) if self.pgid else None
        self._thread.start()
        self.cost_s += time.monotonic() - t0
        return self

    def _loop(self) -> None:
        # Its own session: the run's end does not wait for a gauge scrape in flight (a scrape of a server whose
        # threads spin on every core can take a second); a sample that comes back after the end is dropped.
        session = requests.Session()
        session.trust_env = False
        try:
            while not self._done.wait(self.period):
                snap = self._scrape(server_metrics.GAUGES, session)
                with self._lock:
                    if self._closed:
                        break
                    if snap is not None:
                        self.gauges.add(snap.gauges)
                    self._sample_device()
        finally:
            session.close()

    def _sample_device(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                sample = self._nvml.sample()
                if sample:
                    for k, v in sample.items():
                        self.device[k].append(v)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        t0 = time.monotonic()
        self._done.set()
        with self._lock:  # the gauges are final from here on; the thread ends on its own
            self._closed = True
            self._sample_device()  # a run shorter than the period gets one sample, at its end (NVML averages back)
        after = self.after = self._scrape()
        cpu_after = group_cpu_s(self.pgid) if self.pgid else None
        device: dict[str, Any] = {}
        if self._cpu_before is not None and cpu_after is not None:
            device["server_cpu_s"] = max(0.0, cpu_after - self._cpu_before)
        if self.device["util"]:
            device.update(
                gpu_util_mean_pct=statistics.fmean(self.device["util"]),
                gpu_sm_clock_mean_mhz=statistics.fmean(self.device["clock"]),
                gpu_power_mean_w=statistics.fmean(self.device["power"]),
                gpu_memory_used_max_mib=max(self.device["memory"]),
                gpu_samples=len(self.device["util"]),
            )
        elif self._nvml is not None and self._nvml.error:
            device["gpu_error"] = self._nvml.error
        if self._before is None or after is None:
            self.errors.append("no /metrics snapshot before or after the run: its counters are not kept")
        self.result = server_metrics.run_metrics(
            self._before, after, self.gauges, device, "; ".join(self.errors) or None
        )
        self._session.close()
        self.cost_s += time.monotonic() - t0

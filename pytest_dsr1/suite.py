"""The suite as a pytest plugin: the object that holds a run's matrix, options, runner and log, and the hooks that
need them (collection, sharding, reports, xdist). `start_suite` registers it only in a run that asks for the suite
or collects a serving test (as pytest-xdist registers its DSession), so a project that selects no serving item
reads no matrix file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Generator
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from pytest_dsr1 import report
from pytest_dsr1.ab import run as ab_run
from pytest_dsr1.ab.data import AbRun
from pytest_dsr1.ab.judge import ab_config_verdicts
from pytest_dsr1.ab.spec import AbSpec, ab_spec
from pytest_dsr1.baseline import BaselineError, BaselineStore
from pytest_dsr1.budget import Ledger
from pytest_dsr1.check import config_verdicts
from pytest_dsr1.hardware import probe_interpreter, skip_reason, vllm_version
from pytest_dsr1.logprob_reference import load as load_references
from pytest_dsr1.logprob_reference import reference_path
from pytest_dsr1.matrix import (
    Matrix,
    MatrixError,
    ServerConfig,
    Workload,
    apply_settings,
    item_key,
    load_matrix,
    matrix_layers,
    packaged_matrix_dir,
)
from pytest_dsr1.merge import absorb_worker, worker_payload
from pytest_dsr1.options import Options, selection_problem
from pytest_dsr1.progress import RunProgress, planned_items
from pytest_dsr1.pytest_options import suite_requested, under_xdist, xdist_problem
from pytest_dsr1.run_log import RunLog, git_commit, run_metadata
from pytest_dsr1.runner import Runner, run_dir_name
from pytest_dsr1.shard import Plan as ShardPlan
from pytest_dsr1.shard import plan as shard_plan
from pytest_dsr1.shard import plan_json as shard_json
from pytest_dsr1.shard import recorded_run_s, startup_s
from pytest_dsr1.start_checks import host_line, path_problem, strict_problem

SUITE_KEY = pytest.StashKey["Suite"]()
OPTIONS_KEY = pytest.StashKey[Options]()


PARAMS_KEY = pytest.StashKey[tuple[ServerConfig, Workload]]()
CHECK_KEY = pytest.StashKey[ServerConfig]()  # a config's correctness item (test_correctness)


def config_of(item: pytest.Item) -> ServerConfig | None:
    """The server config of a serving or correctness item; None for any other test."""
    params = item.stash.get(PARAMS_KEY, None)
    return params[0] if params else item.stash.get(CHECK_KEY, None)


WORKER_OUTPUT_KEY = "dsr1"  # an xdist worker's record, in its workeroutput, for the controller


def progress_key(item: pytest.Item) -> str:
    """An item's name in the progress lines: its item key (cpu-tiny-tp1[balanced-bs16]), or the correctness item's."""
    params = item.stash.get(PARAMS_KEY, None)
    if params is not None:
        return item_key(params[0].id, params[1].id)
    return item.name


def _terminal_writer(config: pytest.Config) -> Callable[[str], None]:
    def write_line(line: str) -> None:
        # Looked up at each call: the terminal reporter registers after pytest_configure.
        tr = config.pluginmanager.get_plugin("terminalreporter")
        capman = config.pluginmanager.get_plugin("capturemanager")
        if tr is None or config.option.verbose < 0:  # -q: quiet
            return
        if capman is None:
            tr.write_line(line)
            return
        with capman.global_and_fixture_disabled():
            tr.ensure_newline()
            tr.write_line(line)

    return write_line


class Suite:
    """The run's hooks, registered as the plugin `dsr1-suite` once the matrix is loaded."""

    def __init__(
        self,
        config: pytest.Config,
        matrix: Matrix,
        options: Options,
        matrix_error: str | None,
        ab: AbSpec | None = None,
        interpreters: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.interpreters = interpreters or {}  # --dsr1-python, B's python: what each is, checked at start
        self.ab = ab  # --dsr1-ab: what B changes; None: compare against baselines
        self.matrix = matrix
        self.options = options
        self.matrix_error = matrix_error  # a broken matrix nobody asked for: an error only if its items are collected
        self.matrix_needed = False
        secrets = (options.api_key,) if options.api_key else ()
        # No git here: every pytest start in a project with the plugin would pay for it; the commit is looked
        # up once the suite's items are collected.
        metadata = run_metadata([str(a) for a in config.invocation_params.args], None, vllm_version(), "", secrets)
        self.run_log = RunLog(matrix, options.run_dir / run_dir_name(), metadata)
        if not options.record:  # a record run judges nothing, so it has nothing to measure more for
            self.run_log.spending = Ledger(options.budget)
        self.runner = Runner(matrix, options, self.run_log, _terminal_writer(config))
        self.runner.share_gpus = hasattr(config, "workerinput")  # an xdist worker: GPUs go in disjoint slices
        self.store = BaselineStore(
            options.baselines, options.local_baselines, options.keep_sessions, options.fresh_history
        )
        self.previous_sigterm: Any = None
        self.ab_workloads: dict[str, list[Workload]] = {}  # A/B: config id -> the workloads its selected items run
        self.ab_outputs: set[str] = set()  # A/B: the configs whose correctness item is selected
        self.shard_plan: ShardPlan | None = None  # --dsr1-shard: the split of the whole selection
        # pytest -n: this process hands out items and merges the workers' records; it starts no server.
        self.xdist_controller = not hasattr(config, "workerinput") and under_xdist(config)

    def ab_run(self) -> AbRun:
        """The A/B part of the run's record, made at the first A/B start."""
        assert self.ab is not None
        if self.run_log.ab is None:
            a_label, b_label = ab_run.labels(self.runner, self.ab)
            self.run_log.ab = AbRun(a_label, b_label, self.options.ab_rounds, self.ab)
        return self.run_log.ab

    def make_ab_starts(self, config: ServerConfig) -> None:
        """Every A/B start of `config`, once per config even if pytest sets its server fixture up again (items
        reordered by another plugin)."""
        assert self.ab is not None
        ab = self.ab_run()
        if not ab.starts_of(config.id):
            workloads = self.ab_workloads.get(config.id, [])
            outputs = config.model.logprobs if config.id in self.ab_outputs else None
            ab_run.run_starts(
                self.runner, config, workloads, self.ab, self.options.ab_rounds, into=ab.starts, outputs=outputs
            )

    def selected_configs(self) -> list[ServerConfig]:
        return [c for c in self.matrix.configs if self.options.model in (None, c.model.name)]

    # ------------------------------------------------------------ collection

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        if not (config.option.verbose > 0 or suite_requested(config)):
            return []
        lines = [f"dsr1: matrix {', '.join(self.matrix.files)}"]
        host = host_line(self.options)
        if host:
            lines.append(host)
        lines += [f"dsr1: {flag} {what}" for flag, what in self.interpreters.items()]
        if self.matrix.ignored:
            lines.append(
                "dsr1: not matrix files (no models/hardware/workloads/configs section), ignored: "
                + ", ".join(self.matrix.ignored)
            )
        return lines

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "dsr1_server" not in metafunc.fixturenames:
            return
        if self.matrix_error is not None:
            self.matrix_needed = True  # a usage error once collection is done (exit 4)
            return
        configs = self.selected_configs()
        # One indirect, session-scoped call: pytest then groups items by server and keeps one alive.
        metafunc.parametrize(
            "dsr1_server",
            [pytest.param(c, id=c.id, marks=[getattr(pytest.mark, m) for m in c.markers]) for c in configs],
            indirect=True,
            scope="session",
        )
        if "dsr1_workload" in metafunc.fixturenames:
            # The parameter is (workload name, batch size): ids read like the recipe (prompt_heavy-bs16) on
            # every hardware, and the lengths come from the item's config (the CPU scales them down).
            keys = dict.fromkeys((w.name, w.batch_size) for c in configs for w in self.matrix.workloads_for(c))
            metafunc.parametrize(
                "dsr1_workload",
                [pytest.param(k, id=f"{k[0]}-bs{k[1]}", marks=[getattr(pytest.mark, k[0])]) for k in keys],
                indirect=True,  # its own call, function scope: the grouping by server is untouched
            )

    def _resolve(self, item: pytest.Item) -> tuple[ServerConfig, Workload] | bool | None:
        """(config, workload) of a serving item; None for an item that is not one; False for a config x
        workload pair that the matrix does not define (the workload parameter is the union over hardware)."""
        callspec = getattr(item, "callspec", None)
        if callspec is None or "dsr1_server" not in callspec.params or "dsr1_workload" not in callspec.params:
            return None
        config: ServerConfig = callspec.params["dsr1_server"]
        for w in self.matrix.workloads_for(config):
            if (w.name, w.batch_size) == callspec.params["dsr1_workload"]:
                return config, w
        return False

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """Resolve each serving item's config and workload once (item.stash), drop pairs the matrix does not
        define, and skip items whose hardware is absent. Items are removed, never reordered, so pytest's grouping
        by server survives."""
        if self.matrix_needed:
            raise pytest.UsageError(f"pytest-dsr1: {self.matrix_error}")
        keep, drop = [], []
        accuracy = self.options.accuracy
        target = self.options.target_config if self.options.target else None
        for item in items:
            params = self._resolve(item)
            if params is False:
                drop.append(item)
                continue
            if isinstance(params, tuple):
                item.stash[PARAMS_KEY] = params
                if accuracy == "only":  # --dsr1-accuracy only: the correctness items alone
                    drop.append(item)
                    continue
            elif params is None and "dsr1_correctness" in getattr(item, "fixturenames", ()):
                callspec = getattr(item, "callspec", None)
                if callspec is not None and "dsr1_server" in callspec.params:
                    item.stash[CHECK_KEY] = callspec.params["dsr1_server"]
                    if accuracy == "off":
                        drop.append(item)
                        continue
            owner = config_of(item)
            if target is not None and owner is not None and owner.id != target:
                drop.append(item)  # --dsr1-target: the target's config alone runs
                continue
            keep.append(item)
        if drop:
            items[:] = keep
            config.hook.pytest_deselected(items=drop)
        if self.options.dry_run:
            return
        reasons: dict[str, str | None] = {}
        for item in items:
            cfg = config_of(item)
            if cfg is None or cfg.id == target:  # a target's hardware is where it runs, not here
                continue
            if cfg.id not in reasons:
                reasons[cfg.id] = skip_reason(cfg, self.runner.host)
            reason = reasons[cfg.id]
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))

    @pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")
    def pytest_collection_modifyitems_shard(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """--dsr1-shard K/N: keep this shard's configs, whole. After -k/-m (trylast), so that every shard process
        plans the same selection. Items that are not serving items run in shard 1 only."""
        if self.options.shard is None:
            return
        index, count = self.options.shard
        split = self._plan(items, count)
        mine = set(split.configs_of(index))
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            owner = config_of(item)
            ours = owner.id in mine if owner else index == 1
            (keep if ours else drop).append(item)
        items[:] = keep
        if drop:
            config.hook.pytest_deselected(items=drop)
        self.shard_plan = split
        self.run_log.shard = shard_json(split, index)

    def _plan(self, items: list[pytest.Item], count: int) -> ShardPlan:
        """The selection's expected time per item and config, placed on `count` shards."""
        configs: dict[str, ServerConfig] = {}
        planned: dict[str, list[tuple[str, Workload, float | None]]] = {}
        for item in items:
            params = item.stash.get(PARAMS_KEY, None)
            if params is not None:
                cfg, wl = params
                configs[cfg.id] = cfg
                planned.setdefault(cfg.id, []).append((item_key(cfg.id, wl.id), wl, self._recorded_run_s(cfg, wl)))
            checked = item.stash.get(CHECK_KEY, None)
            if checked is not None:  # a config whose correctness item alone is selected still needs its server start
                configs.setdefault(checked.id, checked)
                planned.setdefault(checked.id, [])
        return shard_plan(configs, planned, count)

    def _progress(self, items: list[pytest.Item]) -> RunProgress:
        """The run's items in order, with their planned seconds, for the progress lines. Items skipped at collection
        (hardware this machine lacks, a config the matrix skips) are not counted: they run nothing."""
        items = [item for item in items if item.get_closest_marker("skip") is None]
        plan = self._plan(items, 1)
        owned = [(item, cfg) for item in items if (cfg := config_of(item))]  # the suite's items and their configs
        order = [(progress_key(item), cfg.id) for item, cfg in owned]
        run_s = {cost.item_id: cost.seconds for costs in plan.items.values() for cost in costs}
        startup = {cfg.id: 0.0 if self.runner.is_target(cfg) else startup_s(cfg) for _, cfg in owned}
        starts = 4 * self.options.ab_rounds if self.ab is not None else 1
        return RunProgress(planned_items(order, run_s, startup, starts))

    def _recorded_run_s(self, config: ServerConfig, workload: Workload) -> float | None:
        """Seconds per measured run of the item, from its committed baseline (none: modelled)."""
        try:
            entries = self.store.file(config.hardware.name, config.model.name).entries
        except BaselineError:
            return None  # reported as a usage error once collection is done
        entry = entries.get(item_key(config.id, workload.id))
        if entry is None:
            return None
        return recorded_run_s(str(entry.extra.get("bench_command", "")), entry.metrics.get("output_throughput", []))

    def pytest_report_collectionfinish(self, config: pytest.Config, items: list[pytest.Item]) -> list[str]:
        if self.shard_plan is None or self.options.shard is None:
            return []
        return [f"dsr1: {self.shard_plan.describe(self.options.shard[0])}"]

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Every baseline file the selected items will read is read now: a broken one is a usage error before the
        first server starts (and in --collect-only and the dry run), not a failure after each item's benchmark."""
        pairs = {(p[0].hardware.name, p[0].model.name) for i in session.items if (p := i.stash.get(PARAMS_KEY, None))}
        for item in session.items:  # after -k/-m and every other deselection: what each server start runs in A/B
            params = item.stash.get(PARAMS_KEY, None)
            if params:
                self.ab_workloads.setdefault(params[0].id, []).append(params[1])
            elif CHECK_KEY in item.stash:
                self.ab_outputs.add(item.stash[CHECK_KEY].id)
        if pairs:
            # The commit that runs, before a record writes the tracked baselines (which would make it '+dirty');
            # not at start-up, where every pytest run of a project with the plugin would pay for it.
            commit = git_commit(Path(session.config.rootpath))
            self.run_log.metadata = replace(self.run_log.metadata, git_commit=commit)
        for hw, model in sorted(pairs if self.ab is None else ()):  # an A/B run reads no baseline
            try:
                self.store.file(hw, model)
            except BaselineError as exc:
                raise pytest.UsageError(f"pytest-dsr1: {exc}") from None
        checked = {(c.hardware.name, c.model.name) for i in session.items if (c := i.stash.get(CHECK_KEY, None))}
        for hw, model in sorted(checked if self.ab is None else ()):  # the logprob references, likewise
            try:
                load_references(reference_path(self.options.baselines, hw, model), hw, model)
            except BaselineError as exc:
                raise pytest.UsageError(f"pytest-dsr1: {exc}") from None
        if self.options.strict and not self.options.dry_run:
            self._strict_start(session)
        if not self.options.dry_run:
            self.runner.progress = self._progress(session.items)

    def _strict_start(self, session: pytest.Session) -> None:
        """--dsr1-strict: a night that cannot run what it selected stops in its first seconds, naming what it found."""
        target = self.options.target_config if self.options.target else None
        selected = [cfg for item in session.items if (cfg := config_of(item)) and cfg.id != target]
        problem = strict_problem(selected, self.runner.host)
        if problem:
            pytest.exit(problem, 1)

    # ------------------------------------------------------------ running

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        cfg = config_of(item)
        if cfg:
            self.runner.current_config = cfg.id
            progress = self.runner.progress
            line = progress.item_line(progress_key(item)) if progress is not None else None
            if line:
                self.runner.write_line(line)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        rep = yield
        params = item.stash.get(PARAMS_KEY, None)
        if params and (call.when == "call" or rep.outcome != "passed"):
            # The item's outcome as pytest reports it (a skip or error at set-up too): a merge of shards checks it.
            self.run_log.outcomes[item_key(params[0].id, params[1].id)] = rep.outcome
        check = item.stash.get(CHECK_KEY, None)
        verdict = self.run_log.correctness.get(check.id) if check is not None and call.when == "call" else None
        if verdict is not None:  # JUnit: the config's correctness, as its item's properties
            item.user_properties.append(("dsr1_correctness", verdict.outcome))
            item.user_properties.append(("dsr1_correctness_summary", verdict.summary))
            if verdict.comparison is not None:
                item.user_properties.append(("dsr1_logprob_max_drift", f"{verdict.comparison.max_drift:.6f}"))
            if verdict.gsm8k is not None:
                item.user_properties.append(("dsr1_gsm8k_score", f"{verdict.gsm8k.score:.4f}"))
        owner = config_of(item)
        if owner:
            stats = self.run_log.stats.get(owner.id)
            if stats is not None and stats.overrides and call.when == "call":  # next to the item's verdict
                rep.sections.append(("dsr1: the server overrode its configuration", "\n".join(stats.overrides)))
            if stats is not None:
                stats.wall_s += call.duration
                stats.items += call.when == "call"
        if params:
            result = self.run_log.results.get(item_key(params[0].id, params[1].id))
            if result is not None and call.when == "call":
                result.wall_s = call.duration
                item.user_properties.extend(report.junit_properties(result))
        return rep

    def install_sigterm_handler(self) -> None:
        """SIGTERM (a CI job cancelled) unwinds like Ctrl-C, so fixtures stop the servers: no orphans. Only where
        servers run, and put back at the end (pytest-timeout's way), so a project that does not use the suite
        keeps its own handler."""

        def handler(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        if self.previous_sigterm is not None:
            return
        try:
            current = signal.getsignal(signal.SIGTERM)
            if current in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, handler)
                self.previous_sigterm = signal.SIG_DFL
        except ValueError:  # not the main thread
            pass

    # ------------------------------------------------------------ reporting

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """The config-level verdicts, once every item ran: a config whose items all moved the wrong way together
        fails the run (exit code 1) even where no single item crossed its own band."""
        if not self.xdist_controller:  # under xdist each worker judged its own (whole) configs
            options = self.options
            self.run_log.config_verdicts = config_verdicts(
                self.run_log, self.matrix, options.tolerances, options.ceilings
            )
        strict = self.options.inconclusive == "fail"  # a config too noisy to judge fails the run, as its items do
        failed = any(v.failed or (strict and v.too_noisy) for v in self.run_log.config_verdicts)
        if self.run_log.ab is not None:
            ab = self.run_log.ab
            ab.config_verdicts = ab_config_verdicts(ab, self.matrix, self.options.tolerances, self.options.alpha)
            failed = failed or any(v.failed for v in ab.config_verdicts)
        if failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: its record goes to the controller (pytest-cov's way)
            self._describe_host()
            workeroutput[WORKER_OUTPUT_KEY] = json.dumps(worker_payload(self.run_log), default=str)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """pytest -n: whole configs per worker, so each config's server starts once (xdist_scheduling.py)."""
        from pytest_dsr1.xdist_scheduling import ConfigScheduling

        return ConfigScheduling(config, log, [c.id for c in self.matrix.configs])

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """The controller of pytest -n: a worker finished; add its record to the run's."""
        payload = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
        if payload:
            absorb_worker(self.run_log, json.loads(payload), str(getattr(node, "gateway", node).id))

    def _describe_host(self) -> None:
        if self.run_log.configs_run:  # the hardware was detected for this run: say what it was
            host = self.runner.host
            described = f"{host.cpu_model} ({host.cpu_count} cores), {host.describe_gpus()}"
            self.run_log.metadata = replace(self.run_log.metadata, host=described)

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        self._describe_host()
        report.terminal_summary(self.run_log, terminalreporter)
        if self.options.report is not None:
            path = report.write_reports(self.run_log, self.options.report)
            terminalreporter.write_line(f"dsr1: reports written to {path}")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.runner.close()
        if self.previous_sigterm is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self.previous_sigterm)
            self.previous_sigterm = None


def start_suite(config: pytest.Config, requested: bool) -> Suite:
    """Load the matrix layers, check the options against them and register the Suite (`requested`: the run asked
    for the suite, so a broken matrix is a usage error now; otherwise only once its items are collected)."""
    options = config.stash[OPTIONS_KEY]
    layers = matrix_layers(Path(config.rootpath), options.matrix)
    if options.matrix_alone and options.matrix is None:
        raise pytest.UsageError("--dsr1-matrix-alone runs the configs of --dsr1-matrix only: name the file with it")
    matrix_error = None
    interpreters: dict[str, str] = {}  # option -> "PATH: vLLM VERSION", for the header
    try:
        # Only files meant for pytest-dsr1 are read: a project's own test_matrix/ of other things is left alone.
        matrix = load_matrix(*layers, alone=options.matrix_alone)
    except MatrixError as exc:
        if requested:
            raise pytest.UsageError(f"pytest-dsr1: {exc}") from None
        # Not asked for: a project's YAML that merely looks like a matrix must not stop its own tests.
        matrix = load_matrix(*layers[:1])
        matrix_error = str(exc)
    for hw in matrix.hardware.values():
        config.addinivalue_line("markers", f"{hw.name}: configs on {hw.name} hardware (pytest-dsr1)")
    for wl in matrix.workloads:
        config.addinivalue_line(
            "markers", f"{wl.name}: the {wl.name} workload, {wl.input_len}/{wl.output_len} tokens (pytest-dsr1)"
        )
    problem = selection_problem(options, matrix)
    if problem:
        raise pytest.UsageError(problem)
    try:
        spec = ab_spec(options.ab)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if spec is not None and options.record:
        raise pytest.UsageError(
            "--dsr1-ab compares B against A on this machine and writes no baseline: leave out --dsr1-record"
        )
    if options.settings:
        matrix = replace(matrix, configs=tuple(apply_settings(c, options.settings) for c in matrix.configs))
    if requested:
        problem = path_problem(options)
        if problem:
            raise pytest.UsageError(problem)
        for kind, value in options.ab:
            if kind == "model" and os.sep in value and not Path(value).is_dir():
                raise pytest.UsageError(
                    f"--dsr1-ab model={value}: no such checkpoint directory; give the path of a model directory "
                    "(config.json and weights) or a Hugging Face id"
                )
        for flag, python in options.interpreters():
            version, problem = probe_interpreter(python, flag)
            if problem:
                raise pytest.UsageError(problem)
            interpreters[flag] = f"{python}: vLLM {version}"
        if not hasattr(config, "workerinput") and under_xdist(config):
            problem = xdist_problem(str(getattr(config.option, "dist", "load")), spec)
            if problem:
                raise pytest.UsageError(problem)
        if config.args_source != pytest.Config.ArgsSource.ARGS:
            # `pytest -m h200 --dsr1-model fp8` with no path: the suite is what was asked for, wherever pytest
            # runs and whatever its testpaths say. Named paths are left as they are.
            # The folder, not the file: a module given as a path outside the rootdir gets an empty node id.
            config.args[:] = [str(packaged_matrix_dir())]
            config.args_source = pytest.Config.ArgsSource.ARGS
    suite = Suite(config, matrix, options, matrix_error, spec, interpreters)
    config.stash[SUITE_KEY] = suite
    config.pluginmanager.register(suite, "dsr1-suite")
    return suite

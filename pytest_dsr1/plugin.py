"""pytest hooks and fixtures of pytest-dsr1. The logic lives in the modules below; this file wires it in."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_dsr1 import report
from pytest_dsr1.baseline import BaselineError, not_comparable
from pytest_dsr1.compare import REGRESSED, STALE, compare, regressed
from pytest_dsr1.hardware import skip_reason
from pytest_dsr1.matrix import (
    Matrix,
    MatrixError,
    MatrixLayer,
    ServerConfig,
    Workload,
    apply_settings,
    load_matrix,
    packaged_matrix_dir,
)
from pytest_dsr1.metrics import KEY_METRICS, METRICS
from pytest_dsr1.options import Options, add_options, keep_rootdir, read_options, suite_requested
from pytest_dsr1.runner import Dsr1Session, ItemResult, Measurement, ServerHandle, item_key

SESSION_KEY = pytest.StashKey[Dsr1Session]()
MATRIX_ERROR_KEY = pytest.StashKey[str]()
MATRIX_NEEDED_KEY = pytest.StashKey[bool]()
FIXED_MARKERS = {
    "fp8": "FP8 precision",
    "fp4": "FP4 precision",
    "bf16": "BF16 precision",
    "tp": "tensor-parallel server configs",
    "dp": "data-parallel server configs",
    "ep": "expert-parallel server configs",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    keep_rootdir(early_config, args)


def matrix_layers(config: pytest.Config, options: Options) -> list[MatrixLayer]:
    """The shipped recipe matrix, then the rootdir's own test_matrix/ (if it holds matrix files), then
    --dsr1-matrix: later layers add configs and replace same-named ones."""
    shipped = packaged_matrix_dir()
    layers = [MatrixLayer(shipped)]
    local = Path(config.rootpath) / "test_matrix"
    if local.resolve() != shipped.resolve():
        layers.append(MatrixLayer(local, foreign_ok=True))
    if options.matrix is not None:
        layers.append(MatrixLayer(options.matrix))
    return layers


def _refuse_xdist(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) or getattr(config.option, "tx", None):
        raise pytest.UsageError(
            "pytest-dsr1: the serving suite does not run under pytest-xdist yet (-n/--dist): each worker would start its "
            "own vLLM server for the same configs on the same GPUs and write the same baseline files. Run it with -n 0 "
            "(or -p no:xdist where -n comes from addopts)."
        )


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in FIXED_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc} (pytest-dsr1)")
    options = read_options(config)
    layers = matrix_layers(config, options)
    requested = suite_requested(config) or _names_the_suite(config)
    try:
        # Only files meant for pytest-dsr1 are read: a project's own test_matrix/ of other things is left alone.
        matrix = load_matrix(*layers)
    except MatrixError as exc:
        if requested:
            raise pytest.UsageError(f"pytest-dsr1: {exc}") from None
        # Not asked for: a project's YAML that merely looks like a matrix must not stop its own tests.
        matrix = load_matrix(*layers[:1])
        config.stash[MATRIX_ERROR_KEY] = str(exc)
    for hw in matrix.hardware.values():
        config.addinivalue_line("markers", f"{hw.name}: configs on {hw.name} hardware (pytest-dsr1)")
    for wl in matrix.workloads:
        config.addinivalue_line(
            "markers", f"{wl.name}: the {wl.name} workload, {wl.input_len}/{wl.output_len} tokens (pytest-dsr1)"
        )
    if options.model is not None and options.model not in matrix.models:
        raise pytest.UsageError(
            f"--dsr1-model {options.model!r} is not in the matrix ({', '.join(matrix.files)}); choose one of: {', '.join(matrix.models)}"
        )
    config_ids = {c.id for c in matrix.configs}
    for target, key, _ in options.settings:
        if target is not None and target not in config_ids:
            raise pytest.UsageError(
                f"--dsr1-set {target}:{key}: no config {target!r} in the matrix; configs: {', '.join(sorted(config_ids))}"
            )
    if options.settings:
        from dataclasses import replace

        matrix = replace(matrix, configs=tuple(apply_settings(c, options.settings) for c in matrix.configs))
    if requested:
        _check_paths(options)
        if not hasattr(config, "workerinput"):
            _refuse_xdist(config)
        if config.args_source != pytest.Config.ArgsSource.ARGS:
            # `pytest -m h200 --dsr1-model fp8` with no path: the suite is what was asked for, wherever pytest
            # runs and whatever its testpaths say. Named paths are left as they are.
            # The folder, not the file: a module given as a path outside the rootdir gets an empty node id.
            config.args[:] = [str(packaged_matrix_dir())]
            config.args_source = pytest.Config.ArgsSource.ARGS

    def write_line(line: str) -> None:
        # Looked up at each call: the terminal reporter registers after this hook has run.
        tr = config.pluginmanager.get_plugin("terminalreporter")
        capman = config.pluginmanager.get_plugin("capturemanager")
        if tr is None or config.option.verbose <= 0:
            return
        if capman is not None:
            with capman.global_and_fixture_disabled():
                tr.ensure_newline()
                tr.write_line(line)
        else:
            tr.write_line(line)

    session = Dsr1Session(matrix, options, write_line)
    config.stash[SESSION_KEY] = session


def _check_paths(options: Options) -> None:
    """What can be checked before the first server starts: the interpreter exists, the report directory is
    writable. Found at the first server start or at the end of the run, they would cost the run."""
    if options.python is not None:
        found = shutil.which(options.python)
        if found is None:
            raise pytest.UsageError(
                f"--dsr1-python {options.python}: no such executable; point it at a Python that has vLLM "
                "(e.g. /path/to/venv/bin/python), or leave it out to use this one"
            )
    if options.report is not None:
        try:
            options.report.mkdir(parents=True, exist_ok=True)
            writable = os.access(options.report, os.W_OK | os.X_OK)
        except OSError as exc:
            raise pytest.UsageError(
                f"--dsr1-report {options.report}: cannot create it ({exc.strerror or exc}); "
                "point it at a writable directory"
            ) from None
        if not writable:
            raise pytest.UsageError(f"--dsr1-report {options.report}: not writable; point it at a writable directory")


def _names_the_suite(config: pytest.Config) -> bool:
    """`pytest test_matrix` in this repo, or a path into the installed suite: asks for the suite too. (A project's
    own test_matrix/ is not the suite: `pytest -n 4 test_matrix` there is none of this plugin's business.)"""
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return False
    shipped = packaged_matrix_dir().resolve()
    for arg in config.args:
        path = (Path(config.invocation_params.dir) / arg.split("::")[0]).resolve()
        if path == shipped or shipped in path.parents:
            return True
    return False


def _install_sigterm_handler() -> None:
    """SIGTERM (a CI job cancelled) unwinds like Ctrl-C, so fixtures stop the servers: no orphans."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass


def _session(config: pytest.Config) -> Dsr1Session:
    return config.stash[SESSION_KEY]


def pytest_report_header(config: pytest.Config) -> list[str]:
    if SESSION_KEY not in config.stash or not (config.option.verbose > 0 or suite_requested(config)):
        return []
    matrix = config.stash[SESSION_KEY].matrix
    lines = [f"dsr1: matrix {', '.join(matrix.files)}"]
    if matrix.ignored:
        lines.append(
            f"dsr1: not matrix files (no models/hardware/workloads/configs section), ignored: {', '.join(matrix.ignored)}"
        )
    return lines


def selected_configs(session: Dsr1Session) -> list[ServerConfig]:
    return [c for c in session.matrix.configs if session.options.model in (None, c.model.name)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "dsr1_server" not in metafunc.fixturenames:
        return
    if MATRIX_ERROR_KEY in metafunc.config.stash:
        metafunc.config.stash[MATRIX_NEEDED_KEY] = True  # a usage error once collection is done (exit 4)
        return
    session = _session(metafunc.config)
    configs = selected_configs(session)
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
        keys: dict[tuple[str, int], None] = {}
        for c in configs:
            for w in session.matrix.workloads_for(c):
                keys.setdefault((w.name, w.batch_size), None)
        metafunc.parametrize(
            "dsr1_workload",
            [pytest.param(k, id=f"{k[0]}-bs{k[1]}", marks=[getattr(pytest.mark, k[0])]) for k in keys],
            indirect=True,  # its own call, function scope: the grouping by server is untouched
        )


def _resolve(config: ServerConfig, key: tuple[str, int], matrix: Matrix) -> Workload | None:
    for w in matrix.workloads_for(config):
        if (w.name, w.batch_size) == key:
            return w
    return None


def _params(item: pytest.Item) -> tuple[ServerConfig, Workload] | None:
    """The item's server config and its workload; None for items that are not serving items or whose
    config does not run that workload."""
    callspec = getattr(item, "callspec", None)
    if callspec is None or "dsr1_server" not in callspec.params or "dsr1_workload" not in callspec.params:
        return None
    if SESSION_KEY not in item.config.stash:
        return None
    config = callspec.params["dsr1_server"]
    workload = _resolve(config, callspec.params["dsr1_workload"], item.config.stash[SESSION_KEY].matrix)
    return (config, workload) if workload is not None else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop config x workload pairs that the matrix does not define (the workload parameter is the union
    over hardware), and skip items whose hardware is absent. Items are removed, never reordered, so
    pytest's grouping by server survives."""
    if config.stash.get(MATRIX_NEEDED_KEY, False):
        raise pytest.UsageError(f"pytest-dsr1: {config.stash[MATRIX_ERROR_KEY]}")
    if SESSION_KEY not in config.stash:
        return
    session = config.stash[SESSION_KEY]
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        serving = callspec is not None and "dsr1_server" in callspec.params and "dsr1_workload" in callspec.params
        (drop if serving and _params(item) is None else keep).append(item)
    if drop:
        items[:] = keep
        config.hook.pytest_deselected(items=drop)
    if hasattr(config, "workerinput") and any(_params(item) for item in items):
        _refuse_xdist(config)  # a worker of `pytest -n N test_matrix`, with no --dsr1-* option to stop it earlier
    if session.options.dry_run:
        return
    reasons: dict[str, str | None] = {}
    for item in items:
        params = _params(item)
        if params is None:
            continue
        cfg = params[0]
        if cfg.id not in reasons:
            reasons[cfg.id] = skip_reason(cfg, session.host)
        if reasons[cfg.id]:
            item.add_marker(pytest.mark.skip(reason=reasons[cfg.id]))


def pytest_collection_finish(session: pytest.Session) -> None:
    if SESSION_KEY in session.config.stash:
        _check_baselines(session.config.stash[SESSION_KEY], session.items)


def _check_baselines(session: Dsr1Session, items: list[pytest.Item]) -> None:
    """Every baseline file the selected items will read is read now: a broken one is a usage error before the first
    server starts (and in --collect-only and the dry run), not a failure after each item's benchmark."""
    seen: set[tuple[str, str]] = set()
    for item in items:
        params = _params(item)
        if params is None or (params[0].hardware.name, params[0].model.name) in seen:
            continue
        seen.add((params[0].hardware.name, params[0].model.name))
        try:
            session.baseline_file(params[0])
        except BaselineError as exc:
            raise pytest.UsageError(f"pytest-dsr1: {exc}") from None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if SESSION_KEY in item.config.stash and (params := _params(item)):
        item.config.stash[SESSION_KEY].current_config = params[0].id


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[Any]:
    rep = yield
    if SESSION_KEY in item.config.stash and (params := _params(item)):
        session = item.config.stash[SESSION_KEY]
        stats = session.stats.get(params[0].id)
        if stats is not None:
            stats.wall_s += call.duration
            if call.when == "call":
                stats.items += 1
        key = item_key(params[0].id, params[1].id)
        result = session.results.get(key)
        if result is not None and call.when == "call":
            result.wall_s = call.duration
            for name, value in report.junit_properties(result):
                item.user_properties.append((name, value))
    return rep


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if SESSION_KEY not in config.stash:
        return
    session = config.stash[SESSION_KEY]
    report.terminal_summary(session, terminalreporter)
    if session.options.report is not None:
        path = report.write_reports(session, session.options.report)
        terminalreporter.write_line(f"dsr1: reports written to {path}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION_KEY in config.stash:
        config.stash[SESSION_KEY].close()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def dsr1_session(request: pytest.FixtureRequest) -> Dsr1Session:
    """The pytest-dsr1 session: matrix, options, servers, results."""
    return _session(request.config)


@pytest.fixture(scope="session")
def dsr1_server(request: pytest.FixtureRequest, dsr1_session: Dsr1Session) -> Iterator[ServerHandle | None]:
    """One real vLLM server for the parametrized config; at most one alive in the session.

    A server that fails to start is not an error here: the handle carries the log tail, and each item of
    that config fails with it, while the next config starts its own server.
    """
    config: ServerConfig = request.param
    if dsr1_session.options.dry_run:
        yield None
        return
    _install_sigterm_handler()  # only where servers run: a project that does not use the suite keeps its own
    handle = dsr1_session.start_server(config)
    yield handle
    dsr1_session.stop_server(handle)


@pytest.fixture
def dsr1_workload(request: pytest.FixtureRequest) -> Workload:
    """The workload (name, input/output length, batch size) of this item, as its config scales it."""
    params = _params(request.node)
    assert params is not None
    return params[1]


@pytest.fixture
def dsr1_benchmark(
    request: pytest.FixtureRequest, dsr1_session: Dsr1Session
) -> Callable[[ServerHandle | None, Workload], Measurement]:
    """Run vLLM's serving benchmark (`vllm bench serve`) for the item's workload: warm-up, then the repeats."""
    params = _params(request.node)

    def run(handle: ServerHandle | None, workload: Workload) -> Measurement:
        assert params is not None, "dsr1_benchmark needs the dsr1_server and dsr1_workload parameters"
        config = params[0]
        key = item_key(config.id, workload.id)
        if dsr1_session.options.dry_run:
            lines = dsr1_session.dry_run.setdefault(config.id, [])
            if not lines:
                cmd = dsr1_session.server_command_for(config)
                lines.append(
                    f"# {config.id}: {config.hardware.name}, {config.model.hf_id}, {config.gpus or 'no'} GPU(s)"
                )
                lines.append(cmd.shell_line())
            lines.append(
                f"  [{workload.id}] " + dsr1_session.bench_shell_line(dsr1_session.bench_command_for(config, workload))
            )
            pytest.skip("dry-run: not run")
        assert handle is not None

        def fail(msg: str) -> None:
            dsr1_session.results[key] = ItemResult(key, config.id, workload, "failed", msg)
            pytest.fail(msg, pytrace=False)

        bm = _pytest_benchmark(request)
        if bm is None:
            m = dsr1_session.measure(handle, workload, fail)
        else:
            # Each measured run goes through pytest-benchmark, so --benchmark-json/--benchmark-autosave and
            # `pytest-benchmark compare` carry this suite's runs; the serving metrics ride in extra_info.
            m = dsr1_session.measure(handle, workload, fail, runs=0)
            bm.group = config.id
            bm.pedantic(m.more, args=(1,), rounds=dsr1_session.repeat_for(config), iterations=1, warmup_rounds=0)
            bm.extra_info.update(
                {
                    "dsr1_item": key,
                    "bench_command": m.bench_command,
                    "server_command": m.server_command,
                    **{k: statistics.median(v) for k, v in m.samples.items()},
                }
            )
        request.node.user_properties.append(("dsr1_bench_command", m.bench_command))
        request.node.user_properties.append(("dsr1_server_command", m.server_command))
        return m

    return run


def _pytest_benchmark(request: pytest.FixtureRequest) -> Any:
    """pytest-benchmark's `benchmark` fixture when that plugin is installed and enabled, else None."""
    if not request.config.pluginmanager.has_plugin("benchmark"):
        return None
    bm = request.getfixturevalue("benchmark")
    return None if getattr(bm, "disabled", False) else bm


class BaselineCheck:
    def __init__(self, session: Dsr1Session, node: pytest.Item) -> None:
        self.session = session
        self.node = node

    def check(self, m: Measurement) -> list:
        """Record the measurement as the baseline (--dsr1-record), or compare it and fail on a regression."""
        session, opts = self.session, self.session.options
        result = ItemResult(m.key, m.config.id, m.workload, "passed", measurement=m)
        session.results[m.key] = result
        if opts.record:
            try:
                session.record(m)
            except BaselineError as exc:
                result.outcome, result.message = "failed", str(exc)
                pytest.fail(str(exc), pytrace=False)
            result.outcome = "recorded"
            return []
        try:
            baseline = session.baseline_file(m.config)
        except BaselineError as exc:
            result.outcome, result.message = "failed", str(exc)
            pytest.fail(f"{m.key}: {exc}", pytrace=False)
        entry = baseline.entries.get(m.key)
        source = baseline.path
        problem = not_comparable(entry, m.key, m.fingerprint, m.bench_command, baseline.path)
        if problem and opts.missing_baseline == "skip" and session.options.local_baselines is not None:
            # No committed baseline fits this machine: use (or start) this machine's own, so that a new machine
            # gets verdicts from its second run on. Nightly CI (--dsr1-missing-baseline=fail) never does this.
            try:
                local = session.local_baseline_file(m)
            except BaselineError as exc:
                result.outcome, result.message = "failed", str(exc)
                pytest.fail(f"{m.key}: {exc}", pytrace=False)
            local_entry = local.entries.get(m.key)
            if not_comparable(local_entry, m.key, m.fingerprint, m.bench_command, local.path) is None:
                entry, source = local_entry, local.path
                session.local_baseline_uses.setdefault(str(local.path), []).append((m.key, "compared"))
                result.message = f"compared with this machine's own baseline ({local.path}): {problem}"
                problem = None
            else:
                try:
                    session.record(m, local.path)
                    kept = (
                        f"This run is now this machine's own baseline ({local.path}); the next run compares against it"
                    )
                except BaselineError as exc:
                    kept = (
                        f"This machine's own baseline could not be kept ({exc}); point --dsr1-local-baselines at a "
                        "writable directory, or set it to off"
                    )
                msg = f"not compared: {problem}. {kept} (measured: {report.brief(m.samples)})"
                result.outcome, result.message = "skipped", msg
                pytest.skip(msg)
        if problem:
            # Under --dsr1-missing-baseline=fail, a baseline of other hardware is no baseline for this machine either:
            # a nightly must not stay green while comparing nothing.
            fails = opts.missing_baseline == "fail"
            msg = f"not compared: {problem} (measured: {report.brief(m.samples)})"
            result.outcome, result.message = ("failed" if fails else "skipped"), msg
            if fails:
                pytest.fail(msg, pytrace=False)
            pytest.skip(msg)
        assert entry is not None
        result.baseline_medians = {k: statistics.median(v) for k, v in entry.metrics.items() if v}
        tolerances = session.matrix.tolerances_for(m.config)
        tolerances.update({k: v for k, v in opts.tolerances.items() if k != "*"})
        if "*" in opts.tolerances:
            tolerances = {k: opts.tolerances["*"] for k in METRICS} | {
                k: v for k, v in opts.tolerances.items() if k != "*"
            }
        metrics = tuple(k for k in METRICS if k in tolerances) or KEY_METRICS
        verdicts, confirmations = self._confirmed(entry.metrics, m, tolerances, metrics)
        first_server: list | None = None
        if regressed(verdicts) and m.fresh is not None and session.can_restart(m.config):
            # Shared machines shift a whole server's speed between starts: a regression must hold on a
            # freshly started server too, and only the fresh server's samples decide.
            first_server = verdicts
            m = m.fresh()
            result.measurement = m
            verdicts, confirmations = self._confirmed(entry.metrics, m, tolerances, metrics)
        result.verdicts = verdicts
        note = ""
        if entry.fingerprint.get("vllm") != m.fingerprint.get("vllm"):
            versions = (entry.fingerprint.get("vllm"), m.fingerprint.get("vllm"))
            session.version_changes[versions] = session.version_changes.get(versions, 0) + 1
            note = f"\n(vLLM {versions[0]} in the baseline, {versions[1]} now)"
        for key in ("host_cpu", "driver", "cuda"):
            before, now = entry.fingerprint.get(key), m.fingerprint.get(key)
            if before and now and before != now:
                note += f"\n({key} differs: {before!r} in the baseline, {now!r} now)"
        if confirmations:
            note += f"\n(confirmation: {confirmations} extra run(s); every sample is shown)"
        if first_server is not None:
            held = "and it held there" if regressed(verdicts) else "and it did not hold there: not a regression"
            note += (
                "\n(it looked regressed on the config's first server, so it was measured again on a freshly started one, "
                f"{held}; the first server's verdicts:\n{report.verdict_table(first_server)})"
            )
        if regressed(verdicts):
            result.outcome = REGRESSED
            result.message = report.verdict_table(verdicts) + note
            pytest.fail(
                f"{m.key} regressed against {entry.provenance} baseline of {entry.date} ({source}):\n"
                f"{result.message}\nserver: {m.server_command}\nbenchmark: {m.bench_command}",
                pytrace=False,
            )
        if any(v.verdict == STALE for v in verdicts):
            result.message = "; ".join(f"{v.metric}: {v.reason}" for v in verdicts if v.verdict == STALE)
        elif first_server is not None:
            result.message = note.strip()
        return verdicts

    def _confirmed(
        self, baseline: dict[str, list[float]], m: Measurement, tolerances: dict, metrics: tuple[str, ...]
    ) -> tuple[list, int]:
        """The verdicts, after up to K extra runs on the same server while it looks regressed (--dsr1-confirm K)."""
        alpha = self.session.options.alpha
        verdicts = compare(baseline, m.samples, tolerances, metrics, alpha)
        confirmations = 0
        while regressed(verdicts) and confirmations < self.session.confirm_for(m.config) and m.more is not None:
            confirmations += 1
            m.more(1)
            verdicts = compare(baseline, m.samples, tolerances, metrics, alpha)
        return verdicts, confirmations


@pytest.fixture
def dsr1_baseline(request: pytest.FixtureRequest, dsr1_session: Dsr1Session) -> BaselineCheck:
    """Compare a measurement with the stored baseline (or record it with --dsr1-record)."""
    return BaselineCheck(dsr1_session, request.node)

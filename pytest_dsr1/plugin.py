"""pytest hooks and fixtures of pytest-dsr1: options, collection, fixtures, reporting. Nothing is decided here.

The modules below this one hold the logic and import no pytest: the matrix, the runner (processes), the
baseline check (which returns a Decision) and the reports. This file turns their results into pytest's terms:
parameters, markers, skips, failures and a terminal summary. As pytest-xdist does, the hooks that need the
suite live on an object registered as a plugin when pytest configures, so no hook asks whether it is active.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest

from pytest_dsr1 import dry_run
from pytest_dsr1.ab import run as ab_run
from pytest_dsr1.ab.check import AbCheck
from pytest_dsr1.check import BaselineCheck
from pytest_dsr1.correctness_check import CorrectnessCheck, judge_ab_outputs
from pytest_dsr1.errors import ItemFailed
from pytest_dsr1.logprob_reference import reference_path
from pytest_dsr1.matrix.model import ServerConfig, Workload
from pytest_dsr1.pytest_options import add_options, keep_rootdir, names_the_suite, read_options, suite_requested
from pytest_dsr1.run_log import Measurement
from pytest_dsr1.runner import Runner, ServerHandle
from pytest_dsr1.suite import CHECK_KEY, OPTIONS_KEY, PARAMS_KEY, SUITE_KEY, Suite, start_suite
from pytest_dsr1.verdict.item import Decision
from pytest_dsr1.verdict.outcomes import INCONCLUSIVE, SKIPPED

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


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in FIXED_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc} (pytest-dsr1)")
    config.stash[OPTIONS_KEY] = read_options(config)  # a bad value is a usage error in any run
    if suite_requested(config) or names_the_suite(config):
        start_suite(config, requested=True)
    elif config.option.markers:  # `pytest --markers` lists the matrix's hardware and workload markers too
        start_suite(config, requested=False)


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A serving test collected in a run that did not ask for the suite (`pytest test_matrix/` elsewhere, a
    project's own test using the fixtures): the suite starts now, as late as it can. A run that collects none
    reads no matrix file. (The Suite registered here misses this call, which pluggy had already planned.)"""
    if "dsr1_server" in metafunc.fixturenames and SUITE_KEY not in metafunc.config.stash:
        start_suite(metafunc.config, requested=False).pytest_generate_tests(metafunc)


def _enact(decision: Decision) -> None:
    """A Decision in pytest's terms: a failure or a skip (raised), or nothing for a pass or a record."""
    if decision.fails:
        pytest.fail(decision.message, pytrace=False)
    if decision.outcome in (SKIPPED, INCONCLUSIVE):
        pytest.skip(decision.message)


def _fail(exc: ItemFailed) -> NoReturn:
    pytest.fail(str(exc), pytrace=False)


# ---------------------------------------------------------------- fixtures


def _suite(request: pytest.FixtureRequest) -> Suite:
    suite = request.config.stash.get(SUITE_KEY, None)
    return suite if suite is not None else start_suite(request.config, requested=False)


@pytest.fixture(scope="session")
def dsr1_runner(request: pytest.FixtureRequest) -> Runner:
    """The pytest-dsr1 runner: matrix, options, servers, and the run's record (`.record`)."""
    return _suite(request).runner


@pytest.fixture(scope="session")
def dsr1_server(request: pytest.FixtureRequest) -> Iterator[ServerHandle | None]:
    """One real vLLM server for the parametrized config; at most one alive in the session.

    A server that fails to start is not an error here: the handle carries the log tail, and each item of
    that config fails with it, while the next config starts its own server.
    """
    suite = _suite(request)
    config: ServerConfig = request.param
    if suite.options.dry_run:
        yield None
        return
    suite.install_sigterm_handler()
    if suite.ab is not None:
        # A/B: every start of this config (ABBA, fresh servers) runs its selected items now; the items then judge.
        why_not = ab_run.nothing_to_compare(config, suite.ab)
        if why_not:
            pytest.skip(why_not)
        suite.make_ab_starts(config)
        yield None
        return
    handle = suite.runner.start_server(config)
    yield handle
    suite.runner.stop_server(handle)


@pytest.fixture
def dsr1_workload(request: pytest.FixtureRequest) -> Workload:
    """The workload (name, input/output length, batch size) of this item, as its config scales it."""
    workload: Workload = request.node.stash[PARAMS_KEY][1]
    return workload


@pytest.fixture
def dsr1_benchmark(request: pytest.FixtureRequest) -> Callable[[ServerHandle | None, Workload], Measurement]:
    """Run vLLM's serving benchmark (`vllm bench serve`) for the item's workload: warm-up, then the repeats."""
    suite = _suite(request)
    runner = suite.runner
    params = request.node.stash.get(PARAMS_KEY, None)

    def run(handle: ServerHandle | None, workload: Workload) -> Measurement:
        assert params is not None, "dsr1_benchmark needs the dsr1_server and dsr1_workload parameters"
        config = params[0]
        if suite.options.dry_run:
            dry_run.note_commands(runner, config, workload)
            pytest.skip("dry-run: not run")
        if suite.ab is not None:
            return ab_run.measurement(runner, suite.ab_run(), config, workload)
        assert handle is not None
        bm = _pytest_benchmark(request)
        try:
            if bm is None:
                m = runner.measure(handle, workload)
            else:
                # Each measured run goes through pytest-benchmark, so --benchmark-json/--benchmark-autosave and
                # `pytest-benchmark compare` carry this suite's runs; the serving metrics ride in extra_info. The
                # worker is started before the first round (measure with runs=0), outside pytest-benchmark's timing.
                m = runner.measure(handle, workload, runs=0)
                assert m.more is not None
                bm.group = config.id
                bm.pedantic(m.more, args=(1,), rounds=runner.repeat_for(config), iterations=1, warmup_rounds=0)
                if m.settle is not None:
                    m.settle()  # the last run's server metrics, outside pytest-benchmark's rounds
                bm.extra_info.update(
                    {
                        "dsr1_item": m.key,
                        "bench_command": m.bench_command,
                        "server_command": m.server_command,
                        **{k: statistics.median(v) for k, v in m.samples.items()},
                    }
                )
        except ItemFailed as exc:
            _fail(exc)
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


class Dsr1Baseline:
    """The `dsr1_baseline` fixture's value: `check(measurement)` records or compares, and passes, skips or fails
    the test as the pure BaselineCheck decides."""

    def __init__(self, check: BaselineCheck | AbCheck) -> None:
        self._check = check

    def check(self, m: Measurement) -> Decision:
        decision = self._check.check(m)
        _enact(decision)
        return decision


class Dsr1Correctness:
    """The `dsr1_correctness` fixture's value: `check(handle)` records or judges the config's logprob check on its
    server (in an A/B run: B's outputs against A's, from the starts), and passes, skips or fails the test."""

    def __init__(self, suite: Suite, config: ServerConfig | None) -> None:
        self._suite = suite
        self._config = config

    def check(self, handle: ServerHandle | None) -> Decision:
        suite = self._suite
        config = handle.config if handle is not None else self._config
        assert config is not None, "dsr1_correctness needs the dsr1_server parameter"
        if suite.options.dry_run:
            path = reference_path(suite.options.baselines, config.hardware.name, config.model.name)
            dry_run.note_correctness(suite.runner, config, str(path))
            pytest.skip("dry-run: not run")
        if suite.ab is not None:
            if config.model.logprobs is None:
                pytest.skip(f"A/B compares A's and B's outputs by the logprob check, which is off for {config.id}")
            assert suite.run_log.ab is not None
            decision, verdict = judge_ab_outputs(suite.run_log.ab, config)
            suite.run_log.correctness[config.id] = verdict
        else:
            assert handle is not None
            decision = CorrectnessCheck(suite.runner, suite.store).check(handle)
        _enact(decision)
        return decision


@pytest.fixture
def dsr1_correctness(request: pytest.FixtureRequest) -> Dsr1Correctness:
    """Check the config's greedy outputs against its logprob reference (record it with --dsr1-record)."""
    return Dsr1Correctness(_suite(request), request.node.stash.get(CHECK_KEY, None))


@pytest.fixture
def dsr1_baseline(request: pytest.FixtureRequest) -> Dsr1Baseline:
    """Compare a measurement with the stored baseline (or record it with --dsr1-record)."""
    suite = _suite(request)
    if suite.ab is not None and not suite.options.dry_run:
        return Dsr1Baseline(AbCheck(suite.runner, suite.ab_run()))
    return Dsr1Baseline(BaselineCheck(suite.runner, suite.store))

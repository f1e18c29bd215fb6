"""The starts of an A/B run: fresh servers of A and B in ABBA order, made by the runner, and an item's
measurement read back from them (A's runs). The judging is ab/judge.py's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_dsr1 import hardware
from pytest_dsr1.ab.data import AbRun, AbStart
from pytest_dsr1.ab.spec import AbSpec, abba_order, b_config
from pytest_dsr1.errors import ItemFailed
from pytest_dsr1.logprobs import LogprobCheck
from pytest_dsr1.matrix import ServerConfig, Workload, item_key
from pytest_dsr1.remote import RemoteServer, base_url
from pytest_dsr1.run_log import Measurement

if TYPE_CHECKING:
    from pytest_dsr1.runner import Runner


def labels(runner: Runner, spec: AbSpec) -> tuple[str, str]:
    """A's and B's labels for the reports: what each runs, with the vLLM version of each interpreter (of each
    endpoint, between two live endpoints)."""
    if spec.target:
        assert runner.options.target is not None
        a, b = (
            RemoteServer("", base_url(url), Path(), runner.options.api_key)
            for url in (runner.options.target, spec.target)
        )
        return (
            f"A: the target {a.target} (vLLM {a.version_or_unknown()})",
            f"B: {spec.label} (vLLM {b.version_or_unknown()})",
        )
    a_version = hardware.vllm_version_of(runner.python)
    b_version = hardware.vllm_version_of(spec.python) if spec.python else a_version
    return f"A: as configured (vLLM {a_version})", f"B: {spec.label} (vLLM {b_version})"


def nothing_to_compare(config: ServerConfig, spec: AbSpec) -> str | None:
    """Why `config` has no A/B comparison (B changes nothing in it), or None."""
    if b_config(config, spec) == config and spec.python is None and spec.target is None:
        return f"A/B: B ({spec.label}) does not change {config.id}: nothing to compare"
    return None


def run_starts(
    runner: Runner,
    config: ServerConfig,
    workloads: list[Workload],
    spec: AbSpec,
    rounds: int,
    into: list[AbStart],
    outputs: LogprobCheck | None = None,
) -> None:
    """Fresh servers of A (the config as it is) and B (`spec` applied) in ABBA order, `rounds` times; on each
    start every item of `workloads` is warmed up and measured `repeat` times. One server alive at a time. A
    start that fails, or a server that dies, is kept with its error, and the schedule goes on. Each start is
    appended to `into` as soon as it is made, so an interrupted schedule still reports what it measured. With
    `outputs` (the config's correctness item selected), each start also answers the logprob check, after its
    measurements. Between two live endpoints (`spec.target`), a start is a burst on its side's endpoint: nothing
    is started or stopped."""
    variant = {"A": config, "B": b_config(config, spec)}
    what = "burst" if spec.target else "start"
    for index, side in enumerate(abba_order(rounds), 1):
        t0 = time.monotonic()
        start = AbStart(config.id, side, index)
        gone = runner.progress.gone() if runner.progress is not None else ""
        runner.write_line(f"dsr1: A/B {config.id}: {what} {index} of {4 * rounds}, {side}{gone}")
        handle = runner.start_server(
            variant[side],
            python=spec.python if side == "B" else None,
            log_name=f"{config.id}-{side}{index}.log",
            target=spec.target if side == "B" else None,
        )
        if handle.error is None:
            start.ready_s = runner.run_log.stats_for(config.id).ready_s
        for workload in workloads:
            key = item_key(config.id, workload.id)
            if handle.error is not None:
                start.error = handle.error
                start.item_errors[key] = handle.error
                continue
            try:
                start.runs[key] = runner.measure(handle, workload).runs
            except ItemFailed as exc:
                start.item_errors[key] = str(exc)
        if outputs is not None and handle.error is None:
            try:
                start.generations = runner.generate(handle, outputs)
            except ItemFailed as exc:
                start.generation_error = str(exc)
        runner.stop_server(handle)
        start.wall_s = time.monotonic() - t0
        into.append(start)


def measurement(runner: Runner, ab: AbRun, config: ServerConfig, workload: Workload) -> Measurement:
    """The item's A/B measurement: A's runs over every A start (the item's own record); the check judges B
    against A from the starts themselves."""
    key = item_key(config.id, workload.id)
    fingerprint = runner.fingerprint_for(config)
    if ab.spec.target:
        assert runner.options.target is not None
        url = base_url(runner.options.target)
        fingerprint = hardware.remote_fingerprint(config, f"(target) {url}", None, runner.options.target_setup)
    m = Measurement(
        config,
        workload,
        key,
        fingerprint["server_command"],
        runner.bench_shell_line(runner.bench_command_for(config, workload, port="PORT")),
        fingerprint,
    )
    m.runs = [run for s in ab.starts_of(config.id) if s.side == "A" for run in s.runs.get(key, [])]
    return m

"""The suite's options: their table (flag, ini key, parser, default, help), their parsers and the parsed Options.

Every option has an ini key; precedence is CLI > ini > default. Values are parsed by small functions used as
argparse `type=`, so a bad value is a usage error (exit 4). No pytest here: pytest_options.py registers the
table with pytest and reads it back.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, overload

from pytest_dsr1.budget import DEFAULT_BUDGET, Budget, parse_budget
from pytest_dsr1.matrix import SETTING_FLAGS, Matrix, setting_problem
from pytest_dsr1.shard import parse_shard
from pytest_dsr1.tolerance import Tolerance, parse_ceiling_override, parse_tolerance_override
from pytest_dsr1.verdict.outcomes import ALPHA, SkipOrFail

MISSING_BASELINE_CHOICES: tuple[SkipOrFail, ...] = ("skip", "fail")


def parse_setting_override(text: str) -> tuple[str | None, str, str]:
    """[CONFIG:]KEY=VALUE -> (config id or None, key, value)."""
    target_key, sep, value = text.partition("=")
    if not sep or not value.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: write [CONFIG:]SETTING=VALUE, e.g. max_model_len=65536")
    target, _, key = target_key.rpartition(":")
    key = key.strip()
    if key not in SETTING_FLAGS:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown setting {key!r}; use one of: {', '.join(SETTING_FLAGS)}")
    problem = setting_problem(key, value.strip())
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {key} {problem}")
    return (target.strip() or None), key, value.strip()


def parse_ab_part(text: str) -> tuple[str, Any]:
    """One part of B in an A/B comparison: python=PATH, model=PATH (a checkpoint B serves in the config's place),
    set=[CONFIG:]KEY=VALUE (as --dsr1-set), env=NAME=VALUE, or target=URL (B is a live endpoint; A is
    --dsr1-target)."""
    kind, sep, value = text.partition("=")
    kind, value = kind.strip(), value.strip()
    if kind in ("python", "model") and value:
        return kind, value
    if kind == "target" and value:
        from pytest_dsr1.remote import base_url, target_problem

        problem = target_problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem.replace("--dsr1-target", "--dsr1-ab target=", 1))
        return "target", base_url(value)
    if kind == "set" and sep:
        return "set", parse_setting_override(value)
    if kind == "env" and sep:
        name, eq, val = value.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise argparse.ArgumentTypeError(f"{text!r}: write env=NAME=VALUE, e.g. env=VLLM_CPU_KVCACHE_SPACE=2")
        return "env", (name, val)
    raise argparse.ArgumentTypeError(
        f"{text!r}: B changes python=PATH, model=PATH, set=[CONFIG:]KEY=VALUE or env=NAME=VALUE, or is a live "
        "endpoint target=URL; e.g. set=max_num_seqs=4"
    )


def _number(convert: Any, ok: Any, what: str, bound: str) -> Any:
    """An argparse type: `convert` the text, then check it with `ok`; errors say what was expected."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if isinstance(value, float) and not math.isfinite(value):  # float() reads 'inf' and 'nan'
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r}: {bound}")
        return value

    return parse


parse_positive_int = _number(int, lambda v: v >= 1, "an integer", "must be at least 1")
parse_non_negative_int = _number(int, lambda v: v >= 0, "an integer", "must be 0 or more")
parse_seconds = _number(float, lambda v: v > 0, "a number of seconds", "must be positive")
parse_alpha = _number(float, lambda v: 0 < v < 1, "a number", "a significance level is between 0 and 1, e.g. 0.05")


def parse_missing_baseline(text: str) -> SkipOrFail:
    if text not in MISSING_BASELINE_CHOICES:
        raise argparse.ArgumentTypeError(f"{text!r}: use one of: {', '.join(MISSING_BASELINE_CHOICES)}")
    return text  # narrowed by the membership test


def parse_accuracy(text: str) -> str:
    if text not in ("on", "off", "only"):
        raise argparse.ArgumentTypeError(f"{text!r}: use on, off or only")
    return text


def parse_on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"{text!r}: use on or off")
    return text == "on"


class OptionSpec(NamedTuple):
    flag: str
    ini: str
    parse: Callable[[str], Any] | None  # None: a flag (store_true; a bool ini key)
    default: Any
    metavar: str
    help: str


class ListOptionSpec(NamedTuple):
    """A repeatable option; its ini key takes one value per line."""

    flag: str
    ini: str
    parse: Callable[[str], Any]
    metavar: str
    help: str


OPTIONS: list[OptionSpec] = [
    OptionSpec(
        "--dsr1-model",
        "dsr1_model",
        str,
        None,
        "NAME",
        "model/precision to run (from the matrix's models, e.g. fp8, fp4, tiny); default: all",
    ),
    OptionSpec(
        "--dsr1-record",
        "dsr1_record",
        None,
        False,
        "",
        "measure and write the results as new baselines instead of comparing",
    ),
    OptionSpec(
        "--dsr1-baselines",
        "dsr1_baselines",
        str,
        "baselines",
        "DIR",
        "baseline directory (default: baselines in the rootdir)",
    ),
    OptionSpec(
        "--dsr1-local-baselines",
        "dsr1_local_baselines",
        str,
        None,
        "DIR|off",
        "where a machine with no comparable baseline keeps its own, per machine fingerprint, "
        "so that its next run compares "
        "(default: $DSR1_LOCAL_BASELINES or ~/.cache/pytest-dsr1/baselines; off: never)",
    ),
    OptionSpec(
        "--dsr1-matrix",
        "dsr1_matrix",
        str,
        None,
        "PATH",
        "matrix YAML file or directory that adds or replaces configs of the recipe matrix shipped with pytest-dsr1 "
        "(default: the shipped matrix, plus test_matrix/*.yaml in the rootdir)",
    ),
    OptionSpec(
        "--dsr1-matrix-alone",
        "dsr1_matrix_alone",
        None,
        False,
        "",
        "run only the configs of --dsr1-matrix; the shipped matrix and test_matrix/ still lend it their models, "
        "hardware and workloads",
    ),
    OptionSpec(
        "--dsr1-dry-run",
        "dsr1_dry_run",
        None,
        False,
        "",
        "print each selected item's environment, `vllm serve` and `vllm bench serve` commands; start nothing",
    ),
    OptionSpec(
        "--dsr1-repeat",
        "dsr1_repeat",
        parse_positive_int,
        None,
        "N",
        "measured runs per item on the same server (default: the hardware's `repeat` in the matrix)",
    ),
    OptionSpec(
        "--dsr1-confirm",
        "dsr1_confirm",
        parse_non_negative_int,
        None,
        "K",
        "when an item looks regressed, re-run it up to K more times before failing "
        "(default: the hardware's `confirm` in the matrix: CPU 2, GPU 0)",
    ),
    OptionSpec(
        "--dsr1-budget",
        "dsr1_budget",
        parse_budget,
        parse_budget(DEFAULT_BUDGET),
        "RUNS/SECONDS|off",
        "measure an undecided item (its interval holds the edge of the allowed change, or the noise test could not "
        f"tell) up to RUNS more times, SECONDS in all per session, before judging it (default: {DEFAULT_BUDGET})",
    ),
    OptionSpec(
        "--dsr1-alpha",
        "dsr1_alpha",
        parse_alpha,
        ALPHA,
        "P",
        "significance level of the noise test (one-sided Mann-Whitney U; default: 0.05)",
    ),
    OptionSpec(
        "--dsr1-missing-baseline",
        "dsr1_missing_baseline",
        parse_missing_baseline,
        "skip",
        "skip|fail",
        "what an item with no baseline does (default: skip, with 'run --dsr1-record'); nightly CI should use fail",
    ),
    OptionSpec(
        "--dsr1-inconclusive",
        "dsr1_inconclusive",
        parse_missing_baseline,
        "skip",
        "skip|fail",
        "what an item does whose change is beyond tolerance but whose samples cannot reach --dsr1-alpha "
        "(default: skip, reported as inconclusive); fail: a nightly that wants it to fail",
    ),
    OptionSpec(
        "--dsr1-strict",
        "dsr1_strict",
        None,
        False,
        "",
        "a nightly: every selected item must produce a verdict; stop at once when one cannot run on this machine "
        "(its hardware is absent), and fail items with no baseline or an inconclusive verdict (implies "
        "--dsr1-missing-baseline=fail --dsr1-inconclusive=fail); configs the matrix skips with a reason are excepted",
    ),
    OptionSpec(
        "--dsr1-accuracy",
        "dsr1_accuracy",
        parse_accuracy,
        "on",
        "on|off|only",
        "the correctness item of each config (its greedy outputs against the recorded logprob reference, on the "
        "server the speed items use): on (default), off, or only (skip the speed items: a quick correctness pass "
        "after a kernel change)",
    ),
    OptionSpec(
        "--dsr1-target",
        "dsr1_target",
        str,
        None,
        "URL",
        "judge a server the suite did not start (a Kubernetes, Slurm or llm-d deployment): its base URL; nothing is "
        "started, restarted or stopped; needs --dsr1-target-config",
    ),
    OptionSpec(
        "--dsr1-target-config",
        "dsr1_target_config",
        str,
        None,
        "ID",
        "with --dsr1-target: the matrix config the target serves (its items alone run, against it)",
    ),
    OptionSpec(
        "--dsr1-target-setup",
        "dsr1_target_setup",
        str,
        "unstated",
        "TEXT",
        "with --dsr1-target: what the deployment is (e.g. '8xH200 TP8 EP, LWS'); a baseline recorded against "
        "another stated setup is not compared (default: unstated)",
    ),
    OptionSpec(
        "--dsr1-server-metrics",
        "dsr1_server_metrics",
        parse_on_off,
        True,
        "on|off",
        "scrape vLLM's /metrics (and NVML on GPUs) around each measured run, shown beside a failure (default: on)",
    ),
    OptionSpec(
        "--dsr1-keep-sessions",
        "dsr1_keep_sessions",
        parse_positive_int,
        10,
        "N",
        "sessions a baseline entry keeps per machine kind when --dsr1-record appends one (default: 10)",
    ),
    OptionSpec(
        "--dsr1-fresh-history",
        "dsr1_fresh_history",
        None,
        False,
        "",
        "with --dsr1-record: start each recorded entry's history anew on this machine kind (after an intended "
        "change), instead of appending a session; other kinds' sessions stay",
    ),
    OptionSpec(
        "--dsr1-startup-timeout",
        "dsr1_startup_timeout",
        parse_seconds,
        None,
        "SECONDS",
        "server readiness deadline (default: the hardware's startup_timeout_s)",
    ),
    OptionSpec(
        "--dsr1-host", "dsr1_host", str, "127.0.0.1", "HOST", "address the servers bind to (default: 127.0.0.1)"
    ),
    OptionSpec(
        "--dsr1-api-key",
        "dsr1_api_key",
        str,
        None,
        "KEY",
        "protect the servers with this API key (default: $VLLM_API_KEY); shown as *** everywhere",
    ),
    OptionSpec(
        "--dsr1-open-server",
        "dsr1_open_server",
        None,
        False,
        "",
        "with a --dsr1-host that is not loopback and no API key: start the servers open to anyone who can reach "
        "them (default: an API key is generated for the run and given to the benchmark)",
    ),
    OptionSpec(
        "--dsr1-run-dir",
        "dsr1_run_dir",
        str,
        ".dsr1/runs",
        "DIR",
        "where server and benchmark logs go, one folder per run (default: .dsr1/runs in the rootdir)",
    ),
    OptionSpec(
        "--dsr1-ab-rounds",
        "dsr1_ab_rounds",
        parse_positive_int,
        2,
        "R",
        "with --dsr1-ab: ABBA rounds of fresh server starts per config (default: 2, i.e. 4 starts per side)",
    ),
    OptionSpec(
        "--dsr1-report", "dsr1_report", str, None, "DIR", "write results.json, summary.md, report.html and plots to DIR"
    ),
    OptionSpec(
        "--dsr1-shard",
        "dsr1_shard",
        parse_shard,
        None,
        "K/N",
        "run the K-th of N shards: whole configs, balanced by expected time (recorded in the baselines, else "
        "modelled); merge the shards' reports with `python -m pytest_dsr1 merge`",
    ),
    OptionSpec(
        "--dsr1-python",
        "dsr1_python",
        str,
        None,
        "PATH",
        "Python interpreter with vLLM, for the server and benchmark worker (default: this one)",
    ),
]
LIST_OPTIONS: list[ListOptionSpec] = [
    ListOptionSpec(
        "--dsr1-tolerance",
        "dsr1_tolerance",
        parse_tolerance_override,
        "METRIC=TOL",
        "override a tolerance for every config: mean_ttft_ms=15%:5 (relative %, then absolute floor); "
        "'*=10%' for all metrics",
    ),
    ListOptionSpec(
        "--dsr1-ceiling",
        "dsr1_ceiling",
        parse_ceiling_override,
        "METRIC=PCT",
        "the widest allowed change a gate may have and still pass (default: throughputs 50%, latencies 100%, or "
        "the hardware's `ceilings`); a gate at or beyond it is inconclusive, too noisy to judge; '*=60%' for all",
    ),
    ListOptionSpec(
        "--dsr1-set",
        "dsr1_set",
        parse_setting_override,
        "[CONFIG:]KEY=VALUE",
        f"override a server setting without editing the matrix ({', '.join(SETTING_FLAGS)}); repeatable",
    ),
    ListOptionSpec(
        "--dsr1-ab",
        "dsr1_ab",
        parse_ab_part,
        "KIND=VALUE",
        "A/B on this machine: compare B, which changes python=PATH, model=PATH, set=[CONFIG:]KEY=VALUE or "
        "env=NAME=VALUE, against the run as configured (A), on fresh servers in ABBA order; repeatable (B changes "
        "every part); or target=URL: B is a live endpoint, A is --dsr1-target, measured in bursts in ABBA order; "
        "writes no baseline",
    ),
]


@dataclass
class Options:
    """The parsed options. The defaults are those of a plain `pytest` run in the rootdir."""

    model: str | None = None
    record: bool = False
    baselines: Path = Path("baselines")
    matrix: Path | None = None  # --dsr1-matrix: a layer on top of the shipped matrix and the rootdir's test_matrix/
    matrix_alone: bool = False  # --dsr1-matrix-alone: run only the configs of --dsr1-matrix
    local_baselines: Path | None = None  # None: off
    dry_run: bool = False
    repeat: int | None = None
    confirm: int | None = None
    budget: Budget = field(default_factory=lambda: parse_budget(DEFAULT_BUDGET))
    alpha: float = ALPHA
    missing_baseline: SkipOrFail = "skip"
    inconclusive: SkipOrFail = "skip"  # skip | fail, like a missing baseline
    strict: bool = False  # --dsr1-strict: every selected item must produce a verdict (a nightly)
    keep_sessions: int = 10
    fresh_history: bool = False
    startup_timeout: float | None = None
    host: str = "127.0.0.1"
    api_key: str | None = None
    api_key_generated: bool = False  # generated for this run: the host is not loopback and no key was given
    open_server: bool = False  # --dsr1-open-server: the user accepts servers without a key on a non-loopback host
    run_dir: Path = Path(".dsr1/runs")
    report: Path | None = None
    python: str | None = None
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    ceilings: dict[str, float] = field(default_factory=dict)  # --dsr1-ceiling: metric (or '*') -> fraction
    settings: list[tuple[str | None, str, str]] = field(default_factory=list)
    ab: list[tuple[str, Any]] = field(default_factory=list)  # --dsr1-ab parts (ab.AbPart); empty: no A/B
    ab_rounds: int = 2
    server_metrics: bool = True  # scrape /metrics and the device around each measured run
    accuracy: str = "on"  # --dsr1-accuracy: on | off | only (the correctness items alone)
    target: str | None = None  # --dsr1-target: the base URL of a server the suite did not start
    target_config: str | None = None  # the config it serves
    target_setup: str = "unstated"  # what the user states the deployment is: a remote baseline's machine kind
    shard: tuple[int, int] | None = None  # --dsr1-shard K/N

    def interpreters(self) -> list[tuple[str, str]]:
        """(option, interpreter) for every Python other than this one that the run would start servers with."""
        found = [("--dsr1-python", self.python)] if self.python is not None else []
        return found + [(f"--dsr1-ab python={value}", value) for kind, value in self.ab if kind == "python"]


# Options that name a path. pytest's own path options take a command-line value relative to the invocation
# directory and an ini value relative to the ini file; these do the same.
PATH_OPTIONS = (
    "--dsr1-baselines",
    "--dsr1-local-baselines",
    "--dsr1-matrix",
    "--dsr1-report",
    "--dsr1-run-dir",
    "--dsr1-python",
)


@overload
def resolve_path(value: tuple[str, Path] | None, default: Path) -> Path: ...
@overload
def resolve_path(value: tuple[str, Path] | None, default: None) -> Path | None: ...
def resolve_path(value: tuple[str, Path] | None, default: Path | None) -> Path | None:
    """(text, the directory it is relative to) -> a path; `default` when the option is not set."""
    if value is None:
        return default
    text, base = value
    return base / os.path.expanduser(text)


def default_local_baselines() -> Path:
    env = os.environ.get("DSR1_LOCAL_BASELINES")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "pytest-dsr1" / "baselines"


def selection_problem(options: Options, matrix: Matrix) -> str | None:
    """Why the options do not fit the matrix (an unknown model, a --dsr1-set for no config), or None."""
    if options.model is not None and options.model not in matrix.models:
        return (
            f"--dsr1-model {options.model!r} is not in the matrix ({', '.join(matrix.files)}); "
            f"choose one of: {', '.join(matrix.models)}"
        )
    config_ids = sorted(c.id for c in matrix.configs)
    if options.target is not None:
        from pytest_dsr1.remote import target_problem

        problem = target_problem(options.target)
        if problem:
            return problem
        if options.target_config is None:
            return "--dsr1-target needs --dsr1-target-config ID: the matrix config the target serves"
        if options.target_config not in config_ids:
            return (
                f"--dsr1-target-config {options.target_config!r}: no such config in the matrix; configs: "
                f"{', '.join(config_ids)}"
            )
        b_targets = [value for kind, value in options.ab if kind == "target"]
        if options.ab and not b_targets:
            return (
                "--dsr1-ab with --dsr1-target: B cannot change a server the suite does not start; compare two live "
                "endpoints with --dsr1-ab target=URL2 (B) beside --dsr1-target URL (A)"
            )
        from pytest_dsr1.remote import base_url

        if base_url(options.target) in b_targets:
            return (
                f"--dsr1-ab target={base_url(options.target)} is --dsr1-target itself: B must be another endpoint "
                "(e.g. a second replica for an A/A, or the canary)"
            )
        if options.settings:
            return "--dsr1-set with --dsr1-target: the target's settings are its deployment's, not the suite's"
    elif options.target_config is not None:
        return "--dsr1-target-config names the config of a --dsr1-target: give the target's URL with it"
    elif any(kind == "target" for kind, _ in options.ab):
        return (
            "--dsr1-ab target=URL compares two live endpoints: give A with --dsr1-target URL and the config both "
            "serve with --dsr1-target-config ID"
        )
    for target, key, _ in options.settings:
        if target is not None and target not in config_ids:
            return f"--dsr1-set {target}:{key}: no config {target!r} in the matrix; configs: {', '.join(config_ids)}"
    for kind, value in options.ab:
        if kind == "set" and value[0] is not None and value[0] not in config_ids:
            return (
                f"--dsr1-ab set={value[0]}:{value[1]}: no config {value[0]!r} in the matrix; "
                f"configs: {', '.join(config_ids)}"
            )
    return None

"""Command-line options and ini keys. Every option has an ini key; precedence is CLI > ini > default.

Values are parsed by small functions used as argparse `type=`, so a bad value is a usage error (exit 4).
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_dsr1.matrix import SETTING_FLAGS, setting_problem
from pytest_dsr1.tolerance import Tolerance, parse_tolerance_override

MISSING_BASELINE_CHOICES = ("skip", "fail")


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


def parse_missing_baseline(text: str) -> str:
    if text not in MISSING_BASELINE_CHOICES:
        raise argparse.ArgumentTypeError(f"{text!r}: use one of: {', '.join(MISSING_BASELINE_CHOICES)}")
    return text


# (option, ini key, type parser or None for a flag, default, help)
_OPTIONS: list[tuple[str, str, Any, Any, str, str]] = [
    (
        "--dsr1-model",
        "dsr1_model",
        str,
        None,
        "NAME",
        "model/precision to run (from the matrix's models, e.g. fp8, fp4, tiny); default: all",
    ),
    (
        "--dsr1-record",
        "dsr1_record",
        None,
        False,
        "",
        "measure and write the results as new baselines instead of comparing",
    ),
    (
        "--dsr1-baselines",
        "dsr1_baselines",
        str,
        "baselines",
        "DIR",
        "baseline directory (default: baselines in the rootdir)",
    ),
    (
        "--dsr1-local-baselines",
        "dsr1_local_baselines",
        str,
        None,
        "DIR|off",
        "where a machine with no comparable baseline keeps its own, per machine fingerprint, so that its next run compares "
        "(default: $DSR1_LOCAL_BASELINES or ~/.cache/pytest-dsr1/baselines; off: never)",
    ),
    (
        "--dsr1-matrix",
        "dsr1_matrix",
        str,
        None,
        "PATH",
        "matrix YAML file or directory that adds or replaces configs of the recipe matrix shipped with pytest-dsr1 "
        "(default: the shipped matrix, plus test_matrix/*.yaml in the rootdir)",
    ),
    (
        "--dsr1-dry-run",
        "dsr1_dry_run",
        None,
        False,
        "",
        "print each selected item's environment, `vllm serve` and `vllm bench serve` commands; start nothing",
    ),
    (
        "--dsr1-repeat",
        "dsr1_repeat",
        parse_positive_int,
        None,
        "N",
        "measured runs per item on the same server (default: the hardware's `repeat` in the matrix)",
    ),
    (
        "--dsr1-confirm",
        "dsr1_confirm",
        parse_non_negative_int,
        None,
        "K",
        "when an item looks regressed, re-run it up to K more times before failing (default: the hardware's `confirm` in the matrix: CPU 2, GPU 0)",
    ),
    (
        "--dsr1-alpha",
        "dsr1_alpha",
        parse_alpha,
        0.05,
        "P",
        "significance level of the noise test (one-sided Mann-Whitney U; default: 0.05)",
    ),
    (
        "--dsr1-missing-baseline",
        "dsr1_missing_baseline",
        parse_missing_baseline,
        "skip",
        "skip|fail",
        "what an item with no baseline does (default: skip, with 'run --dsr1-record'); nightly CI should use fail",
    ),
    (
        "--dsr1-startup-timeout",
        "dsr1_startup_timeout",
        parse_seconds,
        None,
        "SECONDS",
        "server readiness deadline (default: the hardware's startup_timeout_s)",
    ),
    ("--dsr1-host", "dsr1_host", str, "127.0.0.1", "HOST", "address the servers bind to (default: 127.0.0.1)"),
    (
        "--dsr1-api-key",
        "dsr1_api_key",
        str,
        None,
        "KEY",
        "protect the servers with this API key (default: $VLLM_API_KEY); shown as *** everywhere",
    ),
    (
        "--dsr1-run-dir",
        "dsr1_run_dir",
        str,
        ".dsr1/runs",
        "DIR",
        "where server and benchmark logs go, one folder per run (default: .dsr1/runs in the rootdir)",
    ),
    ("--dsr1-report", "dsr1_report", str, None, "DIR", "write results.json, summary.md and plots to DIR"),
    (
        "--dsr1-python",
        "dsr1_python",
        str,
        None,
        "PATH",
        "Python interpreter with vLLM, for the server and benchmark worker (default: this one)",
    ),
]
_LIST_OPTIONS = [
    (
        "--dsr1-tolerance",
        "dsr1_tolerance",
        parse_tolerance_override,
        "METRIC=TOL",
        "override a tolerance for every config: mean_ttft_ms=15%:5 (relative %, then absolute floor); '*=10%' for all metrics",
    ),
    (
        "--dsr1-set",
        "dsr1_set",
        parse_setting_override,
        "[CONFIG:]KEY=VALUE",
        f"override a server setting without editing the matrix ({', '.join(SETTING_FLAGS)}); repeatable",
    ),
]


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("dsr1", "DeepSeek-R1/V3 serving regression suite (pytest-dsr1)")
    for opt, ini, parse, default, metavar, help_ in _OPTIONS:
        if parse is None:
            group.addoption(opt, action="store_true", default=None, dest=ini, help=help_.replace("%", "%%"))
            parser.addini(ini, help_, type="bool", default=default)
        else:
            group.addoption(
                opt, action="store", type=parse, default=None, metavar=metavar, dest=ini, help=help_.replace("%", "%%")
            )
            parser.addini(ini, help_, default=None)
    for opt, ini, parse, metavar, help_ in _LIST_OPTIONS:
        group.addoption(
            opt, action="append", type=parse, default=None, metavar=metavar, dest=ini, help=help_.replace("%", "%%")
        )
        parser.addini(ini, help_ + " (ini: one per line)", type="linelist", default=[])


@dataclass
class Options:
    model: str | None
    record: bool
    baselines: Path
    matrix: Path | None  # --dsr1-matrix: a layer on top of the shipped matrix and the rootdir's test_matrix/
    local_baselines: Path | None  # None: off
    dry_run: bool
    repeat: int | None
    confirm: int | None
    alpha: float
    missing_baseline: str
    startup_timeout: float | None
    host: str
    api_key: str | None
    run_dir: Path
    report: Path | None
    python: str | None
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    settings: list[tuple[str | None, str, str]] = field(default_factory=list)


def _value(config: pytest.Config, ini: str, parse: Any, default: Any) -> Any:
    cli = getattr(config.option, ini, None)
    if cli is not None:
        return cli
    raw = config.getini(ini)
    if raw in (None, "", []):
        return default
    if parse is None:  # bool ini already parsed by pytest
        return bool(raw)
    try:
        return parse(str(raw))
    except argparse.ArgumentTypeError as exc:
        raise pytest.UsageError(f"ini key {ini} {_ini_source(config, ini)}: {exc}") from None


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


def _path_value(config: pytest.Config, ini: str) -> tuple[str, Path] | None:
    """(text, directory it is relative to) of a path option: the command line's, else the ini file's."""
    cli = getattr(config.option, ini, None)
    if cli is not None:
        return cli, Path(config.invocation_params.dir)
    raw = config.getini(ini)
    if raw in (None, ""):
        return None
    return str(raw), Path(config.inipath.parent if config.inipath else config.rootpath)


def _resolve(value: tuple[str, Path] | None, default: Path | None) -> Path | None:
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


def suite_requested(config: pytest.Config) -> bool:
    """Did this run ask for the serving suite? A --dsr1-* option typed on the command line, or a model or matrix
    named anywhere (ini file, addopts, PYTEST_ADDOPTS). Settings such as --dsr1-missing-baseline=fail in a
    project's addopts do not turn a plain `pytest` into a suite run. Without a request, pytest-dsr1 adds nothing
    to a project's collection."""
    if any(str(a).startswith("--dsr1-") for a in config.invocation_params.args):
        return True
    if (
        getattr(config.option, "dsr1_model", None) is not None
        or getattr(config.option, "dsr1_matrix", None) is not None
    ):
        return True
    return bool(config.getini("dsr1_model") or config.getini("dsr1_matrix"))


def _ini_source(config: pytest.Config, ini: str) -> str:
    """Where an ini value came from: `-o KEY=VALUE` on the command line wins over the ini file."""
    overrides = getattr(config.known_args_namespace, "override_ini", None) or []
    if any(str(o).split("=", 1)[0].strip() == ini for o in overrides):
        return "(from -o/--override-ini)"
    return f"in {config.inipath}"


def read_options(config: pytest.Config) -> Options:
    vals = {ini: _value(config, ini, parse, default) for _, ini, parse, default, _, _ in _OPTIONS}
    lists: dict[str, list] = {}
    for _, ini, parse, _, _ in _LIST_OPTIONS:
        cli = getattr(config.option, ini, None)
        if cli:
            lists[ini] = cli
        else:
            try:
                lists[ini] = [parse(line) for line in config.getini(ini)]
            except argparse.ArgumentTypeError as exc:
                raise pytest.UsageError(f"ini key {ini} {_ini_source(config, ini)}: {exc}") from None
    root = Path(config.rootpath)
    local = _path_value(config, "dsr1_local_baselines")
    python = _path_value(config, "dsr1_python")
    return Options(
        model=vals["dsr1_model"],
        record=bool(vals["dsr1_record"]),
        baselines=_resolve(_path_value(config, "dsr1_baselines"), root / "baselines"),  # type: ignore[arg-type]
        matrix=_resolve(_path_value(config, "dsr1_matrix"), None),
        local_baselines=None if local and local[0] == "off" else _resolve(local, default_local_baselines()),
        dry_run=bool(vals["dsr1_dry_run"]),
        repeat=vals["dsr1_repeat"],
        confirm=vals["dsr1_confirm"],
        alpha=vals["dsr1_alpha"],
        missing_baseline=vals["dsr1_missing_baseline"],
        startup_timeout=vals["dsr1_startup_timeout"],
        host=vals["dsr1_host"],
        api_key=vals["dsr1_api_key"] or os.environ.get("VLLM_API_KEY") or None,
        run_dir=_resolve(_path_value(config, "dsr1_run_dir"), root / ".dsr1" / "runs"),  # type: ignore[arg-type]
        report=_resolve(_path_value(config, "dsr1_report"), None),
        # A bare name (python3) is looked up on PATH, as a shell would; a path is resolved like the others.
        python=None if python is None else (python[0] if os.sep not in python[0] else str(_resolve(python, None))),
        tolerances=dict(lists["dsr1_tolerance"]),
        settings=list(lists["dsr1_set"]),
    )


# addopts flags that pytest applies before plugins load; an ini file that sets them cannot be put back afterwards.
_EARLY_FLAGS = (
    "-p",
    "-o",
    "--override-ini",
    "--import-mode",
    "--confcutdir",
    "--noconftest",
    "--rootdir",
    "-c",
    "--config-file",
    "--pyargs",
)


def keep_rootdir(config: pytest.Config, args: list[str]) -> None:
    """Undo what the value of a space-separated path option does to pytest's rootdir and ini file.

    pytest finds the rootdir and the ini file before any plugin's options are known, so in
    `pytest --dsr1-baselines /tmp` it takes `/tmp` for a test path, roots the run there and loses the project's
    ini file. Once this plugin's options are known (pytest_load_initial_conftests), find both again from the
    real test paths, as pytest would have, and put them back. pytest's own path options never move anything.
    """
    values = [args[i + 1] for i, a in enumerate(args[:-1]) if a in PATH_OPTIONS]
    ns = config.known_args_namespace
    if not values or ns.inifilename or ns.rootdir:
        return
    from _pytest.config.findpaths import determine_setup

    rootpath, inipath, inicfg, ignored = determine_setup(
        inifile=None,
        override_ini=ns.override_ini,
        args=ns.file_or_dir,
        rootdir_cmd_arg=None,
        invocation_dir=config.invocation_params.dir,
    )
    if (rootpath, inipath) == (config.rootpath, config.inipath):
        return
    early = sorted(k for k in ("pythonpath", "required_plugins", "minversion") if k in inicfg)
    addopts = getattr(inicfg.get("addopts"), "value", inicfg.get("addopts")) or ""  # pytest 9: a ConfigValue
    addopts_tokens = addopts.split() if isinstance(addopts, str) else [str(t) for t in addopts]
    early += [t for t in addopts_tokens if t.startswith(_EARLY_FLAGS)]
    if config.inipath is not None or early:
        # The wrong ini file's addopts are already applied and cannot be taken back; and the right one's early
        # settings (sys.path, plugins, conftest handling) were needed before this hook.
        raise pytest.UsageError(
            f"pytest-dsr1: pytest took {' / '.join(values)} for a test path and read its settings from {config.inipath or 'no ini file'} "
            f"instead of {inipath}; write the option with '=' (e.g. --dsr1-baselines=DIR)"
        )
    old_cut = str(config.rootpath)
    try:
        config._rootpath, config._inipath, config._inicfg = rootpath, inipath, inicfg  # type: ignore[attr-defined]
        config._ignored_config_files = ignored  # type: ignore[attr-defined]
        config._inicache.clear()  # type: ignore[attr-defined]
        config._parser.extra_info["rootdir"] = str(rootpath)
        config._parser.extra_info["inifile"] = str(inipath)
    except AttributeError:  # pytest changed its internals: say how to avoid the problem
        raise pytest.UsageError(
            "pytest-dsr1: write path options with '=' (e.g. --dsr1-baselines=DIR) on this pytest"
        ) from None
    if ns.confcutdir == old_cut:
        ns.confcutdir = str(inipath.parent if inipath else rootpath)
    args[:] = [*config.getini("addopts"), *args]

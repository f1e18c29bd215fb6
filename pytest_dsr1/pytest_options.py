"""pytest's side of the options: registers the option table (options.py) as command-line options and ini keys,
reads them back into Options, and keeps pytest's rootdir where a path option's value would move it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_dsr1.ab.spec import AbSpec
from pytest_dsr1.matrix.loading import packaged_matrix_dir
from pytest_dsr1.options import (
    LIST_OPTIONS,
    OPTIONS,
    PATH_OPTIONS,
    Options,
    default_local_baselines,
    resolve_path,
)
from pytest_dsr1.start_checks import guard_host


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("dsr1", "DeepSeek-R1/V3 serving regression suite (pytest-dsr1)")
    for opt, ini, parse, default, metavar, help_ in OPTIONS:
        if parse is None:
            group.addoption(opt, action="store_true", default=None, dest=ini, help=help_.replace("%", "%%"))
            parser.addini(ini, help_, type="bool", default=default)
        else:
            group.addoption(
                opt, action="store", type=parse, default=None, metavar=metavar, dest=ini, help=help_.replace("%", "%%")
            )
            parser.addini(ini, help_, default=None)
    for opt, ini, parse, metavar, help_ in LIST_OPTIONS:
        group.addoption(
            opt, action="append", type=parse, default=None, metavar=metavar, dest=ini, help=help_.replace("%", "%%")
        )
        parser.addini(ini, help_ + " (ini: one per line)", type="linelist", default=[])


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


def _path_value(config: pytest.Config, ini: str) -> tuple[str, Path] | None:
    """(text, directory it is relative to) of a path option: the command line's, else the ini file's."""
    cli = getattr(config.option, ini, None)
    if cli is not None:
        return cli, Path(config.invocation_params.dir)
    raw = config.getini(ini)
    if raw in (None, ""):
        return None
    return str(raw), Path(config.inipath.parent if config.inipath else config.rootpath)


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
    # Path options are read by _path_value: their base directory depends on where the value came from.
    vals = {o.ini: _value(config, o.ini, o.parse, o.default) for o in OPTIONS if o.flag not in PATH_OPTIONS}
    lists: dict[str, list[Any]] = {}
    for _, ini, parse, _, _ in LIST_OPTIONS:
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
    return guard_host(
        Options(
            model=vals["dsr1_model"],
            record=bool(vals["dsr1_record"]),
            baselines=resolve_path(_path_value(config, "dsr1_baselines"), root / "baselines"),
            matrix=resolve_path(_path_value(config, "dsr1_matrix"), None),
            matrix_alone=bool(vals["dsr1_matrix_alone"]),
            local_baselines=None if local and local[0] == "off" else resolve_path(local, default_local_baselines()),
            dry_run=bool(vals["dsr1_dry_run"]),
            repeat=vals["dsr1_repeat"],
            confirm=vals["dsr1_confirm"],
            budget=vals["dsr1_budget"],
            alpha=vals["dsr1_alpha"],
            missing_baseline="fail" if vals["dsr1_strict"] else vals["dsr1_missing_baseline"],
            inconclusive="fail" if vals["dsr1_strict"] else vals["dsr1_inconclusive"],
            strict=bool(vals["dsr1_strict"]),
            keep_sessions=vals["dsr1_keep_sessions"],
            fresh_history=bool(vals["dsr1_fresh_history"]),
            startup_timeout=vals["dsr1_startup_timeout"],
            host=vals["dsr1_host"],
            api_key=vals["dsr1_api_key"] or os.environ.get("VLLM_API_KEY") or None,
            open_server=bool(vals["dsr1_open_server"]),
            run_dir=resolve_path(_path_value(config, "dsr1_run_dir"), root / ".dsr1" / "runs"),
            report=resolve_path(_path_value(config, "dsr1_report"), None),
            python=_python_value(python),
            tolerances=dict(lists["dsr1_tolerance"]),
            ceilings=dict(lists["dsr1_ceiling"]),
            settings=list(lists["dsr1_set"]),
            ab=[_ab_part(part, config) for part in lists["dsr1_ab"]],  # the values as given: each source's base
            ab_rounds=vals["dsr1_ab_rounds"],
            server_metrics=bool(vals["dsr1_server_metrics"]),
            accuracy=vals["dsr1_accuracy"],
            target=vals["dsr1_target"],
            target_config=vals["dsr1_target_config"],
            target_setup=vals["dsr1_target_setup"],
            shard=vals["dsr1_shard"],
        )
    )


def _python_value(python: tuple[str, Path] | None) -> str | None:
    """A bare name (python3) is looked up on PATH, as a shell would; a path is resolved like the other paths."""
    if python is None:
        return None
    return python[0] if os.sep not in python[0] else str(resolve_path(python, None))


def _ab_part(part: tuple[str, Any], config: pytest.Config) -> tuple[str, Any]:
    """A python=PATH or model=PATH part is a path, resolved as --dsr1-python is: on the command line relative to
    where pytest was started, in the ini file relative to the ini file; a bare name is looked up on PATH (python)
    or is a Hugging Face id (model)."""
    kind, value = part
    if kind not in ("python", "model") or os.sep not in value:
        return part
    from_cli = getattr(config.option, "dsr1_ab", None)
    base = config.invocation_params.dir if from_cli else (config.inipath.parent if config.inipath else config.rootpath)
    return kind, str(Path(base) / os.path.expanduser(value))


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
    early: list[str] = sorted(k for k in ("pythonpath", "required_plugins", "minversion") if k in inicfg)
    addopts: Any = getattr(inicfg.get("addopts"), "value", inicfg.get("addopts")) or ""  # pytest 9: a ConfigValue
    addopts_tokens = addopts.split() if isinstance(addopts, str) else [str(t) for t in addopts]
    early += [t for t in addopts_tokens if t.startswith(_EARLY_FLAGS)]
    if config.inipath is not None or early:
        # The wrong ini file's addopts are already applied and cannot be taken back; and the right one's early
        # settings (sys.path, plugins, conftest handling) were needed before this hook.
        raise pytest.UsageError(
            f"pytest-dsr1: pytest took {' / '.join(values)} for a test path and read its settings from "
            f"{config.inipath or 'no ini file'} "
            f"instead of {inipath}; write the option with '=' (e.g. --dsr1-baselines=DIR)"
        )
    old_cut = str(config.rootpath)
    try:
        # pytest has no API for this: its private fields, guarded below.
        config._rootpath, config._inipath, config._inicfg = rootpath, inipath, inicfg
        config._ignored_config_files = ignored
        config._inicache.clear()
        config._parser.extra_info["rootdir"] = str(rootpath)
        config._parser.extra_info["inifile"] = str(inipath)
    except AttributeError:  # pytest changed its internals: say how to avoid the problem
        raise pytest.UsageError(
            "pytest-dsr1: write path options with '=' (e.g. --dsr1-baselines=DIR) on this pytest"
        ) from None
    if ns.confcutdir == old_cut:
        ns.confcutdir = str(inipath.parent if inipath else rootpath)
    args[:] = [*config.getini("addopts"), *args]


def xdist_problem(dist: str, ab: AbSpec | None) -> str | None:
    """Why this pytest -n run cannot go as asked, or None. Items go to workers a whole config at a time."""
    if ab is not None:
        return (
            "pytest-dsr1: --dsr1-ab compares B against A on fresh servers, one at a time on a quiet machine: "
            "run it without -n (or with -n 0)"
        )
    if dist not in ("load", "loadscope", "loadgroup"):
        return (
            f"pytest-dsr1: --dist {dist} would run a config's items on several workers, each starting its own "
            "server: leave out --dist (the suite hands each worker whole configs)"
        )
    return None


def under_xdist(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None) or getattr(config.option, "tx", None))


def names_the_suite(config: pytest.Config) -> bool:
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

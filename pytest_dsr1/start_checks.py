"""What is checked of the options before the first server starts: the paths are what they claim, the interpreters
run and have vLLM, a selection a strict night can run here, a host beyond loopback is not open by accident. A
problem found at the first server start, or after A's servers ran, would cost the run. No pytest here.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import replace

from pytest_dsr1.hardware import Host, skip_reason
from pytest_dsr1.matrix import ServerConfig
from pytest_dsr1.options import Options


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


def guard_host(options: Options) -> Options:
    """No server open to the network by accident: on a host that is not loopback, without an API key and without
    --dsr1-open-server, the run gets a key of its own (passed to the servers and the benchmark, shown as ***)."""
    if is_loopback(options.host) or options.api_key or options.open_server:
        return options
    return replace(options, api_key=secrets.token_urlsafe(24), api_key_generated=True)


def host_line(options: Options) -> str | None:
    """What the header says of a server bound beyond loopback: its key, or that it is open."""
    if is_loopback(options.host):
        return None
    if options.api_key_generated:
        return f"dsr1: servers listen on {options.host} with an API key generated for this run (shown as ***)"
    if options.api_key:
        return f"dsr1: servers listen on {options.host} with the given API key (shown as ***)"
    return (
        f"dsr1: servers listen on {options.host} with no API key (--dsr1-open-server): anyone who can reach this "
        "machine can use them"
    )


def path_problem(options: Options) -> str | None:
    """What can be checked before the first server starts: the interpreter exists, the report directory is
    writable. Found at the first server start or at the end of the run, they would cost the run."""
    if options.python is not None and shutil.which(options.python) is None:
        return (
            f"--dsr1-python {options.python}: no such executable; point it at a Python that has vLLM "
            "(e.g. /path/to/venv/bin/python), or leave it out to use this one"
        )
    for kind, value in options.ab:
        if kind == "python" and shutil.which(value) is None:
            return (
                f"--dsr1-ab python={value}: no such executable; point it at B's Python, the one with the other vLLM "
                "(e.g. /path/to/venv-b/bin/python)"
            )
    for flag, path in (
        ("--dsr1-baselines", options.baselines),
        ("--dsr1-local-baselines", options.local_baselines),
        ("--dsr1-run-dir", options.run_dir),
        ("--dsr1-report", options.report),
    ):
        if path is not None and path.exists() and not path.is_dir():
            return f"--{flag.lstrip('-')} {path}: not a directory; point it at a directory (it is made if missing)"
    if options.report is not None:
        try:
            options.report.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return (
                f"--dsr1-report {options.report}: cannot create it ({exc.strerror or exc}); "
                "point it at a writable directory"
            )
        if not os.access(options.report, os.W_OK | os.X_OK):
            return f"--dsr1-report {options.report}: not writable; point it at a writable directory"
    return None


def strict_problem(selected: Iterable[ServerConfig], host: Host) -> str | None:
    """--dsr1-strict: why the selected items cannot all run on this machine (a runner that lost its GPUs must not
    go green on skips), or None. Configs the matrix itself skips, with the reason written there, are excepted."""
    configs = list(selected)
    if not configs:
        return "pytest-dsr1 --dsr1-strict: the selection holds no serving item; a night must run some"
    cannot: dict[str, list[str]] = {}
    for cfg in dict.fromkeys(configs):
        reason = None if cfg.skip or cfg.nodes > 1 else skip_reason(cfg, host)  # the matrix says why
        if reason:
            cannot.setdefault(reason, []).append(cfg.id)
    if not cannot:
        return None
    items = sum(1 for cfg in configs if any(cfg.id in ids for ids in cannot.values()))
    found = "; ".join(f"{reason} ({', '.join(ids)})" for reason, ids in cannot.items())
    return (
        f"pytest-dsr1 --dsr1-strict: {items} of {len(configs)} selected item(s) cannot run on this machine: {found}. "
        "A nightly whose runner lost its hardware fails here instead of going green on skips; check the runner's "
        "label, its driver and CUDA_VISIBLE_DEVICES"
    )

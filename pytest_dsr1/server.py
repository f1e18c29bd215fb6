"""One vLLM server process: start (argv + env, no shell), wait until ready, log file, stop the whole group.

No pytest here. The idioms follow vLLM's own benchmarks/sweep/server.py and pytest-xprocess: a new session
(process group) so that the API server and its engine processes stop together; output to a log file, never
an unread pipe; readiness = /health 200 while the process is alive, against a monotonic deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from pytest_dsr1.command import REDACTED, ServerCommand, is_secret_name, redact

PIDFILE_SUFFIX = ".pid.json"


# psutil is imported inside the functions that manage a server, not when the plugin loads: an offline GPU machine
# may run the plugin from a checkout with only pytest/numpy/requests/PyYAML; vLLM itself depends on psutil.


class ServerStartError(RuntimeError):
    """The server did not become ready. The message holds the reason and the log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 40, secrets: tuple[str, ...] = ()) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return redact_env_secrets(redact("\n".join(text.splitlines()[-lines:]), secrets))


def redact_env_secrets(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace the values of secret-looking environment variables (tokens, keys) with ***."""
    environ = os.environ if environ is None else environ
    for name, value in environ.items():
        if value and len(value) >= 6 and is_secret_name(name):
            text = text.replace(value, REDACTED)
    return text


@dataclass
class VllmServer:
    name: str
    command: ServerCommand
    host: str
    port: int
    log_path: Path
    python: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_after_s: float | None = None
    exit_code: int | None = None
    _children: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.log_path.with_suffix(PIDFILE_SUFFIX)

    def start(self) -> None:
        """Launch the process. Refuses if something already answers on the port (never benchmark a stranger)."""
        if port_answers(self.host, self.port):
            raise ServerStartError(
                f"refusing to start {self.name}: something already answers on {self.host}:{self.port}"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **dict(self.command.env)}
        with open(self.log_path, "ab") as log:
            log.write(f"$ {self.command.shell_line()}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command.exec_argv(self.python),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: API server + engine processes stop together
            )
        self.started_at = time.monotonic()
        # The owner is this (pytest) process: a server is a leftover only once its owner is gone.
        self.pidfile.write_text(
            json.dumps(
                {
                    "pid": self.proc.pid,
                    "pgid": self.proc.pid,
                    "name": self.name,
                    "port": self.port,
                    "owner_pid": os.getpid(),
                    "owner_started": _create_time(os.getpid()),
                    "started": time.time(),
                }
            )
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(
        self,
        timeout_s: float,
        progress: Callable[[float], None] | None = None,
        progress_every_s: float = 30.0,
        poll_s: float = 1.0,
    ) -> float:
        """Poll /health until 200, the process exits, or the deadline passes. Returns seconds to ready."""
        assert self.proc is not None
        deadline = self.started_at + timeout_s
        next_progress = self.started_at + progress_every_s
        while True:
            now = time.monotonic()
            if self.proc.poll() is not None:
                self.exit_code = self.proc.returncode
                raise ServerStartError(
                    f"server {self.name} exited with code {self.exit_code} after {now - self.started_at:.1f}s "
                    f"during start-up (log: {self.log_path})\n--- log tail ---\n{self.log_tail()}"
                )
            self._remember_children()
            try:
                if requests.get(self.url + "/health", timeout=5).status_code == 200:
                    self.ready_after_s = time.monotonic() - self.started_at
                    return self.ready_after_s
            except requests.RequestException:
                pass
            if now >= deadline:
                raise ServerStartError(
                    f"server {self.name} not ready after {now - self.started_at:.1f}s (deadline {timeout_s:.0f}s; "
                    f"raise it with --dsr1-startup-timeout) (log: {self.log_path})\n--- log tail ---\n{self.log_tail()}"
                )
            if progress and now >= next_progress:
                progress(now - self.started_at)
                next_progress += progress_every_s
            time.sleep(poll_s)

    def healthy(self) -> bool:
        if not self.alive():
            return False
        try:
            return requests.get(self.url + "/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def exit_description(self) -> str:
        """How the server process ended: 'exit code 1', 'exit code -11, killed by SIGSEGV'."""
        return describe_exit(self.proc.returncode if self.proc else None)

    def engine_death(self) -> str | None:
        """What vLLM logged when its engine died under a still running API server, or None: an engine worker's exit
        code ('a worker exited with exit code -11, killed by SIGSEGV'), else its EngineDeadError."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        codes = re.findall(r"died unexpectedly \(exit code: (-?\d+)\)", text)
        if codes:
            return f"a worker exited with {describe_exit(int(codes[-1]))}"
        return "vLLM logged EngineDeadError" if "EngineDeadError" in text else None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines, self.command.secret_values)

    def _remember_children(self) -> None:
        # Engine processes may leave the group (DP ranks, multiprocessing); remember them to stop them too.
        import psutil

        if self.proc is None:
            return
        with contextlib.suppress(psutil.Error):
            self._children.update(p.pid for p in psutil.Process(self.proc.pid).children(recursive=True))

    def stop(self, grace_s: float = 30.0) -> None:
        """TERM the process group, wait, then KILL it and any remembered child that escaped the group."""
        import psutil

        if self.proc is None:
            return
        self._remember_children()
        pgid = self.proc.pid
        if self.proc.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace_s)
        # The API server may be gone while engine processes linger in the group: always sweep.
        _signal_group(pgid, signal.SIGKILL)
        for pid in self._children:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        _wait_gone(self._children | {pgid}, timeout=15)
        self.exit_code = self.proc.returncode
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()


def describe_exit(code: int | None) -> str:
    """'exit code 1', or 'exit code -11, killed by SIGSEGV' for a process a signal ended."""
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"exit code {code}, killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_gone(pids: set[int], timeout: float) -> None:
    import psutil

    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    psutil.wait_procs(procs, timeout=timeout)


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _owner_alive(info: dict[str, Any]) -> bool:
    owner = info.get("owner_pid")
    if owner is None:
        return False
    created = _create_time(int(owner))
    # Same pid and same start time: the owner itself, not a reused pid.
    return created is not None and (
        info.get("owner_started") is None or abs(created - float(info["owner_started"])) < 1.0
    )


def stale_servers(run_root: Path) -> list[dict[str, Any]]:
    """Servers recorded in pidfiles under run_root whose owner (a pytest process) is gone: a crashed earlier
    run. A server owned by a pytest run that is still going is never touched."""
    found = []
    for pidfile in Path(run_root).glob(f"**/*{PIDFILE_SUFFIX}"):
        try:
            info = json.loads(pidfile.read_text())
            pgid = int(info["pgid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _owner_alive(info):
            continue
        info["pidfile"] = str(pidfile)
        info["alive"] = group_alive(pgid) and _looks_like_vllm(pgid)
        found.append(info)
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _looks_like_vllm(pgid: int) -> bool:
    # Guard against pid reuse: only a process group that runs vLLM counts as our leftover.
    import psutil

    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getpgid(p.pid) == pgid and "vllm" in " ".join(p.info["cmdline"] or []):
                return True
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return False


def clean_stale(info: dict[str, Any]) -> None:
    if info.get("alive"):
        _signal_group(int(info["pgid"]), signal.SIGTERM)
        time.sleep(2)
        _signal_group(int(info["pgid"]), signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        Path(info["pidfile"]).unlink()

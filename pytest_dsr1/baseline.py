"""Baseline files: one JSON file per hardware/model, keyed by item id. Load, validate, merge, write atomically.

A corrupt, truncated or foreign baseline is an error that names the file, never a silent pass, and a
record run never leaves a half-written file: it writes a temporary file beside the target, fsyncs it
and renames it over the old one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_dsr1.errors import InputError
from pytest_dsr1.metric_catalog import METRICS

SCHEMA_VERSION = 2  # 2: each entry holds `sessions`, a history; 1 (one session per entry) still loads
READABLE_VERSIONS = (1, 2)
DEFAULT_KEEP_SESSIONS = 10  # sessions kept per entry and machine kind (--dsr1-keep-sessions)
PROVENANCES = ("recorded", "published")


class BaselineError(InputError):
    """A baseline file is unusable (corrupt, foreign, unwritable). The message names the file, the field and the fix."""


def summarize(samples: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": [round(s, 4) for s in samples], "median": round(statistics.median(samples), 4)}
    if len(samples) > 1:
        out["mean"] = round(statistics.fmean(samples), 4)
        out["stdev"] = round(statistics.stdev(samples), 4)
    return out


@dataclass(frozen=True)
class Session:
    """One recorded session of an item: when, on what, and every sample per metric."""

    date: str
    fingerprint: dict[str, Any]
    metrics: dict[str, list[float]]

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.date,
            "fingerprint": self.fingerprint,
            "metrics": {k: summarize(v) for k, v in sorted(self.metrics.items())},
        }


@dataclass
class Entry:
    """An item's baseline: its newest session (metrics, date, fingerprint) and the earlier ones (`history`)."""

    metrics: dict[str, list[float]]  # metric -> samples, of the newest session
    provenance: str
    date: str
    fingerprint: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)  # note, source, workload, bench_command: kept as they are
    history: list[Session] = field(default_factory=list)  # earlier sessions, oldest first

    @property
    def sessions(self) -> list[Session]:
        """Every recorded session, oldest first."""
        return [*self.history, Session(self.date, self.fingerprint, self.metrics)]

    def sessions_like(self, fingerprint: dict[str, Any]) -> list[Session]:
        """The sessions recorded on machines of the same kind as `fingerprint` (same GPU model and count, or same
        CPU model and core count): they pool into one history, whichever machine of that kind recorded them."""
        from pytest_dsr1.hardware import same_hardware

        return [s for s in self.sessions if same_hardware(s.fingerprint, fingerprint) is None]

    def to_json(self) -> dict[str, Any]:
        return {"provenance": self.provenance, **self.extra, "sessions": [s.to_json() for s in self.sessions]}


def with_session(old: Entry | None, new: Entry, keep: int = DEFAULT_KEEP_SESSIONS, fresh: bool = False) -> Entry:
    """`new` (one session) appended to `old`'s history. The history restarts when asked (`fresh`: after an
    intended change; only this machine kind's sessions go, since other kinds are judged against their own), or
    when the load changed (numbers of another load are no history of this one, on any kind). At most `keep`
    sessions are kept per machine kind, the newest."""
    if old is None or load_mismatch(old.extra.get("bench_command"), str(new.extra.get("bench_command", ""))):
        return new
    from pytest_dsr1.hardware import machine_key

    earlier = old.sessions
    if fresh:
        kind = machine_key(new.fingerprint)
        earlier = [s for s in earlier if machine_key(s.fingerprint) != kind]
    sessions = [*earlier, *new.sessions]
    kinds = [machine_key(s.fingerprint) for s in sessions]
    kept = [s for i, s in enumerate(sessions) if kinds[i + 1 :].count(kinds[i]) < keep]
    return Entry(new.metrics, new.provenance, new.date, new.fingerprint, new.extra, kept[:-1])


@dataclass
class BaselineFile:
    path: Path
    hardware: str
    model: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "hardware": self.hardware,
            "model": self.model,
            "entries": {k: self.entries[k].to_json() for k in sorted(self.entries)},
        }


def baseline_path(directory: Path | str, hardware: str, model: str) -> Path:
    return Path(directory) / hardware / f"{model}.json"


def load(path: Path | str, hardware: str, model: str) -> BaselineFile:
    """Load and validate; a missing file is an empty baseline (items then say 'run --dsr1-record')."""
    path = Path(path)
    if not path.exists():
        return BaselineFile(path, hardware, model)
    fix_restore = _fix(path)
    data = read_json(path, "a baseline file", fix_restore)
    if not isinstance(data, dict):
        raise BaselineError(path, "(top level)", "expected a JSON object", fix_restore)
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise BaselineError(
            path,
            "schema_version",
            f"unknown schema version {version!r} (this pytest-dsr1 reads {', '.join(map(str, READABLE_VERSIONS))})",
            "upgrade pytest-dsr1, or re-record the file with --dsr1-record",
        )
    for key, want in (("hardware", hardware), ("model", model)):
        if data.get(key) != want:
            named = isinstance(data.get("hardware"), str) and isinstance(data.get("model"), str)
            fix = (
                f"move the file to {baseline_path(path.parent.parent, data['hardware'], data['model'])} "
                "or point --dsr1-baselines elsewhere"
                if named
                else f'set "{key}": "{want}" if the file is for {hardware}/{model}; otherwise {_fix(path)}'
            )
            raise BaselineError(path, key, f"holds baselines for {key} {data.get(key)!r}, expected {want!r}", fix)
    entries = data.get("entries")
    if not isinstance(entries, dict):
        raise BaselineError(path, "entries", "missing or not an object", fix_restore)
    out = BaselineFile(path, hardware, model)
    for item_id, raw in entries.items():
        out.entries[item_id] = _entry(path, item_id, raw, hardware)
    return out


def read_json(path: Path, what: str, fix: str) -> Any:
    """A file's JSON, or a BaselineError naming the file and `fix`: not a regular file (a device or FIFO would be
    read forever or as nothing), unreadable, corrupt, or nested too deeply to be `what`."""
    if not path.is_file():
        raise BaselineError(path, "(file)", "is not a regular file", fix)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(path, "(file)", f"cannot be read: {exc}", fix) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(path, "(json)", f"corrupt or truncated JSON ({exc})", fix) from None
    except RecursionError:
        raise BaselineError(path, "(json)", f"nested too deeply to be {what}", fix) from None


def _fix(path: Path) -> str:
    # A record run refuses to overwrite a file it cannot read (it would drop the other entries), so the fix that
    # works is to restore the file, or to move it aside first.
    return (
        f"restore it (git checkout -- {path}), or move it aside (mv {path} {path}.broken) "
        "and record anew with --dsr1-record"
    )


def _entry(path: Path, item_id: str, raw: Any, hardware: str) -> Entry:
    where = f"entries.{item_id}"
    if not isinstance(raw, dict):
        raise BaselineError(path, where, "expected an object", _fix(path))
    prov = raw.get("provenance")
    if prov not in PROVENANCES:
        raise BaselineError(
            path, f"{where}.provenance", f"unknown provenance {prov!r}", f"use one of: {', '.join(PROVENANCES)}"
        )
    extra = {k: v for k, v in raw.items() if k not in ("provenance", "date", "fingerprint", "metrics", "sessions")}
    if "sessions" not in raw:  # schema 1: the entry is its one session
        newest = _session(path, where, raw, hardware)
        return Entry(newest.metrics, prov, newest.date, newest.fingerprint, extra)
    sessions = raw["sessions"]
    if not isinstance(sessions, list) or not sessions:
        raise BaselineError(path, f"{where}.sessions", "missing, empty or not a list", _fix(path))
    parsed = [_session(path, f"{where}.sessions[{i}]", s, hardware) for i, s in enumerate(sessions)]
    newest = parsed[-1]
    return Entry(newest.metrics, prov, newest.date, newest.fingerprint, extra, parsed[:-1])


def _session(path: Path, where: str, raw: Any, hardware: str) -> Session:
    if not isinstance(raw, dict):
        raise BaselineError(path, where, "expected an object", _fix(path))
    fp = raw.get("fingerprint")
    if not isinstance(fp, dict):
        raise BaselineError(path, f"{where}.fingerprint", "missing or not an object", _fix(path))
    if fp.get("hardware") != hardware:
        raise BaselineError(
            path,
            f"{where}.fingerprint.hardware",
            f"entry is for hardware {fp.get('hardware')!r}, this file is for {hardware!r}",
            "move the entry to the file of its hardware, or re-record it",
        )
    metrics_raw = raw.get("metrics")
    if not isinstance(metrics_raw, dict) or not metrics_raw:
        raise BaselineError(path, f"{where}.metrics", "missing or empty", _fix(path))
    metrics: dict[str, list[float]] = {}
    for name, value in metrics_raw.items():
        # Older files hold one number per metric; newer ones every sample and their summary.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[name] = [float(value)]
        elif (
            isinstance(value, dict)
            and isinstance(value.get("samples"), list)
            and value["samples"]
            and all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in value["samples"])
        ):
            metrics[name] = [float(s) for s in value["samples"]]
        else:
            raise BaselineError(
                path, f"{where}.metrics.{name}", f'expected a number or {{"samples": [...]}}, got {value!r}', _fix(path)
            )
        # A server count (preemptions, waiting requests) is 0 in a clean run; a client metric never is.
        counts = name in METRICS and METRICS[name].server
        bad = [s for s in metrics[name] if not (math.isfinite(s) and (s >= 0 if counts else s > 0))]
        if bad:
            # NaN, infinity, 0 or a negative number would turn the gate off: every comparison would pass.
            kind = "finite number of 0 or more" if counts else "finite positive number"
            raise BaselineError(
                path,
                f"{where}.metrics.{name}",
                f"{bad[0]!r} is not a {kind}, so nothing could be compared against it",
                _fix(path),
            )
    return Session(str(raw.get("date", "")), fp, metrics)


def write_atomic(path: Path, data: dict[str, Any], text: str | None = None) -> None:
    """Write JSON (`data`, or `text` already made of it) so that the file is either the old one or the new one,
    whatever happens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = text if text is not None else json.dumps(data, indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def append_session(
    path: Path,
    hardware: str,
    model: str,
    item_id: str,
    entry: Entry,
    keep: int = DEFAULT_KEEP_SESSIONS,
    fresh: bool = False,
) -> tuple[Entry | None, Entry]:
    """Append one session (`entry`) to the item's history in the file (other entries kept) and write it
    atomically. Returns (old, new).

    The file is re-read under a lock each time, so that a record run never drops what another entry wrote
    meanwhile, in this process or another (xdist workers, a merge of shards).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path(path), timeout=LOCK_TIMEOUT_S):
        current = load(path, hardware, model)
        old = current.entries.get(item_id)
        entry = with_session(old, entry, keep, fresh)
        current.entries[item_id] = entry
        write_atomic(path, current.to_json())
    return old, entry


LOCK_TIMEOUT_S = 120.0  # a writer holds the lock for one read-modify-write: milliseconds


def lock_path(path: Path) -> str:
    """The lock file beside a baseline file (hidden, ignored by git: baselines/**/.*.lock)."""
    return str(path.with_name(f".{path.name}.lock"))


# The benchmark flags that define the load. Anything else (warm-ups, host, port, report flags) may differ.
LOAD_FLAGS = (
    "--dataset-name",
    "--random-input-len",
    "--random-output-len",
    "--num-prompts",
    "--max-concurrency",
    "--request-rate",
    "--random-range-ratio",
    "--seed",
    "--ignore-eos",
)


def _load_flags(command: str) -> dict[str, str]:
    tokens = shlex.split(command)
    out = {}
    for i, tok in enumerate(tokens):
        if tok in LOAD_FLAGS:
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            out[tok] = "on" if tok == "--ignore-eos" else nxt
    return out


def not_comparable(
    entry: Entry | None, item_id: str, fingerprint: dict[str, Any], bench_command: str, path: Path
) -> str | None:
    """None when a baseline entry can be compared with a measurement (its fingerprint and benchmark command);
    otherwise why not: missing, recorded on other hardware, or measured under another load."""
    from pytest_dsr1.hardware import same_hardware

    if entry is None:
        return f"no baseline for {item_id} in {path}: run --dsr1-record to create it"
    mismatch = None if entry.sessions_like(fingerprint) else same_hardware(entry.fingerprint, fingerprint)
    if mismatch:
        return f"{mismatch} ({path})"
    load_changed = load_mismatch(entry.extra.get("bench_command"), bench_command)
    if load_changed:
        # Numbers measured under another load say nothing about this server.
        return (
            f"the baseline for {item_id} in {path} was measured under a different load ({load_changed}); "
            "re-record it with --dsr1-record"
        )
    return None


def load_mismatch(recorded_command: str | None, current_command: str) -> str | None:
    """None when a baseline's benchmark ran the same load as now (or recorded no command); otherwise how
    the loads differ. Comparing numbers measured under different loads says nothing about the server."""
    if not recorded_command:
        return None
    before, now = _load_flags(recorded_command), _load_flags(current_command)
    diffs = [
        f"{flag} {before.get(flag, '(absent)')} in the baseline, {now.get(flag, '(absent)')} now"
        for flag in LOAD_FLAGS
        if before.get(flag) != now.get(flag)
    ]
    return "; ".join(diffs) or None


class BaselineStore:
    """The baseline files a run reads and writes: the committed ones (--dsr1-baselines) and this machine's own
    (--dsr1-local-baselines). Committed files are read once per run; a broken one stays broken for the run."""

    def __init__(
        self,
        directory: Path,
        local_directory: Path | None,
        keep: int = DEFAULT_KEEP_SESSIONS,
        fresh: bool = False,
    ) -> None:
        self.directory = directory
        self.local_directory = local_directory  # None: machine-local baselines are off
        self.keep = keep  # sessions kept per entry and machine kind
        self.fresh = fresh  # a record starts each entry's history anew (--dsr1-fresh-history)
        self._files: dict[Path, BaselineFile | BaselineError] = {}

    def path(self, hardware: str, model: str) -> Path:
        return baseline_path(self.directory, hardware, model)

    def file(self, hardware: str, model: str) -> BaselineFile:
        path = self.path(hardware, model)
        cached = self._files.get(path)
        if cached is None:
            try:
                cached = load(path, hardware, model)
            except BaselineError as exc:
                cached = exc
            self._files[path] = cached
        if isinstance(cached, BaselineError):
            raise cached
        return cached

    def local_file(self, fingerprint: dict[str, Any], hardware: str, model: str) -> BaselineFile:
        """This machine's own baseline file for a hardware/model (machine-local baselines must be on)."""
        from pytest_dsr1.hardware import machine_key

        assert self.local_directory is not None
        path = baseline_path(self.local_directory / machine_key(fingerprint), hardware, model)
        try:
            return load(path, hardware, model)
        except BaselineError as exc:
            # Nothing shared is lost by starting this machine's file again, but say so rather than overwrite it.
            raise BaselineError(
                path,
                "(machine-local baseline)",
                f"unusable ({exc})",
                f"delete {path} (this machine's own baseline; the next run records it again)",
            ) from None

    def write(self, path: Path, hardware: str, model: str, item_id: str, entry: Entry) -> tuple[Entry | None, Entry]:
        """Record one entry into `path` (a committed or a machine-local file). Returns (old, new)."""
        try:
            old_new = append_session(path, hardware, model, item_id, entry, self.keep, self.fresh)
        except OSError as exc:
            local = self.local_directory is not None and self.local_directory in path.parents
            option = "--dsr1-local-baselines" if local else "--dsr1-baselines"
            raise BaselineError(
                path,
                "(write)",
                f"cannot record {item_id}: {exc.strerror or exc}",
                f"make the directory writable and give it free space (or point {option} elsewhere); "
                "the file on disk is unchanged",
            ) from None
        self._files.pop(path, None)
        return old_new

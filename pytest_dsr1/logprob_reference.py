"""Logprob reference files: one JSON file per hardware/model beside its baseline (`<model>.logprobs.json`), holding
per config and machine kind the greedy generations a record run saw (logprobs.py). Numerics differ between
kernels, so each machine kind (hardware.machine_key) has its own reference, as speed baselines pool by kind.

Loaded with the baseline files' care: a corrupt or foreign file is a BaselineError naming the file, the field and
the fix, never a silent pass; a record writes under a lock, atomically.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_dsr1.baseline import LOCK_TIMEOUT_S, BaselineError, lock_path, read_json, write_atomic
from pytest_dsr1.logprobs import Generation, LogprobCheck

FORMAT = "pytest-dsr1 logprob reference"
VERSION = 1
REFERENCE_SUFFIX = ".logprobs.json"


def reference_path(directory: Path | str, hardware: str, model: str) -> Path:
    return Path(directory) / hardware / f"{model}{REFERENCE_SUFFIX}"


@dataclass(frozen=True)
class LogprobReference:
    """One config's reference on one machine kind."""

    date: str
    fingerprint: dict[str, Any]
    check: LogprobCheck | None  # the requests it answered (its drift bound is the matrix's); None: logprobs off
    generations: tuple[Generation, ...]
    gsm8k: tuple[float, int] | None = None  # (exact-match score, questions) where the GSM8K check ran

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"date": self.date, "fingerprint": self.fingerprint}
        if self.check is not None:
            out["check"] = {"prompts": self.check.prompts, "tokens": self.check.tokens, "top_k": self.check.top_k}
            out["generations"] = [g.to_json() for g in self.generations]
        if self.gsm8k is not None:
            out["gsm8k"] = {"score": self.gsm8k[0], "n": self.gsm8k[1]}
        return out


@dataclass
class ReferenceFile:
    path: Path
    hardware: str
    model: str
    configs: dict[str, dict[str, LogprobReference]] = field(default_factory=dict)  # config -> machine kind -> ref

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "hardware": self.hardware,
            "model": self.model,
            "configs": {
                cid: {kind: ref.to_json() for kind, ref in sorted(kinds.items())}
                for cid, kinds in sorted(self.configs.items())
            },
        }


def _fix(path: Path) -> str:
    return (
        f"restore it (git checkout -- {path}), or move it aside (mv {path} {path}.broken) and record the "
        "reference anew with --dsr1-record"
    )


def load(path: Path | str, hardware: str, model: str) -> ReferenceFile:
    """Load and validate; a missing file holds no reference (the check then says how to record one)."""
    path = Path(path)
    out = ReferenceFile(path, hardware, model)
    if not path.exists():
        return out
    fix = _fix(path)
    data = read_json(path, "a logprob reference", fix)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BaselineError(path, "format", f'not a {FORMAT} (expected "format": "{FORMAT}")', fix)
    if data.get("version") != VERSION:
        raise BaselineError(
            path,
            "version",
            f"unknown version {data.get('version')!r} (this pytest-dsr1 reads {VERSION})",
            "upgrade pytest-dsr1, or record the reference anew with --dsr1-record",
        )
    for key, want in (("hardware", hardware), ("model", model)):
        if data.get(key) != want:
            raise BaselineError(path, key, f"holds references for {key} {data.get(key)!r}, expected {want!r}", fix)
    configs = data.get("configs")
    if not isinstance(configs, dict):
        raise BaselineError(path, "configs", "missing or not an object", fix)
    for cid, kinds in configs.items():
        if not isinstance(kinds, dict):
            raise BaselineError(path, f"configs.{cid}", "not an object of machine kinds", fix)
        out.configs[cid] = {kind: _reference(path, f"configs.{cid}.{kind}", raw, fix) for kind, raw in kinds.items()}
    return out


def _reference(path: Path, where: str, raw: Any, fix: str) -> LogprobReference:
    try:
        check: LogprobCheck | None = None
        generations: tuple[Generation, ...] = ()
        if "check" in raw:
            c = raw["check"]
            check = LogprobCheck(int(c["prompts"]), int(c["tokens"]), int(c["top_k"]))
            generations = tuple(_generation(g) for g in raw["generations"])
        gsm8k = (float(raw["gsm8k"]["score"]), int(raw["gsm8k"]["n"])) if "gsm8k" in raw else None
        date, fingerprint = str(raw["date"]), dict(raw["fingerprint"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BaselineError(path, where, f"malformed reference ({type(exc).__name__}: {exc})", fix) from None
    if check is not None and (
        len(generations) != check.prompts or any(len(g.token_ids) != check.tokens for g in generations)
    ):
        raise BaselineError(path, where, f"holds other than {check.prompts} generations of {check.tokens} tokens", fix)
    if gsm8k is not None and not (0 <= gsm8k[0] <= 1 and gsm8k[1] >= 1):
        raise BaselineError(path, f"{where}.gsm8k", f"score {gsm8k[0]} over {gsm8k[1]} is not a proportion", fix)
    return LogprobReference(date, fingerprint, check, generations, gsm8k)


def _generation(raw: Any) -> Generation:
    ids = tuple(int(t) for t in raw["token_ids"])
    logprobs = tuple(float(v) for v in raw["logprobs"])
    top = []
    for position in raw["top"]:
        if len(position) % 2:
            raise ValueError("a top entry is not pairs of token id and logprob")
        top.append({int(tid): float(lp) for tid, lp in zip(position[::2], position[1::2], strict=True)})
    if not (len(ids) == len(logprobs) == len(top)):
        raise ValueError("token_ids, logprobs and top differ in length")
    return Generation(str(raw["prompt"]), ids, logprobs, tuple(top))


def _compact(data: dict[str, Any]) -> str:
    """JSON indented as usual, but each list of numbers on one line: a reference stays a few hundred lines."""
    text = json.dumps(data, indent=2)
    return re.sub(r"\[\s+([-0-9.e+,\s]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def write_reference(path: Path, hardware: str, model: str, config_id: str, kind: str, ref: LogprobReference) -> None:
    """Put one config's reference for one machine kind into the file (the rest kept), under its lock, atomically.
    An unreadable file is not overwritten: its BaselineError says how to restore it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(lock_path(path), timeout=LOCK_TIMEOUT_S):
            current = load(path, hardware, model)
            current.configs.setdefault(config_id, {})[kind] = ref
            data = current.to_json()
            write_atomic(path, data, text=_compact(data))
    except OSError as exc:
        raise BaselineError(
            path,
            "(write)",
            f"cannot record the logprob reference of {config_id}: {exc.strerror or exc}",
            "make the directory writable and give it free space (or point --dsr1-baselines elsewhere)",
        ) from None

"""What B changes against A (--dsr1-ab parts combined), B's config, and the ABBA order of the starts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from pytest_dsr1.command import REDACTED, is_secret_name
from pytest_dsr1.matrix import ServerConfig, apply_settings

Side = Literal["A", "B"]


DEFAULT_ROUNDS = 2  # ABBA twice: 4 starts per side


@dataclass(frozen=True)
class AbSpec:
    """What B changes against A."""

    python: str | None = None
    settings: tuple[tuple[str | None, str, str], ...] = ()  # (config id or None, setting, value), as --dsr1-set
    env: tuple[tuple[str, str], ...] = ()
    model: str | None = None  # a checkpoint (path or id) B serves instead of the config's model
    target: str | None = None  # B is a live endpoint (base URL) the suite did not start; A is --dsr1-target

    @property
    def label(self) -> str:
        """B's label in reports: what it changes, e.g. `max_num_seqs=4, VLLM_CPU_KVCACHE_SPACE=2`."""
        if self.target:
            return f"the target {self.target}"
        parts = [f"{t + ':' if t else ''}{k}={v}" for t, k, v in self.settings]
        parts += [f"{k}={REDACTED if is_secret_name(k) else v}" for k, v in self.env]
        if self.model:
            parts.append(f"model {self.model}")
        if self.python:
            parts.append(f"python {self.python}")
        return ", ".join(parts)


# One --dsr1-ab part, as options.parse_ab_part reads it: ("python", PATH), ("model", PATH), ("target", URL),
# ("set", (config, key, value)) or ("env", (name, value)).
AbPart = tuple[str, Any]


def ab_spec(parts: Sequence[AbPart]) -> AbSpec | None:
    """All --dsr1-ab parts combined into B (None: no A/B). A ValueError says what does not combine."""
    if not parts:
        return None
    pythons = {value for kind, value in parts if kind == "python"}
    if len(pythons) > 1:
        raise ValueError(
            f"--dsr1-ab: B can run one interpreter, not {len(pythons)} ({', '.join(sorted(pythons))}); "
            "give one python= part"
        )
    models = {value for kind, value in parts if kind == "model"}
    if len(models) > 1:
        raise ValueError(f"--dsr1-ab: B serves one checkpoint, not {len(models)} ({', '.join(sorted(models))})")
    targets = {value for kind, value in parts if kind == "target"}
    if targets:
        if len(parts) > 1:
            raise ValueError(
                "--dsr1-ab target=URL: B is a live endpoint, which the suite cannot change; give target= alone "
                "(one endpoint), without python=, model=, set= or env="
            )
        return AbSpec(target=next(iter(targets)))
    settings = tuple(value for kind, value in parts if kind == "set")
    env = tuple(value for kind, value in parts if kind == "env")
    values: dict[str, set[str]] = {}
    for name, value in env:
        values.setdefault(name, set()).add(value)
    clash = sorted(name for name, vals in values.items() if len(vals) > 1)
    if clash:
        raise ValueError(f"--dsr1-ab: env={clash[0]} is given different values; give it once")
    return AbSpec(next(iter(pythons), None), settings, env, next(iter(models), None))


def b_config(config: ServerConfig, spec: AbSpec) -> ServerConfig:
    """Config `config` as B runs it: B's settings that target it (or every config), B's environment on top, and B's
    checkpoint in place of the config's model (served and benchmarked under its own path)."""
    changed = apply_settings(config, spec.settings)
    if spec.model:
        changed = replace(changed, model=replace(changed.model, hf_id=spec.model))
    if spec.env:
        env = dict(changed.env)
        env.update(spec.env)
        changed = replace(changed, env=tuple(env.items()))
    return changed


def abba_order(rounds: int) -> list[Side]:
    """The order of the server starts (of the bursts, between two live endpoints): A B B A, `rounds` times. Within
    a round a linear drift hits both sides alike; across rounds, a step change does too."""
    order: list[Side] = []
    for _ in range(rounds):
        order += ["A", "B", "B", "A"]
    return order

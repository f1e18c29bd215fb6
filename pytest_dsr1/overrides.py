"""Settings the server did not take as written: vLLM logs where it forces or overrides a configured value (the CPU
platform turns chunked prefill and prefix caching off for MLA models and sets max_num_batched_tokens itself; the
MLA backends force a block size). A run that changed such a setting must say that its change did not take effect,
or a user reads the unchanged server's speed as the setting's. Pure: log text in, findings out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Override:
    """One override the server logged: the settings it overrode, and its own words."""

    settings: tuple[str, ...]
    said: str


# (what vLLM logs, the matrix settings it overrides): from vllm/platforms/cpu.py and vllm/platforms/cuda.py.
KNOWN: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (
        re.compile(r"MLA is enabled on a non-GPU platform; forcing chunked prefill and prefix caching to be disabled"),
        ("enable_chunked_prefill", "enable_prefix_caching", "max_num_batched_tokens"),
    ),
    (re.compile(r"requires block_size=\d+, overriding user-specified block_size=\d+"), ("block_size",)),
    (re.compile(r"Forcing kv cache block size to \d+[^.\n]*"), ("block_size",)),
)


def overrides_in(log_text: str) -> list[Override]:
    """Every known override the server's log holds, once each (the API server and each engine log it again)."""
    found: dict[str, Override] = {}
    for pattern, settings in KNOWN:
        match = pattern.search(log_text)
        if match:
            found.setdefault(match.group(0), Override(settings, match.group(0)))
    return list(found.values())


def override_notes(overrides: list[Override], given: Mapping[str, object], from_option: set[str]) -> list[str]:
    """What to tell the user: each override, and for each setting the run gave (`given`: the config's settings;
    `from_option`: those set with --dsr1-set) that an override touched, that it did not take effect as written."""
    notes = []
    for o in overrides:
        touched = [key for key in o.settings if key in given]
        if not touched:
            notes.append(f"vLLM: {o.said}")
            continue
        named = ", ".join(
            f"{key}={given[key]}" + (" (--dsr1-set)" if key in from_option else " (the matrix)") for key in touched
        )
        notes.append(f"vLLM overrode {named}: {o.said}; the setting did not take effect as written")
    return notes

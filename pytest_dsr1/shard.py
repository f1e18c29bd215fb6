"""Shards of a run (--dsr1-shard K/N): whole configs per shard, balanced by expected time.

A config's items never split across shards, since each shard that runs a config pays for its server start
(minutes on the real model). Configs are placed longest first on the shard with the least expected time so far
(LPT, as SGLang's nightly partitions its suite), ties broken by config id and shard number, so every shard
process computes the same split from the same selection and the same baselines.

The expected time of an item comes from its baseline where one was recorded (the recorded output throughput
gives the time per run: requests x output tokens / throughput), and from a rough model of the workload
otherwise. No pytest and no vLLM here.
"""

from __future__ import annotations

import argparse
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_dsr1.matrix import ServerConfig, Workload

# Rough cost model for items with no baseline, per hardware kind: seconds per decode step at a small batch
# (growing with the batch), prefill tokens per second, and a server start. Only the balance uses these.
STEP_S = {"gpu": 0.03, "cpu": 0.012}
PREFILL_TOK_S = {"gpu": 40_000.0, "cpu": 4_000.0}
STARTUP_S = {"gpu": 600.0, "cpu": 90.0}
GENERATED_GPU_STARTUP_S = 150.0  # the tiny model on a GPU: no weights to load, but compilation and CUDA graphs


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N), 1 <= K <= N; an argparse type, so a bad value is a usage error."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: write K/N, e.g. 2/3 for the second of three shards")
    k, n = int(match[1]), int(match[2])
    if n < 1 or not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"{text!r}: K must be between 1 and N, e.g. 1/{max(n, 1)}")
    return k, n


def _flag(command: str, flag: str) -> float | None:
    match = re.search(rf"{re.escape(flag)}[ =](\d+(?:\.\d+)?)", command)
    return float(match[1]) if match else None


def recorded_run_s(bench_command: str, throughput_samples: Sequence[float]) -> float | None:
    """One measured run's seconds from a baseline entry: its requests x output tokens / output throughput."""
    prompts, output = _flag(bench_command, "--num-prompts"), _flag(bench_command, "--random-output-len")
    if not prompts or not output or not throughput_samples:
        return None
    tput = statistics.median(throughput_samples)
    return prompts * output / tput if tput > 0 else None


def modelled_run_s(config: ServerConfig, workload: Workload) -> float:
    """One measured run's seconds from the workload alone: its batches, each a prefill and a decode."""
    kind = config.hardware.kind
    batches = max(1, config.hardware.batches_per_sample)
    step = STEP_S[kind] * (1 + workload.batch_size / 256)
    prefill = workload.input_len * workload.batch_size / PREFILL_TOK_S[kind]
    return batches * (prefill + workload.output_len * step)


def startup_s(config: ServerConfig) -> float:
    if config.hardware.kind == "gpu" and config.model.generated:
        return GENERATED_GPU_STARTUP_S
    return STARTUP_S[config.hardware.kind]


@dataclass(frozen=True)
class ItemCost:
    item_id: str
    seconds: float
    source: str  # "baseline", "model" or "skipped" (the matrix skips its config)


@dataclass
class Plan:
    """Which shard runs each config, and the expected seconds of each shard (start-ups included)."""

    count: int
    shard_of: dict[str, int] = field(default_factory=dict)  # config id -> shard, from 1
    expected_s: list[float] = field(default_factory=list)  # per shard, index 0 is shard 1
    config_s: dict[str, float] = field(default_factory=dict)
    items: dict[str, list[ItemCost]] = field(default_factory=dict)  # config id -> its items, in collection order

    def configs_of(self, shard: int) -> list[str]:
        return [c for c, s in self.shard_of.items() if s == shard]

    def items_of(self, shard: int) -> list[str]:
        return [i.item_id for c in self.configs_of(shard) for i in self.items[c]]

    def describe(self, shard: int) -> str:
        minutes = " / ".join(f"{s / 60:.0f}" for s in self.expected_s)
        sources = [i.source for its in self.items.values() for i in its]
        known, modelled = sources.count("baseline"), sources.count("model")
        return (
            f"shard {shard}/{self.count}: {len(self.configs_of(shard))} config(s), {len(self.items_of(shard))} "
            f"item(s), expected {self.expected_s[shard - 1] / 60:.0f} min (shards: {minutes} min; item times: "
            f"{known} from baselines, {modelled} modelled)"
        )


def plan(
    configs: Mapping[str, ServerConfig],
    items: Mapping[str, Sequence[tuple[str, Workload, float | None]]],
    count: int,
) -> Plan:
    """Place whole configs on `count` shards, longest first onto the least loaded (LPT).

    `items`: config id -> (item id, workload, recorded seconds per run or None), in collection order."""
    out = Plan(count, expected_s=[0.0] * count)
    for cid, its in items.items():
        config = configs[cid]
        runs = config.hardware.repeat + 1  # the measured runs and the warm-up (about one run's worth)
        costs = []
        for item_id, workload, recorded in its:
            if config.skip or config.nodes > 1:  # skipped on every host (the matrix, or a multi-node config)
                costs.append(ItemCost(item_id, 0.0, "skipped"))
            elif recorded is not None:
                costs.append(ItemCost(item_id, runs * recorded, "baseline"))
            else:
                costs.append(ItemCost(item_id, runs * modelled_run_s(config, workload), "model"))
        out.items[cid] = costs
        skipped = config.skip or config.nodes > 1
        out.config_s[cid] = (0.0 if skipped else startup_s(config)) + sum(c.seconds for c in costs)
    for cid in sorted(out.config_s, key=lambda c: (-out.config_s[c], c)):
        target = min(range(count), key=lambda i: (out.expected_s[i], i))
        out.shard_of[cid] = target + 1
        out.expected_s[target] += out.config_s[cid]
    out.shard_of = {c: out.shard_of[c] for c in items}  # collection order, for reading
    return out


def plan_json(split: Plan, shard: int) -> dict[str, Any]:
    """The shard's part of results.json: which shard this is and the whole plan, so that a merge can name every
    planned item that no shard reported."""
    return {
        "index": shard,
        "count": split.count,
        "expected_s": [round(s, 1) for s in split.expected_s],
        "configs": {c: {"shard": s, "expected_s": round(split.config_s[c], 1)} for c, s in split.shard_of.items()},
        "items": {i.item_id: split.shard_of[c] for c, its in split.items.items() for i in its},
    }

"""--dsr1-shard K/N: whole configs per shard, every item in exactly one shard, balanced by expected time."""

from __future__ import annotations

import argparse
import re
from typing import Any

import pytest
from helpers import MATRIX
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_dsr1.matrix import ServerConfig, item_key, load_matrix
from pytest_dsr1.shard import modelled_run_s, parse_shard, plan, recorded_run_s

RECIPE = load_matrix(MATRIX)


def _unrecorded_items(configs: dict[str, ServerConfig]) -> dict[str, Any]:
    """Each config's items as plan() takes them: (key, workload, no recorded run time)."""
    return {cid: [(item_key(cid, w.id), w, None) for w in RECIPE.workloads_for(c)] for cid, c in configs.items()}


def _selection(model: str, hardware: str) -> tuple[dict[str, Any], dict[str, Any]]:
    configs = {c.id: c for c in RECIPE.configs if c.model.name == model and c.hardware.name == hardware}
    return configs, _unrecorded_items(configs)


@pytest.mark.parametrize("n", [1, 2, 3, 6, 7])
def test_every_item_in_exactly_one_shard_and_configs_whole(n):
    configs, items = _selection("fp8", "h200")
    split = plan(configs, items, n)
    shards = [split.items_of(k) for k in range(1, n + 1)]
    every = [i for cid in items for i, _, _ in items[cid]]
    assert sorted(i for s in shards for i in s) == sorted(every)  # union, and no item twice (disjoint)
    for cid, its in items.items():  # a config's items all sit in its one shard
        holders = {k for k, s in enumerate(shards, 1) for i, _, _ in its if i in s}
        assert holders == {split.shard_of[cid]}
    assert sum(split.expected_s) == pytest.approx(sum(split.config_s.values()))


def test_the_recipe_fp8_matrix_balances_its_six_configs():
    configs, items = _selection("fp8", "h200")
    assert len(configs) == 6 and sum(map(len, items.values())) == 126
    for n in (2, 3, 6):
        split = plan(configs, items, n)
        # LPT: no shard exceeds the least loaded by more than the longest config.
        assert max(split.expected_s) - min(split.expected_s) <= max(split.config_s.values()) + 1e-9
        assert all(len(split.configs_of(k)) == 6 // n for k in range(1, n + 1))


def test_longest_first_onto_the_least_loaded_shard():
    configs, items = _selection("fp8", "h200")
    # Make one config far longer (recorded: 10x slower runs): it takes a shard alone.
    long_id = sorted(configs)[0]
    items[long_id] = [(i, w, 10 * modelled_run_s(configs[long_id], w)) for i, w, _ in items[long_id]]
    split = plan(configs, items, 2)
    assert split.configs_of(split.shard_of[long_id]) == [long_id]
    assert {i.source for i in split.items[long_id]} == {"baseline"}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=0.1, max_value=1e4), min_size=1, max_size=12), st.integers(1, 8))
def test_split_is_deterministic_and_bounded(seconds, n):
    """Any config times: the same inputs give the same split, and LPT's bound holds (max - min <= longest)."""
    config = next(c for c in RECIPE.configs if c.hardware.kind == "gpu")
    wl = RECIPE.workloads_for(config)[0]
    configs = {f"c{i}": config for i in range(len(seconds))}
    items = {f"c{i}": [(item_key(f"c{i}", "x"), wl, s)] for i, s in enumerate(seconds)}
    a, b = plan(configs, items, n), plan(dict(reversed(configs.items())), dict(reversed(items.items())), n)
    assert a.shard_of == {k: b.shard_of[k] for k in a.shard_of}
    if len(seconds) >= n:
        assert max(a.expected_s) - min(a.expected_s) <= max(a.config_s.values()) + 1e-6


def test_a_config_the_matrix_skips_costs_nothing():
    configs = {c.id: c for c in RECIPE.configs if c.hardware.name == "cpu"}
    skipped = [cid for cid, c in configs.items() if c.skip]
    assert skipped, "the CPU matrix skips expert parallelism"
    split = plan(configs, _unrecorded_items(configs), 2)
    assert all(split.config_s[cid] == 0 for cid in skipped)


def test_recorded_run_time_comes_from_the_baselines_throughput():
    cmd = "vllm bench serve --random-output-len 31 --num-prompts 32 --max-concurrency 16"
    assert recorded_run_s(cmd, [1000.0, 992.0, 1100.0]) == pytest.approx(32 * 31 / 1000.0)
    assert recorded_run_s("vllm bench serve", [1000.0]) is None  # no load in the command: modelled instead
    assert recorded_run_s(cmd, []) is None


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2"])
def test_a_bad_shard_is_a_usage_error_that_shows_the_form(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"K/N|between 1 and N"):
        parse_shard(text)
    assert parse_shard(" 2 / 3 ") == (2, 3)


def _collected(result: pytest.RunResult) -> list[str]:
    return sorted(re.findall(r"test_serving\[([^\]]+)\]", result.stdout.str()))


def test_collect_only_shows_each_shards_items_and_the_shards_cover_the_selection(suite):
    """Real collection (pytester): three shard processes of -m h200 --dsr1-model fp8 take every item once."""
    base = ["-m", "h200", "--dsr1-model", "fp8", "--collect-only", "-q", "-p", "no:cacheprovider"]
    whole = _collected(suite.runpytest(*base))
    assert len(whole) == 126
    parts = []
    for k in (1, 2, 3):
        result = suite.runpytest(*base, "--dsr1-shard", f"{k}/3")
        assert result.ret == 0
        result.stdout.fnmatch_lines([f"dsr1: shard {k}/3: 2 config(s), 42 item(s), expected * min (shards: *"])
        parts.append(_collected(result))
    assert sorted(i for p in parts for i in p) == whole
    for p in parts:
        configs = {re.sub(r"-(prompt_heavy|decode_heavy|balanced)-bs\d+$", "", i) for i in p}
        assert len(configs) == 2  # whole configs


def test_dry_run_of_a_shard_prints_only_its_commands(suite):
    result = suite.runpytest("-m", "h200", "--dsr1-model", "fp8", "--dsr1-dry-run", "--dsr1-shard", "2/6", "-q")
    out = result.stdout.str()
    assert "dsr1: shard 2/6: 1 config(s), 21 item(s)" in out
    assert len(re.findall(r"^# h200-fp8-\S+: h200, ", out, re.M)) == 1, out[-3000:]  # one config, its server once
    assert len(re.findall(r"^  \[\S+\] vllm bench serve ", out, re.M)) == 21, out[-3000:]


def test_a_bad_shard_option_is_a_usage_error(suite):
    result = suite.runpytest("-m", "h200", "--dsr1-model", "fp8", "--collect-only", "--dsr1-shard", "4/3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--dsr1-shard*'4/3': K must be between 1 and N*"])

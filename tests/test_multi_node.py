"""Configs that span nodes (`nodes: 2`): validation, one `vllm serve` per node, the dry run, and the gating."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from helpers import MATRIX

from pytest_dsr1.command import node_commands
from pytest_dsr1.hardware import Host, skip_reason
from pytest_dsr1.matrix import MatrixError, load_matrix

TWO_NODES = """
configs:
  h200-fp8-dp16ep-2node:
    hardware: h200
    model: fp8
    data_parallel_size: 16
    enable_expert_parallel: true
    nodes: 2
    env: {VLLM_ALL2ALL_BACKEND: deepep_low_latency}
"""


def _layer(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "multi-node.yaml"
    path.write_text(text)
    return path


def test_a_two_node_config_gets_one_command_per_node(tmp_path):
    matrix = load_matrix(MATRIX, _layer(tmp_path, TWO_NODES))
    config = matrix.config("h200-fp8-dp16ep-2node")
    assert (config.nodes, config.gpus, config.gpus_per_node) == (2, 16, 8)
    leader, follower = node_commands(config, "deepseek-ai/DeepSeek-R1", leader="10.0.0.1", rpc_port=13345)
    lead = shlex.split(leader.shell_line())
    follow = shlex.split(follower.shell_line())
    assert lead[:4] == ["VLLM_ALL2ALL_BACKEND=deepep_low_latency", "vllm", "serve", "deepseek-ai/DeepSeek-R1"]
    for argv in (lead, follow):  # both: the whole DP size, 8 local ranks, the leader's address and RPC port
        text = " ".join(argv)
        assert "--data-parallel-size 16 " in text and "--data-parallel-size-local 8 " in text
        assert "--data-parallel-address 10.0.0.1 " in text and "--data-parallel-rpc-port 13345" in text
        assert "--enable-expert-parallel" in argv
    assert "--headless" not in lead and "--port" in lead  # node 0 serves the API
    assert "--headless" in follow and "--port" not in follow and "--host" not in follow
    assert follow[follow.index("--data-parallel-start-rank") + 1] == "8"


def test_a_multi_node_config_is_skipped_on_one_host_with_what_it_needs(tmp_path):
    config = load_matrix(MATRIX, _layer(tmp_path, TWO_NODES)).config("h200-fp8-dp16ep-2node")
    reason = skip_reason(config, Host())
    assert reason is not None and "needs 2 nodes of 8× H200" in reason and "--dsr1-dry-run" in reason


@pytest.mark.parametrize(
    "spec,field,fix",
    [
        ("data_parallel_size: 3\n    nodes: 2", "nodes", "set data_parallel_size to a multiple of 2"),
        ("data_parallel_size: 4\n    nodes: 0", "nodes", ""),
    ],
    ids=["DP does not split", "zero nodes"],
)
def test_a_bad_node_count_names_the_field_and_the_fix(tmp_path, spec, field, fix):
    text = f"configs:\n  bad:\n    hardware: h200\n    model: fp8\n    {spec}\n"
    with pytest.raises(MatrixError, match=rf"configs\.bad\.{field}") as exc:
        load_matrix(MATRIX, _layer(tmp_path, text))
    assert fix in str(exc.value)


def test_a_cpu_config_cannot_span_nodes(tmp_path):
    text = "configs:\n  cpu-x:\n    hardware: cpu\n    model: tiny\n    data_parallel_size: 2\n    nodes: 2\n"
    with pytest.raises(MatrixError, match=r"configs\.cpu-x\.nodes.*runs on one host.*set nodes to 1"):
        load_matrix(MATRIX, _layer(tmp_path, text))


def test_the_dry_run_prints_each_nodes_command(suite):
    (suite.path / "test_matrix" / "multi-node.yaml").write_text(TWO_NODES)
    result = suite.runpytest("-m", "h200", "--dsr1-model", "fp8", "--dsr1-dry-run", "-k", "dp16ep-2node", "-q")
    out = result.stdout.str()
    assert "# node 0 (API server):" in out and "# node 1 (headless):" in out, out[-3000:]
    assert "--headless" in out and "--data-parallel-start-rank 8" in out

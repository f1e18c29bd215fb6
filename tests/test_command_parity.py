"""The generated commands equal the recipe's, token for token, plus only the flags the suite adds on purpose."""

from __future__ import annotations

import shlex

import pytest
from helpers import MATRIX

from pytest_dsr1.command import VLLM_CLI, bench_command, server_command
from pytest_dsr1.matrix import load_matrix

MATRIX_ = load_matrix(MATRIX)

# Copied from the vLLM recipe for DeepSeek-R1/V3 (backslash continuations joined): its four `vllm serve` lines and
# the environments its configs run them in.
FP8_TP = "vllm serve deepseek-ai/DeepSeek-R1-0528 --trust-remote-code --tensor-parallel-size 8 --enable-expert-parallel"
FP8_DP = "vllm serve deepseek-ai/DeepSeek-R1-0528 --trust-remote-code --data-parallel-size 8 --enable-expert-parallel"
FP4_TP = "vllm serve nvidia/DeepSeek-R1-FP4 --trust-remote-code --tensor-parallel-size 4 --enable-expert-parallel"
FP4_DP = "vllm serve nvidia/DeepSeek-R1-FP4 --trust-remote-code --data-parallel-size 4 --enable-expert-parallel"
DEEP_GEMM_HT = {"VLLM_USE_DEEP_GEMM": "1", "VLLM_ALL2ALL_BACKEND": "deepep_high_throughput"}
DEEP_GEMM_LL = {"VLLM_USE_DEEP_GEMM": "1", "VLLM_ALL2ALL_BACKEND": "deepep_low_latency"}
B200_FP8 = {"VLLM_ATTENTION_BACKEND": "CUTLASS_MLA", "VLLM_USE_FLASHINFER_MOE_FP8": "1"}
B200_FP4 = {
    "VLLM_ATTENTION_BACKEND": "CUTLASS_MLA",
    "VLLM_USE_FLASHINFER_MOE_FP4": "1",
    "CUDA_VISIBLE_DEVICES": "0,1,2,3",
}
RECIPE_SERVER: dict[str, tuple[dict[str, str], str]] = {
    "h200-fp8-tp8ep": ({}, FP8_TP),
    "h200-fp8-dp8ep": ({}, FP8_DP),
    "h200-fp8-tp8ep-deepgemm-ht": (DEEP_GEMM_HT, FP8_TP),
    "h200-fp8-dp8ep-deepgemm-ll": (DEEP_GEMM_LL, FP8_DP),
    "b200-fp8-tp8ep": (B200_FP8, FP8_TP),
    "b200-fp8-dp8ep": (B200_FP8, FP8_DP),
    "b200-fp4-tp4ep": (B200_FP4, FP4_TP),
    "b200-fp4-dp4ep": (B200_FP4, FP4_DP),
}
# The flags the suite adds on purpose to the recipe's server command: benchmarks must not hit the prefix cache (the
# recipe says so), and the harness owns the address.
SUITE_SERVER_FLAGS = ("--no-enable-prefix-caching", "--host", "--port")
ADDED = ["--no-enable-prefix-caching", "--host", "127.0.0.1", "--port", "8000"]
assert [t for t in ADDED if t.startswith("--")] == list(SUITE_SERVER_FLAGS)


@pytest.mark.parametrize("config_id", sorted(RECIPE_SERVER))
def test_server_command_is_the_recipes(config_id):
    env, line = RECIPE_SERVER[config_id]
    config = MATRIX_.config(config_id)
    cmd = server_command(config, config.model.hf_id, "127.0.0.1", 8000)
    assert cmd.display_argv == shlex.split(line) + ADDED
    assert dict(cmd.env) == env


@pytest.mark.parametrize("config", MATRIX_.configs, ids=lambda c: c.id)
def test_every_config_gets_only_the_suite_flags_last(config):
    """Every config, not only the recipe's: the command ends with the suite's flags and their values, and no
    other flag of theirs appears before them."""
    argv = server_command(config, config.model.hf_id, "127.0.0.1", 8000).display_argv
    assert argv[-len(ADDED) :] == ADDED
    assert not set(SUITE_SERVER_FLAGS) & set(argv[: -len(ADDED)])


@pytest.mark.parametrize("config", MATRIX_.configs, ids=lambda c: c.id)
def test_what_runs_is_what_is_printed(config):
    """Every config, the DP ones included: the started argv is the printed `vllm serve` line with the `vllm`
    console script replaced by the interpreter running its entry point (vllm.entrypoints.cli.main:main)."""
    cmd = server_command(config, config.model.hf_id, "127.0.0.1", 8000)
    printed = shlex.split(cmd.shell_line())
    printed = printed[len(cmd.env) :]  # the env assignments come first
    assert printed[:2] == ["vllm", "serve"]
    assert cmd.exec_argv("/venv/bin/python") == ["/venv/bin/python", "-c", VLLM_CLI, *printed[1:]]
    assert "from vllm.entrypoints.cli.main import main" in VLLM_CLI


RECIPE_BENCH = {
    "fp8": "vllm bench serve --model deepseek-ai/DeepSeek-R1-0528 --dataset-name random --random-input-len 8000 "
    "--random-output-len 1000 --request-rate 10000 --num-prompts 16 --ignore-eos",
    "fp4": "vllm bench serve --model nvidia/DeepSeek-R1-FP4 --dataset-name random --random-input-len 8000 "
    "--random-output-len 1000 --request-rate 10000 --num-prompts 16 --ignore-eos",
}
BENCH_ADDED = [
    "--random-range-ratio",
    "0.0",
    "--seed",
    "0",
    "--num-warmups",
    "4",
    "--host",
    "127.0.0.1",
    "--port",
    "8000",
]


@pytest.mark.parametrize("model", ["fp8", "fp4"])
def test_bench_command_is_the_recipes(model):
    config = next(c for c in MATRIX_.configs if c.model.name == model)
    wl = next(w for w in MATRIX_.workloads_for(config) if w.id == "prompt_heavy-bs16")
    cmd = bench_command(config.model.hf_id, wl, MATRIX_.benchmark, "127.0.0.1", 8000)
    assert cmd.display_argv == shlex.split(RECIPE_BENCH[model]) + BENCH_ADDED


def test_tunables_become_flags_and_num_prompts_is_the_batch_size():
    from pytest_dsr1.matrix import apply_settings

    config = apply_settings(
        MATRIX_.config("h200-fp8-tp8ep"),
        [
            (None, "max_model_len", "65536"),
            ("h200-fp8-tp8ep", "max_num_batched_tokens", "32768"),
            ("other", "gpu_memory_utilization", "0.95"),
        ],
    )
    argv = server_command(config, config.model.hf_id).display_argv
    assert argv[argv.index("--max-model-len") + 1] == "65536"
    assert argv[argv.index("--max-num-batched-tokens") + 1] == "32768"
    assert "--gpu-memory-utilization" not in argv
    for wl in MATRIX_.workloads_for(config):
        a = bench_command("m", wl, MATRIX_.benchmark).display_argv
        assert a[a.index("--num-prompts") + 1] == str(wl.batch_size)


def test_config_values_reach_argv_literally_never_a_shell():
    """A value with ;, $(...) and backticks stays one argv token, and the shell line quotes it."""
    from dataclasses import replace

    nasty = "x; rm -rf / $(touch /tmp/pwned) `id`"
    config = replace(MATRIX_.config("cpu-tiny-tp1"), extra_args=("--served-model-name", nasty), env=(("X", nasty),))
    cmd = server_command(config, "/m")
    assert nasty in cmd.exec_argv("python")
    assert shlex.split(cmd.shell_line())[-len(cmd.display_argv) + 0 :][-9:] == cmd.display_argv[-9:]
    assert f"X={shlex.quote(nasty)}" in cmd.shell_line()


def test_api_key_goes_through_the_environment_and_is_redacted():
    cmd = server_command(MATRIX_.config("cpu-tiny-tp1"), "/m", api_key="sekrit-123")
    assert "sekrit-123" not in " ".join(cmd.exec_argv("python"))  # not in argv, which `ps` shows to everyone
    assert dict(cmd.env)["VLLM_API_KEY"] == "sekrit-123"
    assert "sekrit-123" not in cmd.shell_line() and "VLLM_API_KEY=*** vllm serve" in cmd.shell_line()


def test_warmup_at_concurrency_on_the_cpu_matrix_only():
    cpu = MATRIX_.config("cpu-tiny-tp1")
    wl = next(w for w in MATRIX_.workloads_for(cpu) if w.batch_size == 16)
    a = bench_command("m", wl, MATRIX_.benchmark, at_concurrency=cpu.warmup_at_concurrency).display_argv
    assert cpu.warmup_at_concurrency and a[a.index("--num-warmups") + 1] == "16"
    gpu = MATRIX_.config("h200-fp8-tp8ep")
    wl = next(w for w in MATRIX_.workloads_for(gpu) if w.batch_size == 512)
    a = bench_command("m", wl, MATRIX_.benchmark, at_concurrency=gpu.warmup_at_concurrency).display_argv
    assert not gpu.warmup_at_concurrency and a[a.index("--num-warmups") + 1] == "4"


def test_batches_per_sample_sends_more_batches_at_the_same_concurrency():
    wl = next(w for w in MATRIX_.workloads_for(MATRIX_.config("cpu-tiny-tp1")) if w.batch_size == 16)
    a = bench_command("m", wl, MATRIX_.benchmark, batches=4).display_argv
    assert a[a.index("--num-prompts") + 1] == "64" and a[a.index("--max-concurrency") + 1] == "16"
    # One batch is the recipe's command: no concurrency cap is added.
    assert "--max-concurrency" not in bench_command("m", wl, MATRIX_.benchmark).display_argv
    assert MATRIX_.config("h200-fp8-tp8ep").batches_per_sample == 1

"""The plugin through pytest itself (pytester): options, collection, ids, markers, dry run, gating, usage errors.

None of these start vLLM: the CPU machine has no GPU, so the GPU items skip, and dry runs start nothing.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import CAUGHT_AT_START_UP, CAUGHT_WHEN_COLLECTION_ENDS, REPO, bad_input


def usage_error(suite: pytest.Pytester, *args: str, stderr: str) -> pytest.RunResult:
    """pytest with `args` in the `suite` project, which must stop with a usage error (exit 4) and a line on stderr
    that matches `stderr` (fnmatch)."""
    result = suite.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([stderr])
    return result


def test_help_lists_options(suite):
    out = suite.runpytest("--help").stdout.str()
    for opt in (
        "--dsr1-model",
        "--dsr1-record",
        "--dsr1-baselines",
        "--dsr1-matrix",
        "--dsr1-dry-run",
        "--dsr1-tolerance",
        "--dsr1-set",
        "--dsr1-repeat",
        "--dsr1-confirm",
        "--dsr1-api-key",
        "--dsr1-report",
    ):
        assert opt in out
    for ini in ("dsr1_model", "dsr1_record", "dsr1_baselines", "dsr1_matrix", "dsr1_tolerance", "dsr1_set"):
        assert ini in out


@pytest.mark.parametrize(
    "args, count",
    [
        (["-m", "h200", "--dsr1-model", "fp8"], 126),  # 6 configs x 3 workloads x 7 batch sizes
        (["-m", "b200", "--dsr1-model", "fp8"], 42),
        (["-m", "b200", "--dsr1-model", "fp4"], 84),
        (["-m", "cpu", "--dsr1-model", "tiny"], 18),  # 3 configs x 3 workloads x 2 batch sizes
        (["-m", "h200", "--dsr1-model", "tiny"], 36),  # 4 configs x 3 workloads x 3 batch sizes
        (["-m", "h200 and tp and not dp", "--dsr1-model", "fp8"], 63),
        (["-m", "h200 and prompt_heavy", "--dsr1-model", "fp8"], 42),
        (["-m", "fp4 and ep and dp"], 42),
    ],
)
def test_item_counts_per_selection(suite, args, count):
    result = suite.runpytest("--collect-only", "-q", *args, "test_matrix")
    result.assert_outcomes()
    ids = [line for line in result.stdout.lines if "::test_serving[" in line]
    assert len(ids) == count, result.stdout.str()[-2000:]


def test_ids_read_like_the_recipe(suite):
    result = suite.runpytest("--collect-only", "-q", "-m", "h200", "--dsr1-model", "fp8", "test_matrix")
    result.stdout.fnmatch_lines(
        [
            "test_matrix/test_serving.py::test_serving[h200-fp8-tp8ep-prompt_heavy-bs1]",
            "test_matrix/test_serving.py::test_serving[h200-fp8-dp8ep-deepgemm-ll-balanced-bs512]",
        ]
    )


def test_items_are_grouped_by_server(suite):
    """pytest orders items so that each server config is contiguous: one start per config."""
    result = suite.runpytest("--collect-only", "-q", "--dsr1-model", "fp4", "test_matrix")
    configs = [line.split("[")[1].rsplit("-", 2)[0] for line in result.stdout.lines if "::test_serving[" in line]
    runs = [c for i, c in enumerate(configs) if i == 0 or configs[i - 1] != c]
    assert len(runs) == len(set(runs)) == 4


def test_markers_work_under_strict_markers(suite):
    result = suite.runpytest("--strict-markers", "--markers")
    for m in (
        "h200:",
        "b200:",
        "cpu:",
        "fp8:",
        "fp4:",
        "bf16:",
        "tp:",
        "dp:",
        "ep:",
        "prompt_heavy:",
        "decode_heavy:",
        "balanced:",
    ):
        result.stdout.fnmatch_lines([f"@pytest.mark.{m}*"])


@bad_input("--dsr1-model that is not in the matrix", CAUGHT_AT_START_UP)
def test_bad_model_is_a_usage_error_listing_choices(suite, observed):
    stderr = "*--dsr1-model 'fp16' is not in the matrix*choose one of: fp8, fp4, tiny*"
    result = usage_error(suite, "--dsr1-model", "fp16", "test_matrix", stderr=stderr)
    observed(f"exit {int(result.ret)}: " + next(line for line in result.stderr.lines if "fp16" in line))


@bad_input("bad option value", CAUGHT_AT_START_UP, per_param=True)
@pytest.mark.parametrize(
    "args, message",
    [
        (["--dsr1-tolerance", "mean_ttft_ms=fast"], "*bad tolerance 'fast'*"),
        (["--dsr1-tolerance", "nosuch=10%"], "*unknown metric 'nosuch'*"),
        (["--dsr1-repeat", "0"], "*must be at least 1*"),
        (["--dsr1-set", "max_modl_len=5"], "*unknown setting 'max_modl_len'*"),
        (["--dsr1-set", "nosuch:max_model_len=5"], "*no config 'nosuch' in the matrix*"),
        (["--dsr1-alpha", "2"], "*between 0 and 1*"),
        (["--dsr1-missing-baseline", "maybe"], "*skip, fail*"),
        (["--dsr1-tolerance", "*=999%"], "*can never fail*"),
        (["--dsr1-tolerance", "output_throughput=100%"], "*can never fail*"),
        (["--dsr1-set", "max_num_seqs=0"], "*max_num_seqs must be a positive integer*"),
        (["--dsr1-startup-timeout", "inf"], "*not a finite number*"),
        (["--dsr1-ab", "max_num_seqs=4"], "*B changes python=PATH, model=PATH, set=*"),
        (["--dsr1-ab", "set=nosuch:max_model_len=5"], "*--dsr1-ab set=nosuch:max_model_len: no config 'nosuch'*"),
        (["--dsr1-ab", "set=max_num_seqs=4", "--dsr1-record"], "*writes no baseline: leave out --dsr1-record*"),
        (["--dsr1-ab", "python=/a/python", "--dsr1-ab", "python=/b/python"], "*B can run one interpreter*"),
        (["--dsr1-ab", "python=/no/such/python"], "*--dsr1-ab python=/no/such/python: no such executable*"),
        (["--dsr1-ab-rounds", "0"], "*must be at least 1*"),
    ],
    ids=[
        "--dsr1-tolerance mean_ttft_ms=fast",
        "--dsr1-tolerance nosuch=10%",
        "--dsr1-repeat 0",
        "--dsr1-set max_modl_len=5",
        "--dsr1-set nosuch:max_model_len=5",
        "--dsr1-alpha 2",
        "--dsr1-missing-baseline maybe",
        "--dsr1-tolerance *=999%",
        "--dsr1-tolerance output_throughput=100%",
        "--dsr1-set max_num_seqs=0",
        "--dsr1-startup-timeout inf",
        "--dsr1-ab max_num_seqs=4",
        "--dsr1-ab set=nosuch:max_model_len=5",
        "--dsr1-ab with --dsr1-record",
        "--dsr1-ab python twice",
        "--dsr1-ab python=/no/such/python",
        "--dsr1-ab-rounds 0",
    ],
)
def test_bad_option_values_are_usage_errors(suite, args, message, observed):
    result = usage_error(suite, *args, "test_matrix", stderr=message)
    observed(f"exit {int(result.ret)}: " + next(line for line in result.stderr.lines if "error" in line.lower()))


@bad_input("bad tolerance expression in the ini file", CAUGHT_AT_START_UP)
def test_bad_ini_value_is_a_usage_error(suite, observed):
    suite.makeini("[pytest]\ndsr1_tolerance =\n    mean_ttft_ms=lots\n")
    result = usage_error(suite, "test_matrix", stderr="*ini key dsr1_tolerance*bad tolerance 'lots'*")
    observed(f"exit {int(result.ret)}: " + next(line for line in result.stderr.lines if "lots" in line))


def test_ini_keys_select_like_options(suite):
    suite.makeini("[pytest]\ndsr1_model = fp4\n")
    result = suite.runpytest("--collect-only", "-q", "test_matrix")
    assert sum("::test_serving[" in line for line in result.stdout.lines) == 84
    # The command line wins over the ini file.
    result = suite.runpytest("--collect-only", "-q", "--dsr1-model", "tiny", "test_matrix")
    assert sum("::test_serving[" in line for line in result.stdout.lines) == 54  # 18 CPU + 36 H200 tiny items


@bad_input("a path option that cannot work", CAUGHT_AT_START_UP, per_param=True)
@pytest.mark.parametrize(
    "option, value, error",
    [
        ("--dsr1-python", "/nonexistent/python", "--dsr1-python /nonexistent/python: no such executable"),
        ("--dsr1-report", "/proc/dsr1-report", "--dsr1-report /proc/dsr1-report: cannot create it"),
        ("--dsr1-report", "/etc/hostname", "--dsr1-report /etc/hostname: not a directory"),
        ("--dsr1-matrix", "/dev/zero", "/dev/zero: (file): is neither a regular file nor a directory*Fix:*"),
        ("--dsr1-baselines", "/dev/null", "--dsr1-baselines /dev/null: not a directory*"),
        ("--dsr1-python", "/bin/false", "--dsr1-python: /bin/false exited with 1 when asked for its vLLM version*"),
        ("--dsr1-python", "/bin/true", "--dsr1-python: /bin/true runs, but has no vLLM*"),
        ("--dsr1-ab", "python=/bin/true", "--dsr1-ab python=/bin/true: /bin/true runs, but has no vLLM*"),
    ],
    ids=[
        "--dsr1-python /nonexistent/python",
        "--dsr1-report in a read-only place",
        "--dsr1-report naming a file",
        "--dsr1-matrix /dev/zero (a device: it was read forever)",
        "--dsr1-baselines /dev/null (it fell back to machine-local baselines)",
        "--dsr1-python /bin/false (an interpreter that does not run)",
        "--dsr1-python /bin/true (runs, but has no vLLM: its first server start failed after others ran)",
        "--dsr1-ab python=/bin/true (B without vLLM: it failed after A's servers ran)",
    ],
)
def test_paths_are_checked_before_any_server_starts(suite, option, value, error, observed):
    started = time.monotonic()
    result = usage_error(
        suite, "-m", "cpu", "--dsr1-model", "tiny", "--dsr1-dry-run", option, value, stderr=f"*{error}*"
    )
    assert time.monotonic() - started < 30  # /dev/zero was read until killed
    observed(f"exit {int(result.ret)} at start-up: " + next(line for line in result.stderr.lines if "dsr1" in line))


@bad_input("a baseline file nested 200,000 deep ([[[[...]]]])", CAUGHT_WHEN_COLLECTION_ENDS)
def test_a_deeply_nested_baseline_is_a_usage_error_not_a_traceback(suite, observed):
    deep = suite.path / "bl" / "cpu" / "tiny.json"
    deep.parent.mkdir(parents=True)
    deep.write_text("[" * 200_000 + "]" * 200_000)
    stderr = "*tiny.json: (json): nested too deeply to be a baseline file. Fix:*"
    result = usage_error(
        suite, "-m", "cpu", "--dsr1-model", "tiny", "--dsr1-baselines", "bl", "test_matrix", stderr=stderr
    )
    assert "RecursionError" not in result.stdout.str() + result.stderr.str()
    observed(f"exit {int(result.ret)}: " + next(line for line in result.stderr.lines if "nested" in line))


@bad_input("a corrupt logprob reference file (baselines/cpu/tiny.logprobs.json)", CAUGHT_WHEN_COLLECTION_ENDS)
def test_a_corrupt_logprob_reference_is_a_usage_error_before_any_server(suite, observed):
    broken = suite.path / "bl" / "cpu" / "tiny.logprobs.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"format": "pytest-dsr1 logprob reference", "version": 1, "hardware": "cpu", "model": "tin')
    stderr = "*tiny.logprobs.json: (json): corrupt or truncated JSON*Fix: restore it*"
    args = ("-m", "cpu", "--dsr1-model", "tiny", "--dsr1-baselines", "bl", "-k", "test_correctness", "test_matrix")
    result = usage_error(suite, *args, stderr=stderr)
    observed(f"exit {int(result.ret)}: " + next(line for line in result.stderr.lines if "logprobs.json" in line))


@bad_input("--dsr1-ab model= a path that is no checkpoint directory", CAUGHT_AT_START_UP)
def test_an_ab_checkpoint_that_is_not_there_is_a_usage_error(suite, observed):
    args = ("-m", "cpu", "--dsr1-model", "tiny", "--dsr1-ab", "model=/nonexistent/ckpt", "test_matrix")
    result = usage_error(suite, *args, stderr="*--dsr1-ab model=/nonexistent/ckpt: no such checkpoint directory*")
    observed(f"exit {int(result.ret)}: " + next(line for line in result.stderr.lines if "checkpoint" in line))


def test_accuracy_only_and_off_select_the_correctness_items_or_leave_them_out(suite):
    only = suite.runpytest("-m", "cpu", "--dsr1-model", "tiny", "--dsr1-accuracy", "only", "--collect-only", "-q")
    ids = [line for line in only.stdout.lines if "::" in line]
    assert ids == [
        f"test_serving.py::test_correctness[{c}]" for c in ("cpu-tiny-tp1", "cpu-tiny-tp2", "cpu-tiny-tp2ep")
    ]
    off = suite.runpytest("-m", "cpu", "--dsr1-model", "tiny", "--dsr1-accuracy", "off", "--collect-only", "-q")
    assert sum("::test_serving[" in line for line in off.stdout.lines) == 18
    assert not any("test_correctness" in line for line in off.stdout.lines)
    dry = suite.runpytest("-m", "cpu", "--dsr1-model", "tiny", "--dsr1-accuracy", "only", "--dsr1-dry-run")
    dry.stdout.fnmatch_lines(
        ["*[[]correctness[]] logprob check: greedy /v1/completions, 8 prompts x 32 greedy tokens*"]
    )


def test_bad_matrix_is_a_usage_error_naming_file_and_field(suite):
    bad = suite.path / "test_matrix" / "zz-bad.yaml"
    bad.write_text("configs:\n  x: {hardware: cpu, model: tiny, tensor_parallel_size: -2}\n")
    usage_error(suite, "test_matrix", stderr="*zz-bad.yaml: configs.x.tensor_parallel_size: must be positive*Fix:*")


def test_without_gpus_every_h200_item_skips_with_the_hardware_reason(suite, monkeypatch, tmp_path):
    monkeypatch.setenv("DSR1_NVIDIA_SMI", str(tmp_path / "no-nvidia-smi"))
    result = suite.runpytest("-m", "h200", "--dsr1-model", "fp8", "-rs", "test_matrix")
    result.assert_outcomes(skipped=132)  # 126 speed items and 6 correctness items
    result.stdout.fnmatch_lines(["SKIPPED [[]132] *needs 8× H200, found 0 GPUs*"])


def test_one_h200_skips_the_eight_gpu_configs(suite, monkeypatch, tmp_path):
    """A stand-in nvidia-smi prints what the real one printed on the lent single-H200 machine."""
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\necho 'NVIDIA H200, 143771, 580.159.04'\n")
    exe.chmod(0o755)
    monkeypatch.setenv("DSR1_NVIDIA_SMI", str(exe))
    result = suite.runpytest("-m", "h200 and balanced", "--dsr1-model", "fp8", "-rs", "test_matrix")
    result.assert_outcomes(skipped=42)
    result.stdout.fnmatch_lines(["SKIPPED [[]42] *needs 8× H200, found 1× NVIDIA H200 (143771 MiB)*"])


def test_dry_run_prints_the_recipe_commands(suite):
    result = suite.runpytest("-m", "h200", "--dsr1-model", "fp8", "--dsr1-dry-run", "test_matrix")
    result.assert_outcomes(skipped=132)  # 126 speed items and 6 correctness items
    result.stdout.fnmatch_lines(
        [
            "*dsr1 dry run*",
            "# h200-fp8-tp8ep: h200, deepseek-ai/DeepSeek-R1-0528, 8 GPU(s)",
            "vllm serve deepseek-ai/DeepSeek-R1-0528 --trust-remote-code --tensor-parallel-size 8 "
            "--enable-expert-parallel --no-enable-prefix-caching --host 127.0.0.1 --port 8000",
            "  [[]prompt_heavy-bs16] vllm bench serve --model deepseek-ai/DeepSeek-R1-0528 --dataset-name random "
            "--random-input-len 8000 --random-output-len 1000 --request-rate 10000 --num-prompts 16 --ignore-eos "
            "--random-range-ratio 0.0 --seed 0 --num-warmups 4 --host 127.0.0.1 --port 8000 *",
            "VLLM_USE_DEEP_GEMM=1 VLLM_ALL2ALL_BACKEND=deepep_low_latency vllm serve deepseek-ai/DeepSeek-R1-0528 "
            "--trust-remote-code --data-parallel-size 8 --enable-expert-parallel *",
        ]
    )


def test_dry_run_of_an_a_b_shows_both_servers_and_the_order(suite):
    result = suite.runpytest(
        "-m", "cpu", "--dsr1-dry-run", "--dsr1-ab", "set=max_num_seqs=4", "-k", "tp1 and balanced", "test_matrix"
    )
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(
        [
            "# A/B: fresh servers in the order A B B A A B B A; each runs every item",
            "# A: *vllm serve * --max-model-len 2048 --no-enable-prefix-caching *",
            "# B: *vllm serve * --max-model-len 2048 --max-num-seqs 4 --no-enable-prefix-caching *",
        ]
    )


def test_dry_run_of_an_a_b_between_two_endpoints_names_both_and_the_order_of_bursts(suite):
    result = suite.runpytest(
        "-m", "cpu", "--dsr1-dry-run", "--dsr1-target", "http://prod:8000", "--dsr1-target-config", "cpu-tiny-tp1",
        "--dsr1-ab", "target=https://canary:8443/v1", "-k", "balanced-bs16", "test_matrix",
    )  # fmt: skip
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "# served by the target http://prod:8000: nothing is started, restarted or stopped",
            "# A/B: A is http://prod:8000, B is https://canary:8443; bursts in the order A B B A A B B A, each runs *",
        ]
    )
    assert "vllm serve" not in result.stdout.str()


def test_an_a_b_that_does_not_change_a_config_skips_it_without_starting_a_server(suite):
    result = suite.runpytest(
        "-m", "cpu", "--dsr1-model", "tiny", "--dsr1-ab", "set=cpu-tiny-tp2:max_num_seqs=4", "-rs",
        "-k", "tp1-balanced-bs1 and not bs16", "test_matrix",
    )  # fmt: skip
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*A/B: B (cpu-tiny-tp2:max_num_seqs=4) does not change cpu-tiny-tp1*"])
    assert "starting server" not in result.stdout.str()


def test_dry_run_hides_the_api_key(suite, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "sk-very-secret")
    result = suite.runpytest("-m", "cpu", "--dsr1-dry-run", "test_matrix")
    assert "sk-very-secret" not in result.stdout.str()
    result.stdout.fnmatch_lines(
        ["VLLM_CPU_OMP_THREADS_BIND='0|1' * VLLM_API_KEY=*** vllm serve *", "*OPENAI_API_KEY=*** vllm bench serve*"]
    )


def test_tunables_override_from_the_command_line(suite):
    result = suite.runpytest(
        "-m",
        "h200 and prompt_heavy",
        "--dsr1-model",
        "fp8",
        "--dsr1-dry-run",
        "--dsr1-set",
        "max_model_len=65536",
        "--dsr1-set",
        "h200-fp8-tp8ep:gpu_memory_utilization=0.95",
        "test_matrix",
    )
    out = result.stdout.str()
    assert (
        "--tensor-parallel-size 8 --enable-expert-parallel --max-model-len 65536 --gpu-memory-utilization 0.95" in out
    )
    assert "--data-parallel-size 8 --enable-expert-parallel --max-model-len 65536 --no-enable-prefix-caching" in out


def test_quiet_in_a_project_without_a_matrix(pytester):
    """Installed in another project, the plugin does nothing unless asked."""
    from helpers import activate_plugin

    activate_plugin(pytester)
    pytester.makepyfile("def test_ok():\n    pass\n")
    pytester.runpytest().assert_outcomes(passed=1)


@bad_input("a broken baseline file, found before any server starts", CAUGHT_WHEN_COLLECTION_ENDS, per_param=True)
@pytest.mark.parametrize(
    "mode",
    [["--collect-only"], ["--dsr1-dry-run"], ["--dsr1-record"], []],
    ids=["--collect-only", "--dsr1-dry-run", "--dsr1-record", "a comparing run"],
)
def test_a_broken_baseline_is_a_usage_error_before_any_server_starts(suite, mode, observed):
    broken = suite.path / "bl" / "cpu" / "tiny.json"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        '{"schema_version": 1, "hardware": "cpu", "model": "tiny", "entries": {"x": {"provenance": "recorded", '
    )
    run_dir = suite.path / "runs"
    result = suite.runpytest(
        "-m", "cpu", "--dsr1-model", "tiny", "--dsr1-baselines", "bl", "--dsr1-run-dir", str(run_dir), *mode
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*{broken}: (json): corrupt or truncated JSON*Fix: restore it (git checkout -- {broken}), or move it aside*"]
    )
    assert not list(run_dir.glob("**/*.log"))  # nothing was started
    # A broken file of hardware that this run does not select stands in nobody's way.
    result = suite.runpytest("--collect-only", "-q", "-m", "h200", "--dsr1-model", "tiny", "--dsr1-baselines", "bl")
    assert result.ret == pytest.ExitCode.OK
    observed(
        "exit 4 when collection ends, before any server starts "
        f"({' '.join(mode) or 'comparing run'}): '<file>: (json): corrupt or truncated JSON ... "
        "Fix: restore it (git checkout -- <file>), "
        "or move it aside (mv <file> <file>.broken) and record anew with --dsr1-record'"
    )


def test_an_override_is_blamed_on_the_override_not_the_ini_file(suite):
    stderr = "*ini key dsr1_repeat (from -o/--override-ini): 'abc' is not an integer*"
    usage_error(suite, "-o", "dsr1_repeat=abc", "-m", "cpu", "--dsr1-model", "tiny", "--collect-only", stderr=stderr)


def test_sigterm_handler_is_put_back_when_the_run_ends(suite):
    """SIGTERM unwinds like Ctrl-C while servers may run; after the run, the process's handler is as before."""
    import signal

    before = signal.getsignal(signal.SIGTERM)
    assert before in (signal.SIG_DFL, None)
    suite.makepyfile(
        test_sig="""
        import signal
        from pytest_dsr1.plugin import SUITE_KEY

        def test_handler_installed(request):
            request.getfixturevalue("dsr1_runner")  # a suite fixture starts the suite in a run that did not ask
            request.config.stash[SUITE_KEY].install_sigterm_handler()  # what dsr1_server does before a start
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        """
    )
    result = suite.runpytest_inprocess("test_sig.py")
    result.assert_outcomes(passed=1)
    assert signal.getsignal(signal.SIGTERM) == before


@bad_input(
    "a server bound beyond loopback with no API key (--dsr1-host 0.0.0.0)",
    "not an error: at start-up the run gets an API key of its own (or runs open with --dsr1-open-server), and the "
    "header and the dry run say which",
)
def test_a_host_beyond_loopback_gets_a_key_unless_the_user_accepts_an_open_server(suite, observed):
    args = ("-m", "cpu", "--dsr1-model", "tiny", "-k", "tp1 and balanced-bs1", "--dsr1-dry-run", "test_matrix")
    keyed = suite.runpytest(*args, "--dsr1-host=0.0.0.0")
    keyed.stdout.fnmatch_lines(
        [
            "dsr1: servers listen on 0.0.0.0 with an API key generated for this run (shown as ***)",
            "*VLLM_API_KEY=[*][*][*] vllm serve * --host 0.0.0.0 *",
        ]
    )
    opened = suite.runpytest(*args, "--dsr1-host=0.0.0.0", "--dsr1-open-server")
    opened.stdout.fnmatch_lines(["dsr1: servers listen on 0.0.0.0 with no API key (--dsr1-open-server)*"])
    assert "VLLM_API_KEY" not in opened.stdout.str()
    loopback = suite.runpytest(*args)
    assert "servers listen on" not in loopback.stdout.str() and "VLLM_API_KEY" not in loopback.stdout.str()
    observed(next(line for line in keyed.stdout.lines if "servers listen on" in line))


def _gpu_shard(tmp_path, nvidia_smi, *extra):
    """.ci/gpu-shard as the nightly runs it, with a stand-in (or missing) nvidia-smi."""
    env = {**os.environ, "DSR1_NVIDIA_SMI": str(nvidia_smi), "PYTEST": str(Path(sys.executable).parent / "pytest")}
    if extra:
        env["EXTRA_ARGS"] = " ".join(extra)
    started = time.monotonic()
    done = subprocess.run(
        ["bash", ".ci/gpu-shard", "h200", "fp8", "1/3", str(tmp_path / "report")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return done, time.monotonic() - started


@bad_input(
    "a nightly shard on a runner that lost its GPUs (.ci/gpu-shard h200 fp8 1/3)",
    "when collection ends, with --dsr1-strict (which .ci/gpu-shard uses): exit 1 before any server starts",
)
def test_a_strict_night_without_its_gpus_fails_in_seconds_naming_what_it_found(tmp_path, observed):
    done, seconds = _gpu_shard(tmp_path, tmp_path / "no-nvidia-smi")
    out = done.stdout + done.stderr
    assert done.returncode == 1 and seconds < 30, out[-3000:]
    assert "--dsr1-strict: 44 of 44 selected item(s) cannot run on this machine: needs 8× H200, found 0 GPUs" in out
    assert "nvidia-smi" in out and " skipped" not in out  # not a green night of 42 skips
    said = next(line for line in out.splitlines() if "--dsr1-strict:" in line)
    observed(f"exit {done.returncode} in {seconds:.0f} s: {said}")


def test_a_strict_night_with_its_gpus_goes_on(tmp_path):
    """A stand-in nvidia-smi prints eight H200s (what the real one prints on such a runner): the strict check lets
    the shard through. --collect-only, since no server can start here."""
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\nfor i in 0 1 2 3 4 5 6 7; do echo 'NVIDIA H200, 143771, 580.159.04'; done\n")
    exe.chmod(0o755)
    done, _ = _gpu_shard(tmp_path, exe, "--collect-only")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "cannot run on this machine" not in done.stdout + done.stderr

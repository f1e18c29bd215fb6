"""First contact: the recipe's own commands work as written, in this repo and in any project, and the plugin stays
out of the way of projects that do not ask for it.

None of these start vLLM: they collect, dry-run, or fail a server start at once (a `--dsr1-python` that exits 1).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CAUGHT_AT_START_UP, REPO, bad_input

from pytest_dsr1.options import PATH_OPTIONS

SUITE_ITEM = "::test_serving["


def serving_items(result: pytest.RunResult) -> list[str]:
    return [line for line in result.stdout.lines if SUITE_ITEM in line]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """An unrelated project: its own tests and testpaths, no matrix, pytest-dsr1 merely installed."""
    pytester.makeini("[pytest]\ntestpaths = tests\naddopts = --strict-markers\n")
    pytester.mkdir("tests")
    (pytester.path / "tests" / "test_own.py").write_text("def test_own():\n    assert 1 + 1 == 2\n")
    return pytester


@pytest.mark.parametrize(
    "args, count",
    [
        (["-m", "h200", "--dsr1-model", "fp8"], 126),
        (["-m", "b200", "--dsr1-model", "fp4"], 84),
        (["-m", "cpu", "--dsr1-model", "tiny"], 18),
    ],
)
def test_recipe_commands_collect_the_shipped_matrix_without_a_path(project, args, count):
    """`pytest -m h200 --dsr1-model fp8`, as the recipe's users type it, in a project whose testpaths say
    otherwise: the suite shipped in the package is what runs, and the project's own tests are not mixed in."""
    result = project.runpytest("--collect-only", "-q", *args)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-2000:]
    assert len(serving_items(result)) == count
    assert not any("test_own" in line for line in result.stdout.lines)


def test_recipe_dry_run_in_a_project_without_a_matrix(project):
    result = project.runpytest("-m", "h200", "--dsr1-model", "fp8", "--dsr1-dry-run")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=132)  # 126 speed items and 6 correctness items
    result.stdout.fnmatch_lines(
        ["*vllm serve deepseek-ai/DeepSeek-R1-0528 --trust-remote-code --data-parallel-size 8*"]
    )


def test_without_a_dsr1_option_the_project_runs_only_its_own_tests(project):
    result = project.runpytest("-q")
    result.assert_outcomes(passed=1)
    assert serving_items(result) == []


def test_repo_root_recipe_command_and_project_tests():
    """At this repo's root: the recipe command collects the matrix (not testpaths = tests), and `pytest tests`
    collects the project's tests and no serving item."""

    def run(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", *a],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )

    recipe = run("-m", "h200", "--dsr1-model", "fp8")
    assert recipe.returncode == 0, recipe.stdout[-2000:] + recipe.stderr[-2000:]
    assert sum(SUITE_ITEM in line for line in recipe.stdout.splitlines()) == 126
    assert "132/176 tests collected" in recipe.stdout
    named = run(
        "tests/test_first_contact.py", "-m", "cpu or not cpu", "--dsr1-model", "tiny"
    )  # a named path stays as named
    assert named.returncode == 0, named.stdout[-2000:]
    assert not any(SUITE_ITEM in line for line in named.stdout.splitlines())
    assert any("test_first_contact.py::" in line for line in named.stdout.splitlines())


def test_foreign_test_matrix_folder_is_left_alone(project):
    """A project's own test_matrix/ with ordinary Python tests and unrelated YAML: its tests run as before (under
    xdist too), and with the suite asked for, its YAML is listed as ignored, not refused."""
    folder = project.mkdir("test_matrix")
    (folder / "test_ordinary.py").write_text("def test_ordinary():\n    pass\n")
    (folder / "ci.yaml").write_text("os: linux\npython: ['3.11']\n")
    (folder / "broken.yaml").write_text("{{ templated }}: [\n")
    result = project.runpytest("-q", "tests", "test_matrix")
    result.assert_outcomes(passed=2)
    (folder / "build.yaml").write_text("os: linux\nconfigs: [debug, release]\n")  # looks like a matrix, is not one
    result = (
        project.runpytest_subprocess("-q", "-n", "2", "tests", "test_matrix")
        if _has_xdist()
        else project.runpytest("-q")
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-2000:] + result.stderr.str()[-2000:]
    (folder / "build.yaml").unlink()
    suite = project.runpytest("--collect-only", "-m", "cpu", "--dsr1-model", "tiny")
    assert suite.ret == pytest.ExitCode.OK, suite.stdout.str()[-2000:]
    assert sum("<Function test_serving[" in line for line in suite.stdout.lines) == 18
    suite.stdout.fnmatch_lines(["dsr1: not matrix files*ignored:*broken.yaml*ci.yaml*"])


def test_project_test_matrix_adds_and_replaces_configs(project):
    """A local test_matrix/*.yaml layers on the shipped matrix: a new config joins, a same-named one replaces."""
    folder = project.mkdir("test_matrix")
    (folder / "mine.yaml").write_text(
        "configs:\n"
        "  cpu-tiny-tp1: {hardware: cpu, model: tiny, batch_sizes: [2]}\n"
        "  cpu-tiny-mine: {hardware: cpu, model: tiny, batch_sizes: [4], workloads: [balanced]}\n"
    )
    result = project.runpytest("--collect-only", "-q", "-m", "cpu", "--dsr1-model", "tiny")
    ids = serving_items(result)
    assert (
        [i for i in ids if "cpu-tiny-mine" in i] == [i for i in ids if i.endswith("[cpu-tiny-mine-balanced-bs4]")] != []
    )
    assert {i.split("[")[1] for i in ids if "cpu-tiny-tp1-" in i} == {
        "cpu-tiny-tp1-prompt_heavy-bs2]",
        "cpu-tiny-tp1-decode_heavy-bs2]",
        "cpu-tiny-tp1-balanced-bs2]",
    }


@bad_input("a project's test_matrix/ file that is meant as a matrix but is wrong", CAUGHT_AT_START_UP)
def test_a_bad_matrix_file_in_a_project_is_a_usage_error(project, observed):
    folder = project.mkdir("test_matrix")
    (folder / "mine.yaml").write_text("configs:\n  x: {hardware: cpu, model: tiny, tensor_parallel_size: -2}\n")
    result = project.runpytest("-m", "cpu", "--dsr1-model", "tiny")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*mine.yaml: configs.x.tensor_parallel_size: must be positive*Fix:*"])
    observed(f"exit {int(result.ret)}: " + next(line for line in result.stderr.lines if "mine.yaml" in line))


def _has_xdist() -> bool:
    try:
        import xdist  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- -p no:dsr1


@pytest.mark.parametrize("autoload", [True, False], ids=["installed (entry point)", "checkout (root conftest)"])
def test_p_no_dsr1_turns_the_plugin_off(autoload):
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    if not autoload:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"

    def run(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", *a],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    on = run("--help")
    assert "--dsr1-model" in on.stdout
    off = run("-p", "no:dsr1", "--help")
    assert off.returncode == 0 and "--dsr1-model" not in off.stdout
    refused = run("-p", "no:dsr1", "--collect-only", "-q", "-m", "cpu", "--dsr1-model", "tiny")
    assert (
        refused.returncode == pytest.ExitCode.USAGE_ERROR and "unrecognized arguments: --dsr1-model" in refused.stderr
    )


# ---------------------------------------------------------------- --lf, xdist


def failing_python(folder: Path) -> str:
    """A controlled stand-in for an interpreter whose servers cannot start, which vLLM cannot give quickly: it
    answers the start-up check like a Python with vLLM 0.32.0 (the suite asks every --dsr1-python for its vLLM
    version), and exits 1 for anything else, as a broken environment does at the first server start."""
    exe = folder / "python-that-fails"
    exe.write_text('#!/bin/sh\ncase "$2" in *importlib.metadata*) echo 0.32.0; exit 0;; esac\nexit 1\n')
    exe.chmod(0o755)
    return str(exe)


def test_last_failed_reruns_only_failed_items_grouped_by_server(suite):
    """Fail two configs (their server cannot start: the interpreter exits 1), then `--lf`: only those items come
    back, each config's items together, and each failed config starts once."""
    broken = ["-m", "cpu", "--dsr1-model", "tiny", "--dsr1-python", failing_python(suite.path), "--dsr1-confirm", "0"]
    # Subprocesses: a server start imports numpy (the tiny model), which an in-process run would unload again.
    first = suite.runpytest_subprocess(*broken, "-k", "cpu-tiny-tp1- or cpu-tiny-tp2-", "test_matrix")
    first.assert_outcomes(failed=12)
    again = suite.runpytest("--collect-only", "-q", "--lf", "-m", "cpu", "--dsr1-model", "tiny", "test_matrix")
    ids = serving_items(again)
    assert len(ids) == 12
    configs = [i.split("[")[1].rsplit("-", 2)[0] for i in ids]
    runs = [c for n, c in enumerate(configs) if n == 0 or configs[n - 1] != c]
    assert runs == ["cpu-tiny-tp1", "cpu-tiny-tp2"]
    rerun = suite.runpytest_subprocess("--lf", *broken, "test_matrix")
    rerun.assert_outcomes(failed=12)
    rerun.stdout.fnmatch_lines(["*dsr1: 2 server start(s) for 2 configuration(s) run*"])


def test_xdist_runs_each_config_whole_on_one_worker_and_merges_the_records(suite):
    """pytest -n 2 for real: two configs whose servers cannot start (failing_python: the interpreter exits 1).
    Each config's items run on one worker, each config starts once, and the controller's summary holds both
    workers' records."""
    pytest.importorskip("xdist")
    broken = ["-m", "cpu", "--dsr1-model", "tiny", "--dsr1-python", failing_python(suite.path), "--dsr1-confirm", "0"]
    report = suite.path / "report"
    result = suite.runpytest_subprocess(
        "-n", "2", "-v", *broken, "-k", "cpu-tiny-tp1- or cpu-tiny-tp2-", "--dsr1-report", str(report), timeout=600
    )
    result.assert_outcomes(failed=12)
    out = result.stdout.str()
    workers: dict[str, set[str]] = {}
    for gw, config in re.findall(r"\[(gw\d+)\][^\n]*FAILED[^\n]*test_serving\[(cpu-tiny-tp\d)-", out):
        workers.setdefault(config, set()).add(gw)
    assert sorted(workers) == ["cpu-tiny-tp1", "cpu-tiny-tp2"] and all(len(w) == 1 for w in workers.values()), out
    result.stdout.fnmatch_lines(["*dsr1: 2 server start(s) for 2 configuration(s) run*"])
    data = json.loads((report / "results.json").read_text())
    assert len(data["items"]) == 12 and data["server_starts"] == 2
    assert {i["outcome"] for i in data["items"]} == {"failed"}


def test_xdist_dry_run_prints_every_command_once(suite):
    pytest.importorskip("xdist")
    result = suite.runpytest_subprocess("-n", "2", "-m", "h200", "--dsr1-model", "fp8", "--dsr1-dry-run", timeout=300)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-2000:]
    out = result.stdout.str()
    assert len(re.findall(r"^# h200-fp8-\S+: h200, ", out, re.M)) == 6
    assert len(re.findall(r"^  \[\S+\] vllm bench serve ", out, re.M)) == 126


@bad_input(
    "pytest -n 2 (pytest-xdist) where it cannot work",
    "at start-up, before any server: what to run instead",
    per_param=True,
)
@pytest.mark.parametrize(
    "args,expected",
    [
        (["--dsr1-ab", "set=max_num_seqs=4"], "--dsr1-ab compares B against A on fresh servers, one at a time"),
        (["--dist", "each"], "--dist each would run a config's items on several workers"),
    ],
    ids=["an A/B run", "--dist each"],
)
def test_xdist_is_refused_where_it_cannot_work(suite, args, expected, observed):
    pytest.importorskip("xdist")
    run_dir = suite.path / "runs"
    result = suite.runpytest_subprocess(
        "-n", "2", "--dsr1-run-dir", str(run_dir), "-m", "cpu", "--dsr1-model", "tiny", *args, timeout=300
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stdout.str() + result.stderr.str()
    assert expected in text, text[-3000:]
    assert not list(run_dir.glob("**/*.log")) and not list(run_dir.glob("**/*.pid.json"))  # no server was started
    observed(f"exit {int(result.ret)}: '{expected}'; no server started")


# ---------------------------------------------------------------- path options


@pytest.mark.parametrize("spelling", ["space", "equals"])
@pytest.mark.parametrize("option", PATH_OPTIONS)
def test_a_path_option_never_moves_the_rootdir(suite, tmp_path_factory, option, spelling):
    """pytest takes `--dsr1-baselines /elsewhere` for a test path before it knows the option; the plugin puts the
    rootdir and ini file back, so the project's matrix and settings still apply."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    value = {"--dsr1-matrix": str(elsewhere / "m.yaml"), "--dsr1-python": str(elsewhere / "python")}.get(
        option, str(elsewhere)
    )
    if option == "--dsr1-matrix":
        # A layer that replaces a config with itself: the selection stays the same 18 items.
        Path(value).write_text(
            "configs:\n  cpu-tiny-tp1: {hardware: cpu, model: tiny, settings: {gpu_memory_utilization: 0.15}}\n"
        )
    if option == "--dsr1-python":
        # Outside any project (this repo's .venv is inside one, whose pyproject pytest would then read); a script
        # that runs this interpreter, so that the start-up check finds its vLLM.
        Path(value).write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        Path(value).chmod(0o755)
    args = [option, value] if spelling == "space" else [f"{option}={value}"]
    result = suite.runpytest_subprocess("--collect-only", "-m", "cpu", "--dsr1-model", "tiny", *args)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-1500:] + result.stderr.str()[-1500:]
    result.stdout.fnmatch_lines([f"rootdir: {suite.path}", "configfile: tox.ini"])
    assert len([line for line in result.stdout.lines if "<Function test_serving[" in line]) == 18
    if option == "--dsr1-python":  # checked at start, and the header says what it is
        result.stdout.fnmatch_lines([f"dsr1: --dsr1-python {value}: vLLM *"])


def test_path_values_are_relative_to_where_they_are_written(suite):
    """A command-line value is relative to the invocation directory, an ini value to the ini file. (In a
    subprocess: writing the reports imports matplotlib, which an in-process run would unload again.)"""
    sub = suite.mkdir("sub")

    def run(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "cpu", "--dsr1-model", "tiny", "--dsr1-dry-run", *a],
            cwd=sub,
            capture_output=True,
            text=True,
            timeout=300,
        )

    result = run("--dsr1-report", "cli-report")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (sub / "cli-report" / "results.json").is_file()
    suite.makeini("[pytest]\naddopts = --strict-markers\ndsr1_report = ini-report\n")
    result = run()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert json.loads((suite.path / "ini-report" / "results.json").read_text())
    assert not (sub / "ini-report").exists()

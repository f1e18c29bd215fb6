"""The wheel: built from this checkout, installed into a fresh venv, used from an empty project. No vLLM needed.

This is the path of a user who runs `pip install pytest-dsr1` in a project of their own: the recipe's matrix and
test module must come with the package, and the recipe's command must work there as written.
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

import pytest_dsr1

pytestmark = pytest.mark.packaging


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (path,) = out.glob("pytest_dsr1-*.whl")
    return path


def test_wheel_carries_the_matrix_schema_license_and_types(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "pytest_dsr1/test_matrix/recipe.yaml",
        "pytest_dsr1/test_matrix/tiny.yaml",
        "pytest_dsr1/test_matrix/test_serving.py",
        "pytest_dsr1/test_matrix/__init__.py",
        "pytest_dsr1/results.schema.json",
        "pytest_dsr1/py.typed",
        "pytest_dsr1/plugin.py",
    ):
        assert name in names, name
    dist_info = f"pytest_dsr1-{pytest_dsr1.__version__}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    meta = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert f"Version: {pytest_dsr1.__version__}" in meta  # the one source of the version
    assert "License-Expression: Apache-2.0" in meta
    assert "Project-URL: Recipe, https://github.com/vllm-project/recipes" in meta
    assert 'Requires-Dist: vllm>=0.11.1; extra == "vllm"' in meta
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "dsr1 = pytest_dsr1.plugin" in entry_points


def test_installed_wheel_runs_the_recipe_dry_run_in_an_empty_project(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True, text=True, timeout=900
    )
    empty = tmp_path / "empty-project"
    empty.mkdir()
    result = subprocess.run(
        [str(python), "-m", "pytest", "-m", "h200", "--dsr1-model", "fp8", "--dsr1-dry-run"],
        cwd=empty,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "132 skipped" in result.stdout
    assert (
        "vllm serve deepseek-ai/DeepSeek-R1-0528 --trust-remote-code --tensor-parallel-size 8 --enable-expert-parallel"
        in result.stdout
    )
    # The plugin came from the venv, not from this checkout.
    where = subprocess.run(
        [str(python), "-c", "import pytest_dsr1; print(pytest_dsr1.__file__)"],
        capture_output=True,
        text=True,
        cwd=empty,
    )
    assert str(env_dir) in where.stdout and str(REPO) not in where.stdout

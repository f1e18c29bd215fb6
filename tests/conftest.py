import os
import shutil
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
MATRIX = REPO / "test_matrix"
_AUTOLOADED = any(ep.value == "pytest_dsr1.plugin" for ep in entry_points(group="pytest11")) and not os.environ.get(
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD")


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester project holding a copy of this repo's matrix and suite, with the plugin active."""
    shutil.copytree(MATRIX, pytester.path / "test_matrix", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makeconftest("" if _AUTOLOADED else "pytest_plugins = ['pytest_dsr1.plugin']\n")
    pytester.makeini("[pytest]\naddopts = --strict-markers -p no:cacheprovider\n")
    return pytester

"""Root conftest: makes the plugin active in a checkout of this repo, without `pip install`.

Installed, the package's pytest11 entry point has already registered the plugin as `dsr1`. Otherwise (an offline
GPU machine with PYTHONPATH=<checkout>, or PYTEST_DISABLE_PLUGIN_AUTOLOAD=1) it is registered here under the same
name, so `-p no:dsr1` turns it off in every mode: a blocked name registers nothing.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    if not pluginmanager.has_plugin("dsr1") and not pluginmanager.is_blocked("dsr1"):
        from pytest_dsr1 import plugin

        pluginmanager.register(plugin, "dsr1")

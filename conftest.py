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
    if pluginmanager.has_plugin("dsr1") or pluginmanager.is_blocked("dsr1"):
        return
    from pytest_dsr1 import plugin

    if not pluginmanager.is_registered(plugin):  # e.g. loaded with -p pytest_dsr1.plugin
        pluginmanager.register(plugin, "dsr1")

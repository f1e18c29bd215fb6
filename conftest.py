"""Root conftest: makes the plugin active in a checkout of this repo, without `pip install`.

With the package installed, its pytest11 entry point has already loaded the plugin (registering it twice
is an error), so it is named here only when that entry point is absent or autoloading is off. This is the
offline case: a GPU machine with pytest, numpy, requests, PyYAML and PyTorch, and PYTHONPATH=<checkout>.
"""

import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

_installed = any(ep.value == "pytest_dsr1.plugin" for ep in entry_points(group="pytest11"))
if not _installed or os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
    pytest_plugins = ["pytest_dsr1.plugin"]

"""Root conftest: makes the plugin active in a checkout of this repo, without `pip install`.

When the package is installed, its pytest11 entry point has already loaded the plugin; loading it again
by name would fail, so only register it when it is not there yet.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config):
    pass


if "pytest_dsr1.plugin" not in sys.modules:
    pytest_plugins = ["pytest_dsr1.plugin"]

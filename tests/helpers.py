"""Helpers shared by the tests: the repository's paths, the marks of docs/reliability.md's bad-input rows, and
baseline files in the first format."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
MATRIX = REPO / "test_matrix"

# Where a bad input is caught, as docs/reliability.md's "caught" column says it.
CAUGHT_AT_START_UP = "at start-up: a usage error (exit 4) before collection, in the dry run too"
CAUGHT_WHEN_COLLECTION_ENDS = (
    "when collection ends: a usage error (exit 4) before any server starts; "
    "--collect-only, the dry run and --dsr1-record too"
)


def bad_input(case: str, caught: str, *, per_param: bool = False) -> pytest.MarkDecorator:
    """The mark of a bad-input row of docs/reliability.md (per_param: a row per parameter, the case plus its id)."""
    return pytest.mark.reliability(kind="input", case=case, per_param=per_param, caught=caught)


def schema1_baseline(
    hardware: str, model: str, key: str, provenance: str, date: str, metrics: dict[str, Any]
) -> dict[str, Any]:
    """A baseline file in the first format (schema 1: one session per entry), holding one entry, `key`."""
    entry = {"provenance": provenance, "date": date, "fingerprint": {"hardware": hardware}, "metrics": metrics}
    return {"schema_version": 1, "hardware": hardware, "model": model, "entries": {key: entry}}


def activate_plugin(pytester: pytest.Pytester) -> None:
    """Make the plugin active in a pytester project the way this repo does: its root conftest.py registers the
    plugin where the pytest11 entry point has not (a checkout without an install, PYTEST_DISABLE_PLUGIN_AUTOLOAD)."""
    shutil.copy(REPO / "conftest.py", pytester.path / "conftest.py")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_dom(page: Path, timeout: float = 60) -> tuple[str, float]:
    """The page's DOM after its scripts ran, as headless Chromium rendered it, and the seconds that took."""
    if CHROMIUM is None:
        if os.environ.get("DSR1_REQUIRE_BROWSER"):
            pytest.fail("DSR1_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("headless Chromium is not installed here (apt-get install chromium)")
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()]
    t0 = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, time.monotonic() - t0

"""The core imports without pytest (and without vLLM): only the plugin layer may need them."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO

# The pytest layer: hooks, fixtures and pytest's side of the options. Everything else is the core.
PYTEST_LAYER = {"pytest_dsr1.plugin", "pytest_dsr1.suite", "pytest_dsr1.pytest_options", "pytest_dsr1.xdist_scheduling"}
CORE = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    for p in (REPO / "pytest_dsr1").rglob("*.py")
    if p.stem != "__main__"
)
CORE = [m for m in CORE if m not in PYTEST_LAYER]

PROBE = """
import sys
for name in ("pytest", "_pytest", "vllm"):
    sys.modules[name] = None  # any import of them raises ImportError
import importlib
for module in sys.argv[1:]:
    importlib.import_module(module)
loaded = sorted(
    m for m in sys.modules if m.split(".")[0] in ("pytest", "_pytest", "vllm") and sys.modules[m] is not None
)
print("loaded:", loaded)
sys.exit(1 if loaded else 0)
"""


def test_every_core_module_imports_without_pytest_or_vllm():
    assert {"pytest_dsr1.runner", "pytest_dsr1.check", "pytest_dsr1.verdict.item", "pytest_dsr1.ab.judge"} <= set(CORE)
    result = subprocess.run([sys.executable, "-c", PROBE, *CORE], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_probe_would_catch_a_pytest_import():
    """The same probe on the plugin module fails: it is the layer that imports pytest."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "pytest_dsr1.plugin"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode != 0 and "import of pytest halted" in result.stderr

"""The plugin is installed in every project of the environment: a run that selects no serving item must not pay for
the suite. These runs are real pytest processes; an audit hook in the project's conftest records every YAML file
opened from the moment the conftest loads (before pytest_configure)."""

from __future__ import annotations

import json

import pytest

PROBE_CONFTEST = """
import json, sys
from pathlib import Path

OPENED = []

def _audit(event, args):
    if event == "open" and str(args[0]).endswith((".yaml", ".yml")):
        OPENED.append(str(args[0]))

sys.addaudithook(_audit)

def pytest_unconfigure(config):
    Path("opened.json").write_text(json.dumps(OPENED))
"""


def _opened_yaml(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, list[str]]:
    result = pytester.runpytest_subprocess(*args)
    return result, json.loads((pytester.path / "opened.json").read_text())


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with its own tests and the plugin installed (the pytest11 entry point), nothing of the suite's."""
    pytester.makeconftest(PROBE_CONFTEST)
    pytester.makepyfile(test_own="def test_own():\n    assert 1 + 1 == 2\n")
    return pytester


def test_a_project_that_selects_no_serving_item_reads_no_matrix_file(project):
    result, opened = _opened_yaml(project, "-p", "dsr1", "-v")
    result.assert_outcomes(passed=1)
    assert opened == []


def test_the_probe_sees_the_matrix_read_when_the_suite_is_asked_for(project):
    """The control: the same project asking for the suite (a --dsr1-* option) reads the shipped matrix files."""
    result, opened = _opened_yaml(project, "-p", "dsr1", "--collect-only", "-q", "--dsr1-model", "tiny")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    assert any(path.endswith("tiny.yaml") for path in opened), opened

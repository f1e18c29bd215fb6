"""Progress lines while a run goes (pytest_dsr1/progress.py): the plan's arithmetic on literal data, and the lines
through pytest itself with stand-in timings (a target that never answers, so that each item fails at once without
a server, and a stand-in clock that moves 30 s per item)."""

from __future__ import annotations

import re

import pytest

from pytest_dsr1.progress import PlannedItem, RunProgress, mmss, planned_items


def test_each_item_says_its_place_the_time_gone_and_the_time_to_go_at_the_pace_so_far():
    now = [100.0]
    items = planned_items(
        [("c1[a]", "c1"), ("c1[b]", "c1"), ("c2[a]", "c2")],
        {"c1[a]": 10, "c1[b]": 20, "c2[a]": 30},
        {"c1": 60, "c2": 60},
    )
    assert [i.seconds for i in items] == [70, 20, 90]  # a config's start-up goes with its first item
    progress = RunProgress(items, clock=lambda: now[0])
    assert progress.item_line("c1[a]") == "dsr1: item 1 of 3, c1[a] (config 1 of 2): 0:00 gone, about 3:00 to go"
    now[0] += 140  # twice the plan for the first item: the rest is expected at twice its plan too
    assert progress.item_line("c1[b]") == "dsr1: item 2 of 3, c1[b] (config 1 of 2): 2:20 gone, about 3:40 to go"
    assert progress.gone() == "; 2:20 gone"
    assert progress.item_line("not planned") is None
    assert mmss(3725) == "1:02:05"


def test_an_ab_run_puts_every_start_of_a_config_on_its_first_item():
    items = planned_items([("c[a]", "c"), ("c[b]", "c")], {"c[a]": 10, "c[b]": 5}, {"c": 60}, starts_per_config=8)
    assert items == [PlannedItem("c[a]", "c", 8 * (60 + 15)), PlannedItem("c[b]", "c", 0.0)]


CONFTEST = """
import pytest_dsr1.progress as progress

now = [1000.0]
progress.monotonic = lambda: now[0]  # a stand-in clock: 30 s per item


def pytest_runtest_teardown(item):
    now[0] += 30
"""
TARGET = ["-m", "cpu", "--dsr1-model", "tiny", "--dsr1-target", "http://127.0.0.1:9", "--dsr1-target-config"]
TARGET += [
    "cpu-tiny-tp1",
    "--dsr1-startup-timeout",
    "1",
    "-k",
    "balanced or test_correctness",
    "-p",
    "no:randomly",
    "test_matrix",
]


@pytest.mark.parametrize("verbosity", [[], ["-v"]])
def test_progress_lines_name_each_item_with_its_times_at_default_and_verbose_output(suite, verbosity):
    suite.makeconftest(CONFTEST)
    result = suite.runpytest(*TARGET, *verbosity, "--junitxml", "junit.xml")
    result.assert_outcomes(failed=3)
    lines = [
        "dsr1: item 1 of 3, cpu-tiny-tp1[balanced-bs1] (config 1 of 1): 0:00 gone, about ",
        "dsr1: item 2 of 3, cpu-tiny-tp1[balanced-bs16] (config 1 of 1): 0:30 gone, about ",
        "dsr1: item 3 of 3, test_correctness[cpu-tiny-tp1] (config 1 of 1): 1:00 gone, about ",
    ]
    result.stdout.re_match_lines([re.escape(line) + r"\d+:\d\d to go$" for line in lines])
    assert (suite.path / "junit.xml").read_text().count("<testcase") == 3  # junit is untouched by the lines


def test_quiet_output_has_no_progress_lines(suite):
    suite.makeconftest(CONFTEST)
    result = suite.runpytest(*TARGET, "-q")
    result.assert_outcomes(failed=3)
    assert "dsr1: item" not in result.stdout.str()

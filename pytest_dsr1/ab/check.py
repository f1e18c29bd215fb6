"""An item's check in A/B mode: judge B's starts against A's (ab/judge.py) from the starts the runner made, and
keep the result in the run log. Nothing is written to baselines."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from pytest_dsr1.ab.data import AbRun
from pytest_dsr1.ab.judge import judge_ab_item
from pytest_dsr1.ab.spec import b_config
from pytest_dsr1.check import ItemCheck
from pytest_dsr1.run_log import Measurement
from pytest_dsr1.verdict.item import Decision

if TYPE_CHECKING:
    from pytest_dsr1.runner import Runner


class AbCheck(ItemCheck):
    """The verdict on one item in A/B mode: B's start medians against A's."""

    def __init__(self, runner: Runner, ab: AbRun) -> None:
        super().__init__(runner)
        self.ab = ab

    def check(self, m: Measurement) -> Decision:
        result = self.result(m)
        rules = self.rules(m)  # an A/B measurement adds no runs: its starts are made
        b = b_config(m.config, self.ab.spec)
        b_item = replace(m.item(b), server_command=self.b_server_command(m))
        verdicts, decision = judge_ab_item(
            m.item(), b_item, self.ab.starts_of(m.config.id), rules, (self.ab.a_label, self.ab.b_label)
        )
        if verdicts:
            self.ab.verdicts[m.key] = verdicts
        result.ab_verdicts = verdicts
        self.run_log.keep(result, decision)
        return decision

    def b_server_command(self, m: Measurement) -> str:
        """B's server command for this item's config, as its fingerprint shows it (port written PORT)."""
        spec = self.ab.spec
        if spec.target:
            return f"(target) {spec.target}"
        command = str(self.runner.fingerprint_for(b_config(m.config, spec))["server_command"])
        return f"{command} (with {spec.python})" if spec.python else command

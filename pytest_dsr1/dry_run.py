"""--dsr1-dry-run: each item's exact commands (environment, `vllm serve`, `vllm bench serve`), noted in the run log
for the terminal summary; nothing is started."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_dsr1.ab.spec import ab_spec, abba_order, b_config
from pytest_dsr1.command import node_commands
from pytest_dsr1.gsm8k import dataset_problem
from pytest_dsr1.matrix import ServerConfig, Workload
from pytest_dsr1.remote import base_url
from pytest_dsr1.runner import model_reference

if TYPE_CHECKING:
    from pytest_dsr1.runner import Runner


def note_commands(runner: Runner, config: ServerConfig, workload: Workload) -> None:
    """Note the commands the item would run, for the dry run's listing."""
    lines = _config_lines(runner, config)
    lines.append(f"  [{workload.id}] " + runner.bench_shell_line(runner.bench_command_for(config, workload)))


def note_correctness(runner: Runner, config: ServerConfig, reference: str) -> None:
    """Note what the config's correctness item would ask of its server, and against what."""
    check = config.model.logprobs
    what = (
        f"greedy /v1/completions, {check.describe()}, against {reference}"
        if check is not None
        else "off for this model (accuracy.logprobs: off)"
    )
    lines = _config_lines(runner, config)
    lines.append(f"  [correctness] logprob check: {what}")
    gsm8k = config.model.gsm8k
    if gsm8k is not None:
        problem = dataset_problem(gsm8k)
        where = f"; cannot run here: {problem}" if problem else ""
        lines.append(f"  [correctness] {gsm8k.describe()}, lm-eval local-completions against the server{where}")


def _config_lines(runner: Runner, config: ServerConfig) -> list[str]:
    """The config's lines of the listing, its server command first."""
    lines = runner.run_log.dry_run.setdefault(config.id, [])
    if not lines:
        gpus = config.gpus or "no"
        lines.append(f"# {config.id}: {config.hardware.name}, {config.model.hf_id}, {gpus} GPU(s)")
        spec = ab_spec(runner.options.ab)
        if config.nodes > 1:
            commands = node_commands(config, model_reference(config), api_key=runner.options.api_key)
            for node, cmd in enumerate(commands):
                lines.append(f"# node {node}{' (API server)' if node == 0 else ' (headless)'}:")
                lines.append(cmd.shell_line())
        elif runner.is_target(config):
            target = base_url(str(runner.options.target))
            lines.append(f"# served by the target {target}: nothing is started, restarted or stopped")
            if spec is not None and spec.target:
                order = " ".join(abba_order(runner.options.ab_rounds))
                lines.append(
                    f"# A/B: A is {target}, B is {spec.target}; bursts in the order {order}, each runs every item"
                )
        elif spec is None:
            lines.append(runner.server_command_for(config).shell_line())
        else:
            rounds = runner.options.ab_rounds
            lines.append(f"# A/B: fresh servers in the order {' '.join(abba_order(rounds))}; each runs every item")
            lines.append("# A: " + runner.server_command_for(config).shell_line())
            python = f" (with {spec.python})" if spec.python else ""
            lines.append(f"# B{python}: " + runner.server_command_for(b_config(config, spec)).shell_line())
    return lines

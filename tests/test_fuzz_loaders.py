"""Property-based tests (Hypothesis) of the loaders and option parsers: for any input they either load or raise the
suite's own error, naming the file and the field. Never another exception, never a silent pass.

What they found is pinned with @example and as plain tests at the end; Hypothesis' local example database
(tests/hypothesis-examples/, not committed) replays a new failure first on the next run. The budget is bounded: 300
examples per test (DSR1_FUZZ_EXAMPLES for a deeper run), no deadline (a shared 2-core machine stalls now and then).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from pytest_dsr1 import baseline as bl
from pytest_dsr1.budget import parse_budget
from pytest_dsr1.matrix import MatrixError, load_matrix
from pytest_dsr1.matrix.model import CONFIG_KEYS, HW_KEYS  # the loader's own key sets
from pytest_dsr1.options import (
    parse_alpha,
    parse_missing_baseline,
    parse_non_negative_int,
    parse_positive_int,
    parse_seconds,
    parse_setting_override,
)
from pytest_dsr1.tolerance import parse_tolerance_override

pytestmark = pytest.mark.fuzz

EXAMPLES = DirectoryBasedExampleDatabase(str(Path(__file__).parent / "hypothesis-examples"))
FUZZ = settings(
    max_examples=int(os.environ.get("DSR1_FUZZ_EXAMPLES", "300")),
    deadline=None,
    database=EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow],
)

# YAML-ish values: what a user could write in a matrix file, well or badly.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)
# The keys the loader knows, from the loader itself: a copy here would miss the ones added later. Sorted, since a
# set's order changes with the hash seed and Hypothesis draws (and replays) by position.
KEYS = {"config": sorted(CONFIG_KEYS), "hardware": sorted(HW_KEYS)}
good_values = {
    "hardware": st.sampled_from(["cpu", "h200", "nosuch"]),
    "model": st.sampled_from(["m", "nosuch"]),
    "kind": st.sampled_from(["cpu", "gpu", "tpu"]),
    "precision": st.sampled_from(["fp8", "bf16", "fp16"]),
    "batch_sizes": st.lists(st.integers(-2, 64), max_size=4),
    "config_tolerance": st.sampled_from(["15%", "0%", "100%", "x", "2.5%", 5, None]),
    "tolerances": st.dictionaries(
        st.sampled_from(["output_throughput", "mean_ttft_ms", "nosuch"]),
        st.one_of(st.sampled_from(["10%", "15%:5", "100%", "off", "x"]), st.booleans(), st.floats()),
    ),
    "env": st.dictionaries(st.text(max_size=6), scalars, max_size=2),
    "settings": st.dictionaries(st.sampled_from(["max_model_len", "max_num_seqs", "nosuch"]), scalars, max_size=2),
}


def section(kind: str) -> st.SearchStrategy:
    keys = KEYS[kind]
    return st.dictionaries(st.sampled_from([*keys, "bogus"]), st.deferred(lambda: values), max_size=5).flatmap(
        lambda d: st.fixed_dictionaries({k: good_values.get(k, values) for k in d})
    )


matrices = st.fixed_dictionaries(
    {},
    optional={
        "models": st.dictionaries(
            st.sampled_from(["m", "M", "m\n", ""]),
            st.one_of(
                values,
                st.fixed_dictionaries(
                    {
                        "id": st.sampled_from(["org/model", "generated:tiny", "generated:big", 3]),
                        "precision": good_values["precision"],
                    }
                ),
            ),
        ),
        "hardware": st.dictionaries(
            st.sampled_from(["cpu", "h200"]), st.one_of(values, section("hardware")), max_size=2
        ),
        "workloads": st.dictionaries(
            st.sampled_from(["w", "w2"]),
            st.one_of(
                values,
                st.fixed_dictionaries(
                    {"input_len": st.one_of(st.integers(-1, 100), scalars), "output_len": st.integers(-1, 100)}
                ),
            ),
            max_size=2,
        ),
        "configs": st.dictionaries(
            st.sampled_from(["c1", "c2", "C", "c1\n"]), st.one_of(values, section("config")), max_size=2
        ),
        "benchmark": st.one_of(
            values,
            st.dictionaries(
                st.sampled_from(["seed", "num_warmups", "random_range_ratio", "request_rate", "bogus"]),
                scalars,
                max_size=3,
            ),
        ),
        "tolerances": good_values["tolerances"],
    },
)


def _dump(data: object) -> str:
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return repr(data)


@FUZZ
@given(data=st.one_of(matrices, values), raw=st.booleans())
@example(data={"": None}, raw=False)  # found: an empty key named as '' (was an empty field name)
def test_matrix_loader_loads_or_names_file_and_field(tmp_path_factory, data, raw):
    path = tmp_path_factory.mktemp("m") / "m.yaml"
    path.write_text(repr(data) if raw else _dump(data))
    try:
        matrix = load_matrix(path)
    except MatrixError as exc:
        assert str(path) in str(exc) and exc.field_name and "Fix:" in str(exc)
        return
    for c in matrix.configs:  # what loads is usable: finite positive numbers, valid ids
        assert math.isfinite(c.workload_scale) and c.workload_scale > 0 and all(b > 0 for b in c.batch_sizes)
        assert c.id == c.id.strip() and c.tp >= 1 and c.dp >= 1
        matrix.workloads_for(c)


samples = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 10**9),
    st.text(max_size=4),
    st.none(),
    st.booleans(),
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "provenance": st.sampled_from(["recorded", "published", "guessed", None]),
        "date": st.one_of(st.text(max_size=10), st.integers()),
        "fingerprint": st.one_of(values, st.fixed_dictionaries({"hardware": st.sampled_from(["cpu", "h200", None])})),
        "metrics": st.one_of(
            values,
            st.dictionaries(
                st.sampled_from(["output_throughput", "mean_ttft_ms"]),
                st.one_of(samples, st.fixed_dictionaries({"samples": st.lists(samples, max_size=3)})),
                max_size=2,
            ),
        ),
    },
)
baseline_files = st.fixed_dictionaries(
    {},
    optional={
        "schema_version": st.sampled_from([1, 2, "1", None]),
        "hardware": st.sampled_from(["cpu", "h200"]),
        "model": st.sampled_from(["tiny", "x"]),
        "entries": st.one_of(values, st.dictionaries(st.text(max_size=6), st.one_of(values, entries), max_size=2)),
    },
)


@FUZZ
@given(data=st.one_of(baseline_files, values), cut=st.integers(0, 400))
@example(data={"schema_version": 1}, cut=1)  # found: no "hardware" key crashed with TypeError
def test_baseline_loader_loads_or_names_file_and_field(tmp_path_factory, data, cut):
    path = tmp_path_factory.mktemp("b") / "cpu" / "tiny.json"
    path.parent.mkdir()
    text = json.dumps(data)  # Python's json writes NaN and Infinity, as a hand-edited file may hold
    path.write_text(text[:cut] if cut < len(text) and cut % 3 == 0 else text)
    try:
        loaded = bl.load(path, "cpu", "tiny")
    except bl.BaselineError as exc:
        assert str(path) in str(exc) and "Fix:" in str(exc)
        return
    for entry in loaded.entries.values():  # what loads can gate: finite positive samples only, in every session
        for session in entry.sessions:
            assert all(math.isfinite(s) and s > 0 for samples in session.metrics.values() for s in samples)


@FUZZ
@given(text=st.text(max_size=30))
@example(text="INFINITY")  # found: --dsr1-startup-timeout INFINITY was an infinite deadline
@pytest.mark.parametrize(
    "parse",
    [
        parse_tolerance_override,
        parse_setting_override,
        parse_positive_int,
        parse_non_negative_int,
        parse_seconds,
        parse_alpha,
        parse_missing_baseline,
        parse_budget,
    ],
    ids=["tolerance", "setting", "positive_int", "non_negative_int", "seconds", "alpha", "missing_baseline", "budget"],
)
def test_option_parsers_accept_or_refuse_with_a_message(parse, text):
    try:
        value = parse(text)
    except argparse.ArgumentTypeError as exc:
        assert str(exc)  # argparse turns it into a usage error naming the option
        return
    if parse is parse_seconds:
        assert math.isfinite(value) and value > 0
    if parse is parse_alpha:
        assert 0 < value < 1
    if parse is parse_budget:
        assert value.runs_per_item >= 0 and math.isfinite(value.session_s) and value.session_s >= 0


# What the fuzzers found, kept as plain tests.


def test_found_an_empty_key_is_named_visibly(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("'': 1\n")
    with pytest.raises(MatrixError, match=r"m.yaml: '': unknown key"):
        load_matrix(path)


def test_found_a_baseline_without_hardware_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "cpu" / "tiny.json"
    path.parent.mkdir()
    path.write_text('{"schema_version": 1}')
    with pytest.raises(
        bl.BaselineError,
        match=r"tiny.json: hardware: holds baselines for hardware None.*Fix: set \"hardware\": \"cpu\"",
    ):
        bl.load(path, "cpu", "tiny")


@pytest.mark.parametrize("text", ["inf", "INFINITY", "nan"])
def test_found_an_infinite_timeout_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a finite number"):
        parse_seconds(text)


# Deep and large: what a generated or corrupted file can be, beyond what the value strategies above reach.
deep_or_large = st.one_of(
    st.tuples(st.just("deep list"), st.integers(1, 300_000)),
    st.tuples(st.just("deep mapping"), st.integers(1, 300_000)),
    st.tuples(st.just("long list"), st.integers(0, 2_000_000)),
)


def _deep_or_large(kind: str, n: int, yaml_flow: bool = False) -> str:
    if kind == "deep list":
        return "[" * n + "]" * n
    if kind == "deep mapping":
        return ('{"a": ' if not yaml_flow else "{a: ") * n + "1" + "}" * n
    return "[" + ", ".join("1" for _ in range(n)) + "]"


@settings(FUZZ, max_examples=min(FUZZ.max_examples, 40))
@given(case=deep_or_large)
@example(case=("deep list", 200_000))  # found: INTERNALERROR RecursionError from json.loads
def test_deep_or_large_files_load_or_name_file_and_field(tmp_path_factory, case):
    kind, n = case
    folder = tmp_path_factory.mktemp("deep")
    baseline_file = folder / "cpu" / "tiny.json"
    baseline_file.parent.mkdir()
    baseline_file.write_text(_deep_or_large(kind, n))
    with pytest.raises(bl.BaselineError) as raised:
        bl.load(baseline_file, "cpu", "tiny")
    assert str(baseline_file) in str(raised.value) and "Fix:" in str(raised.value)
    matrix_file = folder / "m.yaml"
    matrix_file.write_text(_deep_or_large(kind, n, yaml_flow=True))
    try:
        load_matrix(matrix_file)
    except MatrixError as exc:
        assert str(matrix_file) in str(exc) and "Fix:" in str(exc)

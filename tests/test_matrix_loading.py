"""The matrix files: the real recipe loads, and every kind of bad input is refused with file, field and fix."""

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import CAUGHT_AT_START_UP, MATRIX, bad_input

from pytest_dsr1.matrix import MatrixError, load_matrix

BASE = """
models:
  m: {id: org/model, precision: fp8}
hardware:
  cpu: {kind: cpu, batch_sizes: [1, 4]}
workloads:
  w: {input_len: 10, output_len: 5}
configs:
  c1: {hardware: cpu, model: m}
"""


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


C1 = "  c1: {hardware: cpu, model: m}"  # BASE's config


def _c2_with(fields: str) -> Callable[[str], str]:
    """A change of BASE: a config c2 on its hardware and model, with `fields` added."""
    return lambda t: t + f"  c2: {{hardware: cpu, model: m, {fields}}}\n"


def _c1_as(line: str) -> Callable[[str], str]:
    """A change of BASE: its config c1 written as `line`."""
    return lambda t: t.replace(C1, line)


def _c1_with(fields: str) -> Callable[[str], str]:
    """A change of BASE: its config c1 with `fields` added."""
    return _c1_as(f"  c1: {{hardware: cpu, model: m, {fields}}}")


def test_recipe_matrix_loads_with_recipe_names():
    m = load_matrix(MATRIX)
    ids = {c.id for c in m.configs}
    assert {
        "h200-fp8-tp8ep",
        "h200-fp8-dp8ep",
        "h200-fp8-tp8ep-deepgemm-ht",
        "h200-fp8-dp8ep-deepgemm-ll",
        "b200-fp8-tp8ep",
        "b200-fp8-dp8ep",
        "b200-fp4-tp4ep",
        "b200-fp4-dp4ep",
        "b200-fp4-tp8ep",
        "cpu-tiny-tp1",
        "cpu-tiny-tp2ep",
    } <= ids
    assert [(w.name, w.input_len, w.output_len) for w in m.workloads] == [
        ("prompt_heavy", 8000, 1000),
        ("decode_heavy", 1000, 8000),
        ("balanced", 1000, 1000),
    ]
    h200 = m.config("h200-fp8-tp8ep")
    assert h200.batch_sizes == (1, 16, 32, 64, 128, 256, 512)
    assert h200.model.hf_id == "deepseek-ai/DeepSeek-R1-0528" and h200.gpus == 8
    assert dict(m.config("h200-fp8-dp8ep-deepgemm-ll").env) == {
        "VLLM_USE_DEEP_GEMM": "1",
        "VLLM_ALL2ALL_BACKEND": "deepep_low_latency",
    }
    assert dict(m.config("b200-fp4-tp4ep").env)["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert m.config("b200-fp4-tp4ep").gpus == 4


def test_cpu_workloads_are_scaled_by_the_stated_factor():
    m = load_matrix(MATRIX)
    cpu = m.config("cpu-tiny-tp1")
    wls = m.workloads_for(cpu)
    assert cpu.workload_scale == 1 / 32
    assert {(w.name, w.input_len, w.output_len) for w in wls} == {
        ("prompt_heavy", 250, 31),
        ("decode_heavy", 31, 250),
        ("balanced", 31, 31),
    }
    assert dict(m.config("cpu-tiny-tp2ep").env) == {
        "VLLM_CPU_OMP_THREADS_BIND": "0|1",
        "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "60",
    }


def test_minimal_matrix(tmp_path):
    m = load_matrix(write(tmp_path, BASE))
    assert [w.id for w in m.workloads_for(m.configs[0])] == ["w-bs1", "w-bs4"]
    assert m.configs[0].markers == ("cpu", "fp8", "tp")


@bad_input("matrix file", CAUGHT_AT_START_UP, per_param=True)
@pytest.mark.parametrize(
    "mutate, field, fix",
    [
        (lambda t: t + "  c2: {hardware: cpu, model: m\n", "(yaml)", "YAML syntax"),
        (lambda t: t + "bogus: 1\n", "bogus", "use one of"),
        (_c2_with("tensor_paralel_size: 2"), "configs.c2.tensor_paralel_size", "use one of"),
        (_c2_with("tensor_parallel_size: two"), "configs.c2.tensor_parallel_size", "positive integer"),
        (_c2_with("enable_expert_parallel: 1"), "configs.c2.enable_expert_parallel", "true or false"),
        (lambda t: t + "  c1: {hardware: cpu, model: m}\n", "(yaml)", "duplicate key 'c1'"),
        (lambda t: t + "  c2: {hardware: cpu, model: nosuch}\n", "configs.c2.model", "use one of: m"),
        (lambda t: t + "  c2: {hardware: tpu, model: m}\n", "configs.c2.hardware", "use one of: cpu"),
        (_c2_with("workloads: [nosuch]"), "configs.c2.workloads[0]", "use one of: w"),
        (_c2_with("settings: {max_modl_len: 5}"), "configs.c2.settings.max_modl_len", "max_model_len"),
        (_c2_with("tolerances: {mean_ttft_ms: 'ten'}"), "configs.c2.tolerances.mean_ttft_ms", "15%:5"),
        (_c2_with("batch_sizes: [0]"), "configs.c2.batch_sizes[0]", "above 0"),
        (_c2_with("extra_args: --foo"), "configs.c2.extra_args", "list of strings"),
        (lambda t: t.replace("precision: fp8", "precision: fp16"), "models.m.precision", "fp8, fp4, bf16"),
    ],
    ids=[
        "malformed YAML",
        "unknown top-level key",
        "unknown config key",
        "wrong type",
        "wrong type (bool)",
        "duplicate id",
        "unknown model name",
        "unknown hardware",
        "unknown workload",
        "unknown setting",
        "bad tolerance",
        "zero batch size",
        "extra_args not a list",
        "unknown precision",
    ],
)
def test_bad_matrix_names_file_field_and_fix(tmp_path, mutate, field, fix, observed):
    path = write(tmp_path, mutate(textwrap.dedent(BASE)))
    with pytest.raises(MatrixError) as exc:
        load_matrix(path)
    assert exc.value.path == str(path)
    assert exc.value.field_name == field
    assert fix in str(exc.value)
    observed(str(exc.value).replace(str(tmp_path), "<dir>"))


@bad_input("matrix: duplicate config id across two files", CAUGHT_AT_START_UP)
def test_duplicate_id_across_files(tmp_path, observed):
    write(tmp_path, BASE, "a.yaml")
    write(tmp_path, "configs:\n  c1: {hardware: cpu, model: m}\n", "b.yaml")
    with pytest.raises(MatrixError, match=r"b\.yaml: configs\.c1: duplicate id \(also defined in .*a\.yaml\)") as exc:
        load_matrix(tmp_path)
    observed(str(exc.value).replace(str(tmp_path), "<dir>"))


def test_gpu_count_must_hold_the_parallelism(tmp_path):
    text = BASE + "  g: {hardware: gpu, model: m, tensor_parallel_size: 8, gpus: 4}\n"
    text = text.replace("hardware:\n", "hardware:\n  gpu: {kind: gpu, gpu_name: H200}\n", 1)
    with pytest.raises(
        MatrixError,
        match=r"configs.g.gpus: 4 GPUs, but the server uses tensor_parallel_size 8 x data_parallel_size 1 = 8",
    ):
        load_matrix(write(tmp_path, text))


def test_missing_matrix_path(tmp_path):
    with pytest.raises(MatrixError, match="does not exist"):
        load_matrix(tmp_path / "nope.yaml")


def test_a_tolerance_set_to_off_is_not_gated(tmp_path):
    m = load_matrix(
        write(
            tmp_path,
            (
                BASE
                + """
tolerances: {output_throughput: "10%", mean_ttft_ms: "15%:5", mean_tpot_ms: "10%"}
"""
            ).replace(
                "c1: {hardware: cpu, model: m}",
                "c1: {hardware: cpu, model: m, tolerances: "
                '{mean_ttft_ms: off, mean_tpot_ms: "off", median_ttft_ms: "20%"}}',
            ),
        )
    )
    tols = m.tolerances_for(m.configs[0])
    assert set(tols) == {"output_throughput", "median_ttft_ms"}
    assert str(tols["median_ttft_ms"]) == "20%"


def test_batches_per_sample_is_inherited_and_checked(tmp_path):
    text = BASE.replace(
        "cpu: {kind: cpu, batch_sizes: [1, 4]}", "cpu: {kind: cpu, batch_sizes: [1, 4], batches_per_sample: 3}"
    )
    m = load_matrix(write(tmp_path, text))
    assert m.configs[0].batches_per_sample == 3
    bad = text.replace("c1: {hardware: cpu, model: m}", "c1: {hardware: cpu, model: m, batches_per_sample: 0}")
    with pytest.raises(MatrixError, match=r"configs\.c1\.batches_per_sample.*must be positive"):
        load_matrix(write(tmp_path, bad, "bad.yaml"))


def test_layers_add_and_replace_and_keep_their_own_workloads(tmp_path):
    """A later layer replaces a same-named config and adds new ones; a config that names no workloads runs its own
    layer's workloads, so a layer's new workload never reaches the configs of another layer."""
    from pytest_dsr1.matrix import MatrixLayer

    base = write(tmp_path, BASE + "  c2: {hardware: cpu, model: m}\n", "base.yaml")
    over = tmp_path / "over"
    over.mkdir()
    write(
        over,
        """
    workloads:
      long: {input_len: 100, output_len: 50}
    configs:
      c2: {hardware: cpu, model: m, batch_sizes: [8]}
      c3: {hardware: cpu, model: m}
      c4: {hardware: cpu, model: m, workloads: [w, long]}
    """,
        "over.yaml",
    )
    write(over, "os: linux\nlanguage: python\n", "ci.yaml")  # not a matrix file: ignored in a folder found by name
    m = load_matrix(base, MatrixLayer(over, foreign_ok=True))
    assert [c.id for c in m.configs] == ["c1", "c2", "c3", "c4"]
    assert [w.id for w in m.workloads_for(m.config("c1"))] == ["w-bs1", "w-bs4"]
    assert [w.id for w in m.workloads_for(m.config("c2"))] == ["long-bs8"]
    assert [w.id for w in m.workloads_for(m.config("c3"))] == ["long-bs1", "long-bs4"]
    assert [w.name for w in m.workloads_for(m.config("c4"))] == ["w", "w", "long", "long"]
    assert m.ignored == (str(over / "ci.yaml"),)
    with pytest.raises(MatrixError, match=r"ci\.yaml: language: unknown key"):
        load_matrix(base, over)  # named explicitly (--dsr1-matrix), every YAML file must be a matrix file


@bad_input("an empty matrix file named with --dsr1-matrix", CAUGHT_AT_START_UP)
def test_an_empty_named_matrix_file_is_named(tmp_path, observed):
    empty = write(tmp_path, "", "empty.yaml")
    with pytest.raises(
        MatrixError, match=r"empty.yaml: \(file\): holds no models, hardware, workloads, configs.*Fix: add entries"
    ) as exc:
        load_matrix(write(tmp_path, BASE, "base.yaml"), empty)
    observed(str(exc.value).replace(str(tmp_path), "<dir>"))


def test_a_duplicate_id_within_one_layer_is_still_an_error(tmp_path):
    d = tmp_path / "layer"
    d.mkdir()
    write(d, BASE, "a.yaml")
    write(d, "configs:\n  c1: {hardware: cpu, model: m}\n", "b.yaml")
    with pytest.raises(MatrixError, match=r"b.yaml: configs.c1: duplicate id \(also defined in .*a.yaml\)"):
        load_matrix(d)


@bad_input("matrix value that would misbehave later", CAUGHT_AT_START_UP, per_param=True)
@pytest.mark.parametrize(
    "patch, field",
    [
        (_c1_with("workload_scale: .nan"), "configs.c1.workload_scale"),
        (_c1_with("workload_scale: .inf"), "configs.c1.workload_scale"),
        (_c1_as("  c1: {hardware: [cpu], model: m}"), "configs.c1.hardware"),
        (_c1_as("  c1: {hardware: cpu, model: {name: m}}"), "configs.c1.model"),
        (_c1_as('  "c1\\n": {hardware: cpu, model: m}'), "configs.c1\n"),
        (_c1_with('env: {"X$(touch f)": "1"}'), "configs.c1.env.X$(touch f)"),
        (_c1_with('env: {"Y;cmd;Z": "1"}'), "configs.c1.env.Y;cmd;Z"),
        (
            lambda t: t.replace("m: {id: org/model, precision: fp8}", "m: {id: 'generated:huge', precision: fp8}"),
            "models.m.id",
        ),
        (_c1_with("tolerances: {output_throughput: '100%'}"), "configs.c1.tolerances.output_throughput"),
        (_c1_with("settings: {max_num_seqs: -1}"), "configs.c1.settings.max_num_seqs"),
        (_c1_with("settings: {gpu_memory_utilization: 1.5}"), "configs.c1.settings.gpu_memory_utilization"),
        (lambda t: t + "benchmark: {random_range_ratio: 1.5}\n", "benchmark.random_range_ratio"),
        (lambda t: t + "benchmark: {request_rate: '-3'}\n", "benchmark.request_rate"),
        (lambda t: t + "benchmark: {num_warmups: -1}\n", "benchmark.num_warmups"),
        (lambda t: t + "benchmark: {dataset_name: nosuch}\n", "benchmark.dataset_name"),
        (_c1_with("settings: {max_model_len: abc}"), "configs.c1.settings.max_model_len"),
        (_c1_with("batch_sizes: [1000000000]"), "configs.c1.batch_sizes[0]"),
        (
            lambda t: t.replace(
                "  cpu: {kind: cpu, batch_sizes: [1, 4]}",
                "  cpu: {kind: cpu, batch_sizes: [1, 4], startup_timeout_s: .nan}",
            ),
            "hardware.cpu.startup_timeout_s",
        ),
        (
            lambda t: t.replace(
                "  cpu: {kind: cpu, batch_sizes: [1, 4]}",
                "  cpu: {kind: cpu, batch_sizes: [1, 4]}\n  g: {kind: gpu, gpu_name: H200}",
            ).replace(C1, "  c1: {hardware: g, model: m, tensor_parallel_size: 3, gpus: 8}"),
            "configs.c1.gpus",
        ),
    ],
    ids=[
        "workload_scale .nan",
        "workload_scale .inf",
        "hardware as a list",
        "model as a mapping",
        "id with a trailing newline",
        "env name with $(...)",
        "env name with ;",
        "generated:<unknown>",
        "throughput tolerance of 100%",
        "max_num_seqs -1",
        "gpu_memory_utilization 1.5",
        "random_range_ratio 1.5",
        "request_rate -3",
        "num_warmups -1",
        "dataset_name nosuch",
        "max_model_len abc",
        "batch size 10^9",
        "startup_timeout_s .nan",
        "tensor_parallel_size 3 with gpus 8",
    ],
)
def test_values_that_would_misbehave_later_are_refused(tmp_path, patch, field, observed):
    text = textwrap.dedent(BASE)
    bad = patch(text)
    assert bad != text
    with pytest.raises(MatrixError) as exc:
        load_matrix(write(tmp_path, bad))
    assert exc.value.field_name == field and "Fix:" in str(exc.value)
    observed(str(exc.value).replace(str(tmp_path), "<dir>"))


def test_off_still_switches_a_throughput_gate_off(tmp_path):
    m = load_matrix(
        write(
            tmp_path,
            BASE.replace(
                "  c1: {hardware: cpu, model: m}",
                "  c1: {hardware: cpu, model: m, tolerances: {output_throughput: off}}",
            ),
        )
    )
    assert "output_throughput" not in m.tolerances_for(m.config("c1"))


def test_config_tolerance_is_a_percentage_that_a_config_inherits_or_overrides(tmp_path):
    text = BASE.replace("{kind: cpu, batch_sizes: [1, 4]}", "{kind: cpu, batch_sizes: [1, 4], config_tolerance: '12%'}")
    text += "  c2: {hardware: cpu, model: m, config_tolerance: 5%}\n"
    m = load_matrix(write(tmp_path, text))
    assert m.config("c1").config_tolerance == pytest.approx(0.12)
    assert m.config("c2").config_tolerance == pytest.approx(0.05)
    assert load_matrix(write(tmp_path, BASE, "plain.yaml")).config("c1").config_tolerance is None
    with pytest.raises(MatrixError, match=r"configs\.c1\.config_tolerance: not a relative change: 'ten'.*'10%'"):
        load_matrix(
            write(
                tmp_path,
                BASE.replace("{hardware: cpu, model: m}", "{hardware: cpu, model: m, config_tolerance: ten}"),
                "bad.yaml",
            )
        )


@bad_input(
    "a layer whose hardware, workload or benchmark would change another file's configs",
    CAUGHT_AT_START_UP,
    per_param=True,
)
@pytest.mark.parametrize(
    "layer, field",
    [
        (
            "hardware:\n  cpu: {kind: cpu, batch_sizes: [64]}\nconfigs:\n  mine: {hardware: cpu, model: m}\n",
            "hardware.cpu",
        ),
        ("workloads:\n  w: {input_len: 8000, output_len: 5}\n", "workloads.w"),
        ("benchmark: {num_warmups: 0}\nconfigs:\n  mine: {hardware: cpu, model: m}\n", "benchmark"),
    ],
    ids=["hardware", "workload", "benchmark"],
)
def test_a_layer_cannot_change_another_files_configs_behind_their_back(tmp_path, layer, field, observed):
    base = write(tmp_path, BASE + "benchmark: {num_warmups: 2}\n", "base.yaml")
    mine = write(tmp_path, layer, "mine.yaml")
    with pytest.raises(MatrixError) as exc:
        load_matrix(base, mine)
    text = str(exc.value)
    assert text.startswith(f"{mine}: {field}:") and "c1" in text and "--dsr1-matrix-alone" in text, text
    if field != "benchmark":
        assert str(base) in text  # both files named
    observed(text.replace(str(tmp_path), "<dir>"))


def test_a_layer_may_change_what_it_redefines_and_runs_alone_with_what_it_borrows(tmp_path):
    base = write(tmp_path, BASE, "base.yaml")
    meant = write(
        tmp_path, "hardware:\n  cpu: {kind: cpu, batch_sizes: [2]}\nconfigs:\n  c1: {hardware: cpu, model: m}\n"
    )
    assert [w.id for w in load_matrix(base, meant).workloads_for(load_matrix(base, meant).config("c1"))] == ["w-bs2"]
    own = write(
        tmp_path,
        "hardware:\n  cpu: {kind: cpu, batch_sizes: [8]}\nconfigs:\n  mine: {hardware: cpu, model: m}\n",
        "own.yaml",
    )
    alone = load_matrix(base, own, alone=True)
    assert [c.id for c in alone.configs] == ["mine"] and "m" in alone.models  # the model comes from base.yaml
    assert [w.id for w in alone.workloads_for(alone.config("mine"))] == ["w-bs8"]

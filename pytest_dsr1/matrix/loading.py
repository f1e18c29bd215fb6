"""Reading a matrix: YAML files (duplicate keys refused), the layers they come in, and their merge into one Matrix.

Which entry wins and what a reference resolves to is decided here; whether each entry is valid is fields.py's.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pytest_dsr1.matrix.fields import (
    expect,
    no_unknown,
    parse_benchmark,
    parse_config,
    parse_hardware,
    parse_model,
    parse_tolerances,
    parse_workload,
)
from pytest_dsr1.matrix.model import TOP_KEYS, BenchmarkSettings, Matrix, MatrixError


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
    return Path(__file__).resolve().parents[2] / "test_matrix"  # this file is pytest_dsr1/matrix/loading.py


def _is_matrix_data(data: Any) -> bool:
    """A YAML document that is meant as a pytest-dsr1 matrix: a mapping with at least one matrix section."""
    return isinstance(data, dict) and bool(set(map(str, data)) & TOP_KEYS)


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
    if not path.is_file():  # a device (/dev/zero would be read forever), a FIFO, a socket
        raise MatrixError(
            path,
            "(file)",
            "is neither a regular file nor a directory",
            "point --dsr1-matrix (or the dsr1_matrix ini key) at a matrix YAML file or a directory of them",
        )
    return [path]


MAX_MATRIX_BYTES = 1024 * 1024  # the shipped matrix is 30 KiB; a file of megabytes is not a matrix


def _read(f: Path) -> Any:
    try:
        size = f.stat().st_size
        if size > MAX_MATRIX_BYTES:
            raise MatrixError(
                f,
                "(file)",
                f"{size:,} bytes: larger than a matrix file can be ({MAX_MATRIX_BYTES:,} bytes at most)",
                "point --dsr1-matrix at the matrix YAML file itself",
            )
        return yaml.load(f.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except RecursionError:
        raise MatrixError(
            f, "(yaml)", "nested too deeply to be a matrix", "write the matrix as the documented mappings and lists"
        ) from None
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


def load_matrix(*layers: Path | str | MatrixLayer, alone: bool = False) -> Matrix:
    """Load and validate the matrix files of each layer; raise MatrixError on the first problem.

    Within a layer an id defined twice is an error. A later layer replaces an earlier layer's entry of the same
    section and name (a config, model, hardware or workload) and adds new ones; its `benchmark` and `tolerances`
    sections replace the earlier ones. References (a config's hardware and model) resolve after the merge.

    A later layer's `hardware`, `workloads` or `benchmark` must not change the configs of an earlier layer behind
    their back (a layer's `hardware: cpu` with the recipe's batch sizes once sent 8,000-token prompts to the
    shipped 2,048-token CPU servers): that is refused, naming both files, unless the layer redefines those configs
    too (then it says what it means). `alone`: only the last layer's configs are kept (--dsr1-matrix-alone), the
    earlier layers lend their models, hardware and workloads.
    """
    raw: dict[str, dict[str, tuple[Path, Any]]] = {k: {} for k in ("models", "hardware", "workloads", "configs")}
    benchmark: tuple[Path, Any] | None = None
    tolerances: tuple[Path, Any] | None = None
    all_files: list[Path] = []
    ignored: list[str] = []
    # A config that names no workloads runs those of its own layer (where its layer defines any), so that a layer's
    # new workloads never reach another layer's configs.
    own_workloads: dict[str, tuple[str, ...]] = {}
    layer_of: dict[tuple[str, str], int] = {}  # (section, name) -> the index of the layer that defined it last
    replaced: dict[tuple[str, str], Path] = {}  # (section, name) -> the earlier layer's file it replaced
    benchmarks: list[tuple[int, Path]] = []
    for index, layer in enumerate(layers):
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
            expect(f, "(top level)", data, dict, "a mapping with keys " + ", ".join(sorted(TOP_KEYS)))
            no_unknown(f, "(top level)", data, TOP_KEYS)
            for section in raw:
                entries = data.get(section) or {}
                expect(
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
                    if name in raw[section]:
                        replaced[(section, name)] = raw[section][name][0]
                    raw[section][name] = (f, spec)
                    layer_of[(section, name)] = index
            if "benchmark" in data:
                if layer_benchmark is not None:
                    raise MatrixError(
                        f, "benchmark", f"defined twice (also in {layer_benchmark})", "keep one benchmark section"
                    )
                layer_benchmark = f
                benchmark = (f, data["benchmark"])
                benchmarks.append((index, f))
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

    if alone:
        last = len(layers) - 1
        raw["configs"] = {n: v for n, v in raw["configs"].items() if layer_of[("configs", n)] == last}
    _no_hidden_redefinition(raw, layer_of, replaced, benchmarks, own_workloads)
    models = {name: parse_model(f, name, spec) for name, (f, spec) in raw["models"].items()}
    hardware = {name: parse_hardware(f, name, spec) for name, (f, spec) in raw["hardware"].items()}
    workloads = tuple(parse_workload(f, name, spec) for name, (f, spec) in raw["workloads"].items())
    configs = tuple(
        parse_config(f, name, spec, models, hardware, own_workloads.get(name, ()))
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
    bench = parse_benchmark(*benchmark) if benchmark else BenchmarkSettings()
    tols = parse_tolerances(tolerances[0], "tolerances", tolerances[1]) if tolerances else ()
    if configs and not workloads:
        raise MatrixError(
            configs[0].source,
            "workloads",
            "no workloads defined",
            "add a workloads section, e.g. prompt_heavy: {input_len: 8000, output_len: 1000}",
        )
    return Matrix(models, hardware, workloads, configs, bench, tols, tuple(str(f) for f in all_files), tuple(ignored))


def _no_hidden_redefinition(
    raw: dict[str, dict[str, tuple[Path, Any]]],
    layer_of: dict[tuple[str, str], int],
    replaced: dict[tuple[str, str], Path],
    benchmarks: list[tuple[int, Path]],
    own_workloads: dict[str, tuple[str, ...]],
) -> None:
    """Refuse a later layer's hardware, workload or benchmark that would change an earlier layer's configs."""
    fix = (
        "give your own entry another name for your own configs, redefine those configs in your file too if you mean "
        "to change them, or run your file's configs alone with --dsr1-matrix-alone"
    )
    by_entry: dict[tuple[str, str], list[str]] = {}
    for name, (_, spec) in raw["configs"].items():
        config_layer = layer_of[("configs", name)]
        spec = spec if isinstance(spec, dict) else {}
        uses = [("hardware", str(spec.get("hardware")))]
        named = spec.get("workloads")
        workloads = named if isinstance(named, list) else own_workloads.get(name) or list(raw["workloads"])
        uses += [("workloads", str(w)) for w in workloads]
        for entry in uses:
            if entry in replaced and layer_of[entry] > config_layer:
                by_entry.setdefault(entry, []).append(name)
        later = [f for i, f in benchmarks if i > config_layer]
        if later and any(i <= config_layer for i, _ in benchmarks):
            by_entry.setdefault(("benchmark", str(later[-1])), []).append(name)
    for (section, name), configs in by_entry.items():
        if section == "benchmark":
            raise MatrixError(
                Path(name),
                "benchmark",
                f"replaces the benchmark settings of the configs {', '.join(configs)}, defined in an earlier file",
                fix,
            )
        new_file = raw[section][name][0]
        raise MatrixError(
            new_file,
            f"{section}.{name}",
            f"replaces the {section} entry {name!r} of {replaced[(section, name)]}, which its configs "
            f"{', '.join(configs)} use: they would run with this file's {section} settings",
            fix,
        )


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

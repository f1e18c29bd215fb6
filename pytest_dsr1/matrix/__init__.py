"""The serving matrix: YAML data files -> validated, frozen ServerConfig and Workload values.

No pytest and no vLLM here: this package is imported by the plugin and by plain scripts alike. Every error names
the file, the field and the fix, so a typo in a matrix file costs seconds.

model.py holds the values, fields.py validates one entry's fields, loading.py reads the files and merges the
layers. Import from here: the split is this package's business, not its users'.
"""

from __future__ import annotations

from pytest_dsr1.matrix.loading import (
    MatrixLayer,
    load_matrix,
    matrix_files,
    matrix_layers,
    packaged_matrix_dir,
)
from pytest_dsr1.matrix.model import (
    GENERATED_MODELS,
    HARDWARE_KINDS,
    MAX_BATCH_SIZE,
    PRECISIONS,
    SETTING_FLAGS,
    BenchmarkSettings,
    Hardware,
    Matrix,
    MatrixError,
    Model,
    ServerConfig,
    Workload,
    WorkloadDef,
    apply_settings,
    item_key,
    setting_problem,
    split_item_key,
)

__all__ = [
    "GENERATED_MODELS",
    "HARDWARE_KINDS",
    "MAX_BATCH_SIZE",
    "PRECISIONS",
    "SETTING_FLAGS",
    "BenchmarkSettings",
    "Hardware",
    "Matrix",
    "MatrixError",
    "MatrixLayer",
    "Model",
    "ServerConfig",
    "Workload",
    "WorkloadDef",
    "apply_settings",
    "item_key",
    "load_matrix",
    "matrix_files",
    "matrix_layers",
    "packaged_matrix_dir",
    "setting_problem",
    "split_item_key",
]

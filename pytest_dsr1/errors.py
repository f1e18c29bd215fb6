"""The suite's input errors: each names the file, the field and the fix, so a mistake costs seconds."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """A file the suite reads (matrix, baseline) is unusable; the message says where, what and how to fix it."""

    def __init__(self, path: Path | str, field_name: str, problem: str, fix: str) -> None:
        self.path = str(path)
        self.field_name = field_name
        super().__init__(f"{path}: {field_name}: {problem}. Fix: {fix}")

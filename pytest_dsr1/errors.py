"""The suite's errors: bad input (each names the file, the field and the fix, so a mistake costs seconds), and an
item that could not be measured."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """A file the suite reads (matrix, baseline) is unusable; the message says where, what and how to fix it."""

    def __init__(self, path: Path | str, field_name: str, problem: str, fix: str) -> None:
        self.path = str(path)
        self.field_name = field_name
        super().__init__(f"{path}: {field_name}: {problem}. Fix: {fix}")


class ItemFailed(Exception):
    """The item cannot be measured (its server did not start or died, its benchmark failed). The message says
    why, with the server's log tail."""

"""Generated tables inside hand-written markdown: a table sits between two HTML comments, `<!-- NAME:start -->`
and `<!-- NAME:end -->`, and regenerating it replaces only that part of the file, so the prose around it and the
command that made it stay where they are. Used by the measurement scripts (scripts/) that write into docs/.
"""

from __future__ import annotations

from pathlib import Path


def markers(section: str) -> tuple[str, str]:
    """The comments that delimit a section's table, e.g. ("<!-- ab-power:start -->", "<!-- ab-power:end -->")."""
    return f"<!-- {section}:start -->", f"<!-- {section}:end -->"


def write_between(path: Path, start: str, end: str, text: str) -> None:
    """Replace the part of `path` between the markers `start` and `end` (which `text` carries, and the one
    character after `end`: its newline) with `text`, or append `text` where the markers are not there yet (a new
    file is created): the command that made a table stays beside it."""
    old = path.read_text() if path.exists() else ""
    if start in old and end in old:
        new = old[: old.index(start)] + text + old[old.index(end) + len(end) + 1 :]
    else:
        new = old + ("\n" if old else "") + text
    path.write_text(new)

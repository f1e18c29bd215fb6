"""The README's option table says what the package's option table says: every option, its value, ini key and
default."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from helpers import REPO

from pytest_dsr1.options import LIST_OPTIONS, OPTIONS


class OptionRow(NamedTuple):
    """A row of the option table as the README writes it, without backticks: `--dsr1-x VALUE`, ini key, default."""

    option: str
    ini: str
    default: str | None  # None (the package's side only): left to the matrix, the hardware or the environment

    @property
    def flag(self) -> str:
        return self.option.split()[0]

    def __str__(self) -> str:
        return f"| {self.option} | {self.ini} | {'(any text)' if self.default is None else self.default} |"


def readme_rows() -> list[OptionRow]:
    """The rows under "## Options" in README.md that start with a `--dsr1-` option."""
    text = (REPO / "README.md").read_text()
    assert "\n## Options\n" in text, "README.md has no '## Options' section"
    section = text.split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `--dsr1-"):
            cells = [_plain(cell) for cell in re.split(r"(?<!\\)\|", line)[1:]] + ["", ""]  # a short row: blanks
            option, ini, default = cells[:3]
            rows.append(OptionRow(option, ini, default))
    return rows


def _plain(cell: str) -> str:
    """A table cell's text: no backticks, `\\|` read as |."""
    return cell.strip().replace("`", "").replace("\\|", "|")


def package_rows() -> list[OptionRow]:
    """The package's options (OPTIONS, then the repeatable LIST_OPTIONS) as README rows."""
    rows = [OptionRow(f"{o.flag} {o.metavar}".strip(), o.ini, default_text(o.default)) for o in OPTIONS]
    return rows + [OptionRow(f"{o.flag} {o.metavar}", o.ini, None) for o in LIST_OPTIONS]


def default_text(default: Any) -> str | None:
    """How the README writes a default value: on/off for a switch, the value itself otherwise; None for none."""
    if default is None:
        return None
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def differences(readme: list[OptionRow], package: list[OptionRow]) -> list[str]:
    """The README's rows that are missing, extra, twice or different from the package's; empty when they agree."""
    ours = {row.flag: row for row in package}
    theirs = {row.flag: row for row in readme}
    found = [f"missing from the README: {row}" for row in package if row.flag not in theirs]
    found += [f"in the README, not an option of the package: {row}" for row in readme if row.flag not in ours]
    flags = [row.flag for row in readme]
    found += [f"in the README {flags.count(f)} times: {f}" for f in sorted(set(flags)) if flags.count(f) > 1]
    for flag in ours.keys() & theirs.keys():
        want, got = ours[flag], theirs[flag]
        # A default path may say where it lies: "baselines in the rootdir" for baselines.
        default_differs = want.default is not None and not (
            got.default == want.default or str(got.default).startswith(want.default + " ")
        )
        if want.option != got.option or want.ini != got.ini or default_differs:
            found.append(f"different: the README has {got}, the package {want}")
    return sorted(found)


def test_the_readme_option_table_is_the_packages():
    problems = differences(readme_rows(), package_rows())
    assert not problems, "README.md's option table (## Options) differs from pytest_dsr1.options:\n" + "\n".join(
        problems
    )


def test_each_kind_of_difference_is_named():
    """The comparison itself: a missing, an extra, a repeated and a different row are each named."""
    package = [
        OptionRow("--dsr1-a N", "dsr1_a", "2"),
        OptionRow("--dsr1-b", "dsr1_b", "off"),
        OptionRow("--dsr1-dir DIR", "dsr1_dir", "runs"),
        OptionRow("--dsr1-env KEY", "dsr1_env", None),
    ]
    readme = [
        OptionRow("--dsr1-a N", "dsr1_a", "3"),
        OptionRow("--dsr1-c", "dsr1_c", "off"),
        OptionRow("--dsr1-c", "dsr1_c", "off"),
        OptionRow("--dsr1-dir DIR", "dsr1_dir", "runs in the rootdir"),
        OptionRow("--dsr1-env KEY", "dsr1_env", "$KEY"),
    ]
    assert differences(readme, package) == [
        "different: the README has | --dsr1-a N | dsr1_a | 3 |, the package | --dsr1-a N | dsr1_a | 2 |",
        "in the README 2 times: --dsr1-c",
        "in the README, not an option of the package: | --dsr1-c | dsr1_c | off |",
        "in the README, not an option of the package: | --dsr1-c | dsr1_c | off |",
        "missing from the README: | --dsr1-b | dsr1_b | off |",
    ]
    assert differences(package, package) == []

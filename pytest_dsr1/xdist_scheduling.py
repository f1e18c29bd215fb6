"""pytest -n: a pytest-xdist scheduler that hands each worker whole server configs.

xdist's LoadScopeScheduling sends whole "scopes" (by default a test module) to one worker; its scope here is the
item's server config, read from the item's id (test_serving[<config>-<workload>-bs<N>], test_correctness[<config>]),
so a worker starts each config's server once and runs all of its items on it. Other tests keep xdist's module
scope. (xdist's own `loadgroup` renames node ids, which pytest 9 no longer lets a plugin do.) Imported only under
xdist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from xdist.scheduler import LoadScopeScheduling

PARAM = re.compile(r"::(?P<test>test_serving|test_correctness)\[(?P<param>[^\]]+)\](?:@.*)?$")


def config_of(nodeid: str, config_ids: Iterable[str]) -> str | None:
    """The server config of a serving item's node id (the longest config id its parameter starts with)."""
    match = PARAM.search(nodeid)
    if match is None:
        return None
    param = match["param"]
    if match["test"] == "test_correctness":
        return param if param in config_ids else None
    found = [c for c in config_ids if param.startswith(f"{c}-")]
    return max(found, key=len) if found else None


class ConfigScheduling(LoadScopeScheduling):  # type: ignore[misc]
    """Whole configs per worker (LoadScopeScheduling, with the config as the scope)."""

    def __init__(self, config: Any, log: Any, config_ids: Iterable[str]) -> None:
        super().__init__(config, log)
        self.config_ids = tuple(config_ids)

    def _split_scope(self, nodeid: str) -> str:
        config_id = config_of(nodeid, self.config_ids)
        return f"dsr1-config:{config_id}" if config_id else str(super()._split_scope(nodeid))

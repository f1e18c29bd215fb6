"""Disjoint GPU slices for servers that run at once in several processes of one host (pytest -n N).

One lock file per GPU (filelock): a server takes the locks of the GPUs it needs, all or none, and holds them
until it stops. A config that needs every GPU therefore waits until the others are done and runs alone; on a
one-GPU host two one-GPU configs run one after the other. The locks are released by the OS when a process dies,
so a crashed worker never holds a GPU. No pytest and no vLLM here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

POLL_S = 2.0


@dataclass
class GpuSlice:
    """The GPUs a server holds: the value for its CUDA_VISIBLE_DEVICES, and the locks to release."""

    gpus: tuple[int, ...]
    waited_s: float = 0.0
    _locks: list[FileLock] = field(default_factory=list, repr=False)

    @property
    def visible_devices(self) -> str:
        return ",".join(map(str, self.gpus))

    def release(self) -> None:
        for lock in self._locks:
            lock.release()
        self._locks.clear()


class GpuSlots:
    """The GPUs of this host (the indices CUDA_VISIBLE_DEVICES allows), shared through lock files in `directory`."""

    def __init__(self, directory: Path, gpus: Sequence[int]) -> None:
        self.directory = Path(directory)
        self.gpus = tuple(gpus)

    def _lock(self, gpu: int) -> FileLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        # thread_local off: a slice is taken in one thread and may be released from another (a fixture's teardown).
        return FileLock(str(self.directory / f"gpu{gpu}.lock"), thread_local=False)

    def try_acquire(self, count: int, wanted: Sequence[int] | None = None) -> GpuSlice | None:
        """`count` free GPUs (lowest indices first), or exactly `wanted`; None when not that many are free."""
        candidates = tuple(wanted) if wanted is not None else self.gpus
        taken: list[FileLock] = []
        gpus: list[int] = []
        for gpu in candidates:
            if len(gpus) == count:
                break
            lock = self._lock(gpu)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                if wanted is not None:
                    break
                continue
            taken.append(lock)
            gpus.append(gpu)
        if len(gpus) == count:
            return GpuSlice(tuple(gpus), _locks=taken)
        for lock in taken:
            lock.release()
        return None

    def acquire(
        self,
        count: int,
        timeout_s: float,
        wanted: Sequence[int] | None = None,
        on_wait: Callable[[float], None] | None = None,
    ) -> GpuSlice:
        """Wait until `count` GPUs (or exactly `wanted`) are free and take them. Raises TimeoutError."""
        if count > len(self.gpus) or (wanted is not None and not set(wanted) <= set(self.gpus)):
            raise ValueError(f"needs {count} GPU(s) {list(wanted or [])}, this host has {list(self.gpus)}")
        t0 = time.monotonic()
        last_note = t0
        while True:
            got = self.try_acquire(count, wanted)
            if got is not None:
                got.waited_s = time.monotonic() - t0
                return got
            now = time.monotonic()
            if now - t0 > timeout_s:
                raise TimeoutError(f"no {count} free GPU(s) of {list(self.gpus)} after {timeout_s:.0f}s")
            if on_wait is not None and now - last_note >= 30:
                on_wait(now - t0)
                last_note = now
            time.sleep(POLL_S)


def visible_gpus(env: tuple[tuple[str, str], ...]) -> list[int] | None:
    """The GPU indices a server's CUDA_VISIBLE_DEVICES names (None: every GPU; ids that are not indices too)."""
    value = dict(env).get("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
    if value is None or not all(part.strip().isdigit() for part in value.split(",") if part.strip()):
        return None
    return [int(part) for part in value.split(",") if part.strip()]

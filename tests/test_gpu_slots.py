"""pytest -n on a GPU host: disjoint GPU slices through one lock file per GPU, across real processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from helpers import REPO

from pytest_dsr1.gpu_slots import GpuSlots


def test_slices_are_disjoint_and_a_whole_host_config_waits_for_all(tmp_path):
    slots = GpuSlots(tmp_path, [0, 1, 2, 3])
    a, b = slots.try_acquire(1), slots.try_acquire(2)
    assert a is not None and b is not None
    assert a.gpus == (0,) and b.gpus == (1, 2) and b.visible_devices == "1,2"
    assert slots.try_acquire(4) is None  # all four: not while others hold some
    assert slots.try_acquire(2) is None and slots.try_acquire(1).gpus == (3,)  # type: ignore[union-attr]
    a.release()
    b.release()
    named = slots.try_acquire(2, wanted=[2, 1])  # a config that names its GPUs gets exactly those
    assert named is not None and named.gpus == (2, 1)


def test_a_one_gpu_host_runs_two_configs_one_after_the_other(tmp_path):
    """Two workers, one GPU: the second waits until the first releases, then gets it."""
    slots = GpuSlots(tmp_path, [0])
    first = slots.acquire(1, timeout_s=5)
    got: list[float] = []

    def second() -> None:
        s = slots.acquire(1, timeout_s=30)
        got.append(s.waited_s)
        s.release()

    t = threading.Thread(target=second)
    t.start()
    time.sleep(3)
    assert not got  # still waiting while the first holds the GPU
    first.release()
    t.join(timeout=30)
    assert got and got[0] >= 2.5


def test_a_wait_times_out_and_a_config_bigger_than_the_host_is_an_error(tmp_path):
    slots = GpuSlots(tmp_path, [0])
    held = slots.acquire(1, timeout_s=1)
    with pytest.raises(TimeoutError, match=r"no 1 free GPU\(s\) of \[0\]"):
        slots.acquire(1, timeout_s=0.5)
    held.release()
    with pytest.raises(ValueError, match=r"needs 2 GPU"):
        slots.acquire(2, timeout_s=1)


def test_a_dead_process_frees_its_gpus(tmp_path):
    """Another process takes GPU 0 and is killed: the OS drops its lock, and the GPU is free again."""
    holder = textwrap.dedent(
        f"""
        import time
        from pytest_dsr1.gpu_slots import GpuSlots
        s = GpuSlots({str(tmp_path)!r}, [0]).acquire(1, timeout_s=5)
        print("held", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert GpuSlots(tmp_path, [0]).try_acquire(1) is None
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert GpuSlots(tmp_path, [0]).try_acquire(1) is not None

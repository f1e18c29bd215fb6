"""Secrets never reach logs, reports or baselines; servers bind to loopback; no shell anywhere."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import MATRIX, REPO

from pytest_dsr1.command import server_command
from pytest_dsr1.matrix import load_matrix
from pytest_dsr1.server import redact_env_secrets, tail

M = load_matrix(MATRIX)


def test_servers_bind_to_loopback_by_default():
    argv = server_command(M.config("h200-fp8-tp8ep"), "m").display_argv
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


def test_hf_token_and_api_keys_are_redacted_from_log_tails(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("loading with token hf_abcdefghijklmnop\nAuthorization: Bearer sk-live-123456\nPATH=/usr/bin\nok\n")
    env = {"HF_TOKEN": "hf_abcdefghijklmnop", "OPENAI_API_KEY": "sk-live-123456", "PATH": "/usr/bin"}
    out = redact_env_secrets(tail(log), env)
    assert "hf_abcdefghijklmnop" not in out and "sk-live-123456" not in out and out.count("***") == 2
    assert "PATH=/usr/bin" in out.splitlines()  # ordinary variables are left alone
    assert redact_env_secrets("PATH=/usr/bin", env) == "PATH=/usr/bin"


def test_no_shell_true_anywhere():
    """No module of the plugin runs a shell (a config value with ;, $() or backticks stays literal)."""
    for path in (REPO / "pytest_dsr1").glob("*.py"):
        assert "shell=True" not in path.read_text(), path


def test_api_key_from_environment_is_hidden_in_dry_run(tmp_path):
    env = {**os.environ, "VLLM_API_KEY": "sk-dry-run-secret", "HF_TOKEN": "hf_dryrunsecret"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-m",
            "cpu",
            "--dsr1-dry-run",
            "--dsr1-run-dir",
            str(tmp_path),
            "test_matrix",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-2000:]
    assert "sk-dry-run-secret" not in out.stdout + out.stderr and "hf_dryrunsecret" not in out.stdout + out.stderr
    assert "VLLM_API_KEY=*** vllm serve" in out.stdout

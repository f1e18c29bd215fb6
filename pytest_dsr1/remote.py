"""A server the suite did not start (--dsr1-target URL): a deployment launched by Kubernetes, Slurm or llm-d. It is
judged like a server the suite starts, with the runner's own calls, but it is never started, restarted or stopped:
`start` and `stop` only write what was checked to the config's log, `wait_ready` waits for /health and checks that
/v1/models serves the config's model, and `alive` asks /health (so that a target that died fails the next items
at once instead of waiting out their timeouts).
"""

from __future__ import annotations

import functools
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
from prometheus_client.parser import text_string_to_metric_families

from pytest_dsr1.hardware import REVEALED_KIND
from pytest_dsr1.server import ServerStartError

HEALTH_TIMEOUT_S = 5.0

# What a target's /metrics reveals of its setup (vLLM's `vllm:cache_config_info` series, one per engine): its kind
# (hardware.REVEALED_KIND), and these, recorded to be read beside a verdict.
REVEALED_SHOWN = ("block_size", "num_gpu_blocks", "gpu_memory_utilization", "enable_prefix_caching")


def revealed_setup(metrics_text: str) -> dict[str, str]:
    """What a /metrics text reveals of the server's setup: the engine count and the cache config of engine 0 (empty
    where the server exposes no cache_config_info, e.g. not vLLM)."""
    try:
        families = list(text_string_to_metric_families(metrics_text))
    except ValueError:
        return {}
    for family in families:
        if family.name == "vllm:cache_config_info":
            samples = sorted(family.samples, key=lambda s: s.labels.get("engine", ""))
            if not samples:
                return {}
            engines = {s.labels.get("engine", "") for s in samples}
            first = samples[0].labels
            found = {"engines": str(len(engines))}
            found.update({k: first[k] for k in (*REVEALED_KIND, *REVEALED_SHOWN) if k in first})
            return found
    return {}


def system_trust() -> str | bool:
    """What an https request of the suite verifies a target against: the system trust store, as OpenSSL (and so
    vLLM's benchmark, through aiohttp) finds it: SSL_CERT_FILE or SSL_CERT_DIR where set, else the system's bundle.
    `requests` would take certifi's bundle instead; REQUESTS_CA_BUNDLE, where set, is the user's choice and wins."""
    chosen = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")
    if chosen:
        return chosen
    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.capath, paths.openssl_cafile, paths.openssl_capath):
        if path and os.path.exists(path):
            return path
    return True


def https_context() -> ssl.SSLContext:
    """The TLS context of the suite's own /metrics scrapes: the system trust store (system_trust)."""
    return _context_for(system_trust())


@functools.lru_cache(maxsize=4)
def _context_for(trust: str | bool) -> ssl.SSLContext:
    # Made once per trust store: a scrape goes out around every run, and loading a CA bundle is not free.
    if isinstance(trust, str):
        if os.path.isdir(trust):
            return ssl.create_default_context(capath=trust)
        return ssl.create_default_context(cafile=trust)
    return ssl.create_default_context()


def _tls_reason(exc: Exception) -> str:
    """The innermost reason of a TLS failure, e.g. `certificate verify failed: self-signed certificate`."""
    text = str(exc)
    for marker in ("certificate verify failed", "wrong version number", "hostname mismatch", "doesn't match"):
        at = text.find(marker)
        if at >= 0:
            return text[at:].split(" (_ssl")[0].rstrip("')\"")
    return type(exc).__name__


def target_problem(url: str) -> str | None:
    """Why `url` cannot be a target, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"--dsr1-target {url!r}: give the server's base URL, e.g. http://10.0.0.5:8000 or https://vllm.example"
    try:
        parts.port  # noqa: B018 (a bad port raises)
    except ValueError:
        return f"--dsr1-target {url!r}: the port is not a number from 0 to 65535"
    return None


def base_url(url: str) -> str:
    """scheme://host:port of a target, without a path (vLLM's routes are at its root)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"  # never a user:password into logs or reports


@dataclass
class RemoteServer:
    """The VllmServer interface for a target: no process, no log of its own."""

    name: str
    target: str  # the base URL
    log_path: Path  # what the suite checked and saw, written here (the target's own log is where it runs)
    api_key: str | None = None
    proc: None = None
    ready_after_s: float | None = None
    models: list[str] = field(default_factory=list)
    version: str | None = None
    revealed: dict[str, str] = field(default_factory=dict)  # what its /metrics says of its setup (revealed_setup)
    gone: str | None = None  # why it stopped answering

    @property
    def host(self) -> str:
        return urlsplit(self.target).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.target)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def url(self) -> str:
        return self.target

    def _get(self, route: str, timeout: float = HEALTH_TIMEOUT_S) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return requests.get(self.target + route, headers=headers, timeout=timeout, verify=system_trust())

    def _note(self, line: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")

    def start(self) -> None:
        self._note(f"target {self.target}: not started by the suite (--dsr1-target); waiting for /health")

    def wait_ready(
        self,
        timeout_s: float,
        progress: Callable[[float], None] | None = None,
        progress_every_s: float = 30.0,
        poll_s: float = 1.0,
        expect_model: str | None = None,
    ) -> float:
        """Wait for /health, then check that /v1/models serves `expect_model`. Raises ServerStartError naming what
        the target answered."""
        started = time.monotonic()
        next_progress = started + progress_every_s
        last = "no answer"
        while True:
            try:
                r = self._get("/health")
                if r.status_code == 200:
                    break
                last = f"HTTP {r.status_code}"
            except requests.exceptions.SSLError as exc:  # it will not heal by waiting
                raise ServerStartError(
                    f"target {self.target} ({self.name}): TLS failed: {_tls_reason(exc)}; the suite and vLLM's "
                    "benchmark verify it against the system trust store: add the deployment's CA there, or point "
                    "SSL_CERT_FILE at it"
                ) from None
            except requests.RequestException as exc:
                last = type(exc).__name__
            now = time.monotonic()
            if now - started >= timeout_s:
                raise ServerStartError(
                    f"target {self.target} ({self.name}) did not answer /health within {timeout_s:.0f}s "
                    f"(last: {last}); the suite starts nothing with --dsr1-target: check that the deployment is up and "
                    "reachable from here"
                )
            if progress and now >= next_progress:
                progress(now - started)
                next_progress += progress_every_s
            time.sleep(poll_s)
        self.ready_after_s = time.monotonic() - started
        self._check_models(expect_model)
        self.version = self._version()
        self.revealed = self.reveal()
        shown = ", ".join(f"{k}={v}" for k, v in self.revealed.items()) or "nothing (no vllm:cache_config_info)"
        self._note(f"ready: /health 200; serves {', '.join(self.models)}; vLLM {self.version or 'unknown'}")
        self._note(f"/metrics reveals: {shown}")
        return self.ready_after_s

    def _check_models(self, expect_model: str | None) -> None:
        try:
            r = self._get("/v1/models")
        except requests.RequestException as exc:
            raise ServerStartError(f"target {self.target}: /v1/models did not answer ({type(exc).__name__})") from None
        if r.status_code == 401:
            raise ServerStartError(
                f"target {self.target}: /v1/models answered 401: the target wants an API key (--dsr1-api-key or "
                "VLLM_API_KEY)"
            )
        try:
            self.models = [str(m["id"]) for m in r.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise ServerStartError(
                f"target {self.target}: /v1/models answered HTTP {r.status_code} without a model list: is it a vLLM "
                "(OpenAI-compatible) server?"
            ) from None
        if expect_model is not None and expect_model not in self.models:
            raise ServerStartError(
                f"target {self.target} serves {', '.join(self.models) or 'no model'}, but {self.name} is "
                f"{expect_model}: name the config it serves with --dsr1-target-config, or point --dsr1-target at the "
                "deployment of this one"
            )

    def reveal(self) -> dict[str, str]:
        """What the target's /metrics reveals of its setup; empty where it does not answer (never raises)."""
        try:
            r = self._get("/metrics")
            return revealed_setup(r.text) if r.status_code == 200 else {}
        except requests.RequestException:
            return {}

    def version_or_unknown(self) -> str:
        """The endpoint's vLLM version from /version, or 'unknown' (for labels; never raises)."""
        return self._version() or "unknown"

    def _version(self) -> str | None:
        try:
            r = self._get("/version")
            return str(r.json().get("version")) if r.status_code == 200 else None
        except (requests.RequestException, ValueError, AttributeError):
            return None

    def alive(self) -> bool:
        if self.gone is not None:
            return False
        try:
            ok = self._get("/health").status_code == 200
        except requests.RequestException as exc:
            ok, self.gone = False, f"/health did not answer ({type(exc).__name__})"
        if not ok and self.gone is None:
            self.gone = "/health did not answer 200"
        return ok

    def healthy(self) -> bool:
        return self.alive()

    def exit_description(self) -> str:
        return f"the target stopped answering: {self.gone or 'unknown'}"

    def engine_death(self) -> str | None:
        return None

    def log_tail(self, lines: int = 40) -> str:
        return (
            f"(a --dsr1-target: its log is where it runs; what the suite checked is in {self.log_path})"
            if lines
            else ""
        )

    def stop(self, grace_s: float = 30.0) -> None:
        self._note("the suite is done with the target; it keeps running (not stopped by the suite)")

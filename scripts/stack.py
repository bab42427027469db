"""Starting and stopping the local stack: sandbox, service (gunicorn) and workers.

Used by the demo, the integration tests and the benchmarks, so that all three
run the same processes the same way. Loopback only.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WEBHOOK_SECRET = "whsec_sandbox_test_secret"
PRESCRIBERS = {
    # The sandbox's seed identities (sandbox/directory.py): development only.
    "dr.jones@example.test": ("sandbox-jones-pass", "481516"),
    "dr.patel@example.test": ("sandbox-patel-pass", "234223"),
}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, *, timeout_s: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers any HTTP status; raises RuntimeError on timeout or exit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


@dataclass
class Stack:
    """A set of processes started for one run; :meth:`stop` ends them all."""

    env: dict[str, str]
    sandbox_url: str = ""
    service_url: str = ""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    log_dir: Path = field(default_factory=lambda: REPO_ROOT / "instance" / "logs")

    def _spawn(
        self, name: str, args: list[str], extra_env: Mapping[str, str] | None = None
    ) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        env = {**self.env, **(extra_env or {})}
        proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def start_sandbox(
        self, *, port: int | None = None, webhook_port: int, extra: Iterable[str] = ()
    ) -> str:
        """Start ``python -m sandbox``; returns its base URL once it answers."""
        port = port or free_port()
        proc = self._spawn(
            "sandbox",
            [
                str(BIN / "python"),
                "-m",
                "sandbox",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webhook-url",
                f"http://127.0.0.1:{webhook_port}/webhooks/platform",
                "--webhook-secret",
                WEBHOOK_SECRET,
                *extra,
            ],
        )
        self.sandbox_url = f"http://127.0.0.1:{port}"
        wait_http(self.sandbox_url + "/sandbox/stats", proc=proc)
        self.env["ERX_BASE_URL"] = self.sandbox_url
        return self.sandbox_url

    def start_service(self, *, port: int, workers: int = 2) -> str:
        """Start the service under gunicorn with the project's gunicorn.conf.py."""
        proc = self._spawn(
            "service",
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
            {"BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(workers)},
        )
        self.service_url = f"http://127.0.0.1:{port}"
        wait_http(self.service_url + "/healthz", proc=proc)
        return self.service_url

    def start_worker(self, name: str = "worker", *args: str) -> subprocess.Popen:
        """Start ``flask --app app worker`` as process ``name``."""
        return self._spawn(name, [str(BIN / "flask"), "--app", "app", "worker", *args])

    def flask(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        """Run one ``flask --app app`` command to completion; returns its stdout."""
        result = subprocess.run(
            [str(BIN / "flask"), "--app", "app", *args],
            cwd=REPO_ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"flask {args[0]} failed: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def bearer(
        self, *, role: str = "service", subject: str = "demo-service", ttl_s: int = 3600
    ) -> dict[str, str]:
        """An ``Authorization`` header with a development JWT from ``flask tokens mint`` (this stack's settings)."""
        token = self.flask(
            "tokens", "mint", "--role", role, "--sub", subject, "--ttl", str(ttl_s)
        ).strip()
        return {"Authorization": f"Bearer {token}"}

    def prepare_database(self) -> None:
        """Migrate, seed, and store the sandbox prescribers' credentials."""
        subprocess.run(
            [str(BIN / "alembic"), "upgrade", "head"],
            cwd=REPO_ROOT,
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.flask("seed")
        for email, (password, pin) in PRESCRIBERS.items():
            self.flask(
                "prescribers",
                "set-credentials",
                email,
                env={"ERX_PRESCRIBER_PASSWORD": password, "ERX_PRESCRIBER_PIN": pin},
            )

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every process, then SIGKILL what is left after ``timeout_s``."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def base_env(**overrides: str) -> dict[str, str]:
    """Return the environment for the stack's processes (development settings)."""
    env = dict(os.environ)
    # The local stack talks to the sandbox with its development identities,
    # whatever a developer's shell exports (only DATABASE_URL is taken from it).
    env["ERX_ENV"] = "development"
    env["WEBHOOK_SECRETS"] = WEBHOOK_SECRET
    for name in ("ERX_CLIENT_ID", "ERX_CLIENT_SECRET", "ERX_ENCRYPTION_KEYS", "ERX_BASE_URL"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    # The server and `flask tokens mint` are separate processes: they must share one
    # HS256 secret, made fresh for this stack (no committed value ever verifies a token).
    env.setdefault("JWT_SECRET", secrets.token_urlsafe(32))
    # Benchmarks and the demo drive the API from one address at machine rates: the rate
    # limits (app/interfaces/rate_limits.py) are for people and scripts on the internet, not for them.
    for name in ("RATE_LIMIT_SEARCH", "RATE_LIMIT_SEND", "RATE_LIMIT_AUTH_FAILURES"):
        env.setdefault(name, "1000000 per minute")
    env.update(overrides)
    return env

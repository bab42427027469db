"""Integration fixtures: the real sandbox process, the service over real HTTP, workers.

The sandbox runs as its own process (``python -m sandbox``), the other side of
the wire. The service runs on a loopback port in a background thread (a real
threaded WSGI server) against the real test database; workers run as threads
or, for the chaos test, as ``flask --app app worker`` processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from app import create_app
from app.foundation.config import Settings
from app.foundation.db import Database
from app.interfaces.worker import WorkerLoop
from app.services.connector_factory import make_client
from app.services.dispatch import Dispatcher
from scripts.stack import Stack, base_env, free_port
from tests.conftest import PRESCRIBER_SECRETS, bearer, make_settings
from webhooks.processing import InboxProcessor

pytestmark = pytest.mark.integration


@dataclass
class Sandbox:
    """Handle on the sandbox process: base URL and control helpers."""

    url: str
    webhook_port: int

    def control(self, **values: Any) -> dict:
        resp = requests.post(f"{self.url}/sandbox/control", json=values, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def reset(self) -> None:
        requests.post(f"{self.url}/sandbox/reset", timeout=10).raise_for_status()

    def stats(self) -> dict:
        return requests.get(f"{self.url}/sandbox/stats", timeout=10).json()


DEFAULT_CONTROLS: dict[str, Any] = {
    "fail_500_rate": 0.0,
    "fail_503_rate": 0.0,
    "rate_limit_rate": 0.0,
    "timeout_before_commit_rate": 0.0,
    "issue_delay_s": 0.0,
    "void_delay_s": 0.0,
    "commit_then_drop_rate": 0.0,
    "session_expired_rate": 0.0,
    "webhook_duplicate_rate": 0.0,
    "webhook_drop_rate": 0.0,
    "webhook_shuffle": False,
    "webhook_hold": False,
    "auto": False,
    "auto_delay_s": 0.2,
    "token_ttl_s": 3600,
    "session_ttl_s": 1800,
    "webhook_retry_base_s": 0.2,
    "retry_after_s": 1,
}


@pytest.fixture(scope="session")
def sandbox_process() -> Iterator[Sandbox]:
    webhook_port = free_port()
    stack = Stack(env=base_env())
    stack.start_sandbox(webhook_port=webhook_port, extra=["--webhook-retry-base", "0.2"])
    try:
        yield Sandbox(stack.sandbox_url, webhook_port)
    finally:
        stack.stop()


@pytest.fixture
def sandbox(sandbox_process: Sandbox) -> Sandbox:
    sandbox_process.reset()
    sandbox_process.control(**DEFAULT_CONTROLS)
    return sandbox_process


class LiveService:
    """The service app served over real HTTP on the sandbox's webhook port."""

    def __init__(self, app: Any, port: int) -> None:
        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.app = app

    def __enter__(self) -> LiveService:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(10)

    def auth(self, *, role: str = "service", subject: str = "svc-tests") -> dict[str, str]:
        """An ``Authorization`` header with a development JWT for this service (default: a service caller)."""
        return bearer(self.app, role=role, subject=subject)


@pytest.fixture
def live_settings(db_url: str, tmp_path, sandbox: Sandbox) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(db_url, erx_base_url=sandbox.url, mail_dir=str(tmp_path / "mail"))


@pytest.fixture
def live(live_settings: Settings, seeded: Database, sandbox: Sandbox) -> Iterator[LiveService]:
    app = create_app(live_settings, db=seeded)
    runner = app.test_cli_runner()
    for email, (password, pin) in PRESCRIBER_SECRETS.items():
        result = runner.invoke(
            args=["prescribers", "set-credentials", email],
            env={"ERX_PRESCRIBER_PASSWORD": password, "ERX_PRESCRIBER_PIN": pin},
        )
        assert result.exit_code == 0, result.output
    with LiveService(app, sandbox.webhook_port) as service:
        yield service


@contextmanager
def worker_threads(settings: Settings, db: Database, count: int = 1) -> Iterator[list[WorkerLoop]]:
    """Run ``count`` worker loops (dispatch + inbox) in threads until the block ends."""
    loops, threads = [], []
    for i in range(count):
        wid = f"test-worker-{i}"
        loop = WorkerLoop(
            Dispatcher(db, settings, make_client(settings), worker_id=wid),
            InboxProcessor(
                db,
                worker_id=wid,
                base_s=settings.inbox_backoff_base_s,
                cap_s=settings.inbox_backoff_cap_s,
            ),
            poll_s=settings.worker_poll_s,
        )
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()
        loops.append(loop)
        threads.append(thread)
    try:
        yield loops
    finally:
        for loop in loops:
            loop.stop.set()
        for thread in threads:
            thread.join(30)


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.1) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")

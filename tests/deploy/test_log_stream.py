"""One log stream, redacted once: gunicorn with the repo's gunicorn.conf.py, both streams read.

A request whose handler logs a bearer token, an email and a post code leaves exactly one
line for that record, JSON, on stderr, with all three masked; stdout stays empty, and
every other line (gunicorn's own, the access line) is JSON and masked too. The worker
process writes the same way.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import requests

from scripts.stack import BIN, REPO_ROOT, base_env, free_port, wait_http
from tests.deploy.log_probe_wsgi import PROBE_EMAIL, PROBE_POSTCODE, PROBE_TOKEN
from tests.deploy.rendered import STARTUP_S
from tests.support import run_repo_command

pytestmark = pytest.mark.integration

SECRETS = (PROBE_TOKEN, PROBE_EMAIL, PROBE_POSTCODE, "jo.bloggs")


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


def test_gunicorn_writes_each_record_once_as_redacted_json(db_url: str, seeded) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = base_env(
        DATABASE_URL=db_url,
        BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        GUNICORN_ACCESSLOG="1",
        PROMETHEUS_MULTIPROC_DIR="",
    )
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "tests.deploy.log_probe_wsgi:app"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc, timeout_s=STARTUP_S)
        response = requests.get(
            f"http://127.0.0.1:{port}/_log_probe", params={"email": PROBE_EMAIL}, timeout=10
        )
        assert response.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)

    assert out == ""
    records = json_lines(err)
    probe = [r for r in records if r["logger"] == "app.probe"]
    assert len(probe) == 1, err
    assert (
        probe[0]["message"]
        == "probe: Authorization Bearer [redacted] from [redacted] at [redacted]"
    )
    assert probe[0]["patient_email"] == "[redacted]"
    assert probe[0]["request_id"]
    # gunicorn's own lines and the access line share the stream, masked the same way.
    loggers = {r["logger"] for r in records}
    assert {"gunicorn.error", "gunicorn.access"} <= loggers
    access = [
        r for r in records if r["logger"] == "gunicorn.access" and "_log_probe" in r["message"]
    ]
    assert len(access) == 1
    assert not any(secret in err for secret in SECRETS), err


def test_the_worker_writes_json_on_stderr_only(db_url: str, seeded) -> None:  # type: ignore[no-untyped-def]
    env = base_env(DATABASE_URL=db_url, LOG_LEVEL="DEBUG")
    result = run_repo_command(["flask", "--app", "app", "worker", "--max-seconds", "1"], env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == ""
    records = json_lines(result.stderr)
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)

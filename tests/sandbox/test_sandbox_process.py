"""Smoke test of ``python -m sandbox`` as a real process."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import requests

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_cli_serves_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--seed",
            "1",
            "--webhook-url",
            "http://127.0.0.1:9/unused",
            "--webhook-secret",
            "whsec_cli_test",
            "--token-ttl",
            "5",
            "--omit-expires-in",
            "--auto",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True)
    reader.start()
    try:
        line = lines.get(timeout=20)
        assert line.startswith("sandbox listening on http://127.0.0.1:"), line
        base = line.split(" on ", 1)[1].strip()
        stats = requests.get(f"{base}/sandbox/stats", timeout=5)
        assert stats.status_code == 200
        assert stats.json()["prescriptions_issued"] == 0
        control = requests.get(f"{base}/sandbox/control", timeout=5).json()
        assert control["token_ttl_s"] == 5.0
        assert control["omit_expires_in"] is True and control["auto"] is True
        assert control["webhook_url"] == "http://127.0.0.1:9/unused"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr

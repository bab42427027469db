"""gunicorn.conf.py: process settings from the environment, JSON logs on stderr, no control socket.

The file is loaded the way gunicorn loads it (gunicorn's own config machinery, the
pinned gunicorn), so a setting name this gunicorn does not know would show up here
instead of being silently ignored at start-up.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn.app.base import Application
from gunicorn.config import Config
from gunicorn.glogging import Logger

CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"

ENV_NAMES = (
    "BIND",
    "WEB_CONCURRENCY",
    "GUNICORN_THREADS",
    "GUNICORN_TIMEOUT",
    "GUNICORN_GRACEFUL_TIMEOUT",
    "GUNICORN_KEEPALIVE",
    "GUNICORN_MAX_REQUESTS",
    "GUNICORN_MAX_REQUESTS_JITTER",
    "GUNICORN_ACCESSLOG",
    "GUNICORN_LOGLEVEL",
    "GUNICORN_WORKER_TMP_DIR",
)


class _ConfOnly(Application):
    """A gunicorn application that only loads gunicorn.conf.py (no WSGI app, no argv)."""

    def init(self, parser: Any, opts: Any, args: Any) -> None:  # pragma: no cover - unused
        return None

    def load_config(self) -> None:
        self.cfg = Config()
        self.load_config_from_file(str(CONF))

    def load(self) -> None:  # pragma: no cover - never served
        raise AssertionError("not served")


def load_conf(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Config:
    """gunicorn's Config after reading gunicorn.conf.py with exactly ``env`` for its variables."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    # Loading the file sets PROMETHEUS_MULTIPROC_DIR when several workers run; recorded
    # here so that monkeypatch takes it out of this process's environment afterwards.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return _ConfOnly().cfg


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put back the root and gunicorn loggers that a gunicorn Logger set-up reconfigures."""
    names = (None, "gunicorn.error", "gunicorn.access")
    saved = {
        n: (
            logging.getLogger(n).handlers[:],
            logging.getLogger(n).level,
            logging.getLogger(n).propagate,
        )
        for n in names
    }
    yield
    for n, (handlers, level, propagate) in saved.items():
        log = logging.getLogger(n)
        log.handlers[:] = handlers
        log.setLevel(level)
        log.propagate = propagate


def test_empty_environment_gives_the_documented_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_conf(monkeypatch, {})

    assert cfg.address == [("127.0.0.1", 8000)]
    assert cfg.workers == multiprocessing.cpu_count() * 2
    assert cfg.worker_class_str == "gthread"
    assert cfg.threads == 4
    assert cfg.timeout == 30
    assert cfg.graceful_timeout == 20
    assert cfg.keepalive == 5
    assert cfg.max_requests == 0
    assert cfg.max_requests_jitter == 0
    assert cfg.worker_tmp_dir is None
    assert cfg.accesslog is None
    assert cfg.loglevel == "info"


def test_every_knob_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_conf(
        monkeypatch,
        {
            "BIND": "0.0.0.0:8080",
            "WEB_CONCURRENCY": "3",
            "GUNICORN_THREADS": "8",
            "GUNICORN_TIMEOUT": "45",
            "GUNICORN_GRACEFUL_TIMEOUT": "25",
            "GUNICORN_KEEPALIVE": "2",
            "GUNICORN_MAX_REQUESTS": "5000",
            "GUNICORN_MAX_REQUESTS_JITTER": "500",
            "GUNICORN_ACCESSLOG": "1",
            "GUNICORN_LOGLEVEL": "WARNING",
            "GUNICORN_WORKER_TMP_DIR": "/dev/shm",
        },
    )

    assert cfg.address == [("0.0.0.0", 8080)]
    assert cfg.workers == 3
    assert cfg.threads == 8
    assert cfg.timeout == 45
    assert cfg.graceful_timeout == 25
    assert cfg.keepalive == 2
    assert cfg.max_requests == 5000
    assert cfg.max_requests_jitter == 500
    assert cfg.worker_tmp_dir == "/dev/shm"
    assert cfg.accesslog == "-"
    assert cfg.loglevel == "warning"


def test_the_shared_control_socket_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    # The setting exists in the pinned gunicorn and the file turns it off.
    assert "control_socket_disable" in Config().settings
    assert Config().control_socket_disable is False

    assert load_conf(monkeypatch, {}).control_socket_disable is True


@pytest.mark.parametrize(
    "name", ["WEB_CONCURRENCY", "GUNICORN_TIMEOUT", "GUNICORN_MAX_REQUESTS_JITTER"]
)
@pytest.mark.parametrize("value", ["four", "-1", "2.5"])
def test_a_malformed_number_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    for other in ENV_NAMES:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.setenv(name, value)

    with pytest.raises(ValueError, match=name):
        runpy.run_path(str(CONF))


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("access", ["", "1"])
def test_gunicorn_and_application_logs_are_one_redacted_json_stream_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], access: str
) -> None:
    cfg = load_conf(monkeypatch, {"GUNICORN_ACCESSLOG": access})
    Logger(cfg)  # applies errorlog/accesslog/logconfig_dict exactly as the arbiter does

    logging.getLogger("gunicorn.error").info("arbiter line")
    logging.getLogger("app.interfaces.worker").info("application line for jo@example.test")
    logging.getLogger("gunicorn.access").info("access line")

    out, err = capsys.readouterr()
    assert out == ""
    lines = [json.loads(line) for line in err.splitlines()]
    messages = [line["message"] for line in lines]
    assert messages.count("arbiter line") == 1
    assert messages.count("application line for [redacted]") == 1
    assert messages.count("access line") == (1 if access else 0)
    assert "jo@example.test" not in err


def test_several_workers_get_a_multiprocess_directory_emptied_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = load_conf(monkeypatch, {"WEB_CONCURRENCY": "4"})
    made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert made.is_dir()
    (made / "counter_1.db").write_bytes(b"")
    cfg.on_starting(None)
    assert list(made.iterdir()) == []
    cfg.on_exit(None)  # the directory it made goes with the arbiter
    assert not made.exists()

    # An operator's directory (the k8s emptyDir) is kept and emptied, not replaced.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "gauge_livemax_7.db").write_bytes(b"")
    own = load_conf(
        monkeypatch, {"WEB_CONCURRENCY": "4", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    )
    own.on_starting(None)
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
    assert list(tmp_path.iterdir()) == []
    own.on_exit(None)
    assert tmp_path.is_dir()

    # One worker: single-process mode, nothing set.
    load_conf(monkeypatch, {"WEB_CONCURRENCY": "1"})
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == ""


def test_child_exit_drops_a_dead_workers_live_gauges_in_multiprocess_mode(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = load_conf(monkeypatch, {})
    live = tmp_path / "gauge_livemax_4242.db"  # erx_circuit_breaker_open's file for pid 4242
    counter = tmp_path / "counter_4242.db"  # counters stay: their totals must not drop
    live.write_bytes(b"")
    counter.write_bytes(b"")
    worker = type("Worker", (), {"pid": 4242})()

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    cfg.child_exit(None, worker)  # single-process mode: nothing to do
    assert live.exists()

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    cfg.child_exit(None, worker)
    assert not live.exists() and counter.exists()

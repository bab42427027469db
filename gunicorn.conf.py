"""gunicorn settings for the service (`gunicorn -c gunicorn.conf.py wsgi:app`).

Every knob is an environment variable (twelve-factor, like the service's own
settings); the k8s ConfigMap sets them per overlay. Benchmarks use exactly this
file. Names, defaults and meaning (also in docs/operations.md, "Process settings"):

| variable                       | default          | gunicorn setting      |
|--------------------------------|------------------|-----------------------|
| BIND                           | 127.0.0.1:8000   | bind                  |
| WEB_CONCURRENCY                | 2 x CPU count    | workers (processes)   |
| GUNICORN_THREADS               | 4                | threads per worker    |
| GUNICORN_TIMEOUT               | 30 (s)           | timeout               |
| GUNICORN_GRACEFUL_TIMEOUT      | 20 (s)           | graceful_timeout      |
| GUNICORN_KEEPALIVE             | 5 (s)            | keepalive             |
| GUNICORN_MAX_REQUESTS          | 0 (never)        | max_requests          |
| GUNICORN_MAX_REQUESTS_JITTER   | 0                | max_requests_jitter   |
| GUNICORN_ACCESSLOG             | unset (off)      | access lines, stdout  |
| GUNICORN_LOGLEVEL              | info             | loglevel              |
| GUNICORN_WORKER_TMP_DIR        | unset (tmpdir)   | worker_tmp_dir        |

Every log line (gunicorn's own, access lines when enabled, and the application's
through the root logger) is written ONCE, as a redacted JSON line, to stderr: one
handler on the root logger (app.foundation.logs.json_handler), gunicorn's loggers propagating
to it with none of their own, and a record factory masking every record at creation
(app.foundation.logs.install_redaction), so no handler can write an unmasked line. stdout stays
empty. Metrics: with more than one worker, prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR; a fresh directory is made when unset, and the directory is
emptied at start; ``child_exit`` marks dead workers). gunicorn's shared
control socket (new in gunicorn 24+, default ``$HOME/.gunicorn/gunicorn.ctl``)
is disabled: every instance on a host would share that one path, the read-only
root filesystem in k8s has no writable $HOME, and nothing here uses it.

A malformed number fails at start-up with a ValueError naming the variable.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile

from app.foundation.dotenv_loading import load_development_dotenv

# A development .env before anything below reads the environment (never in production): the
# master then sees its JWT_SECRET, WEB_CONCURRENCY... exactly as `flask` commands do.
load_development_dotenv()


def _int_env(name: str, default: int) -> int:
    """The integer in environment variable ``name``, or ``default`` when unset or empty.

    Raises ValueError naming the variable when the value is not a whole number >= 0.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _flag_env(name: str) -> bool:
    """True when environment variable ``name`` is set to anything but ``""``, ``0``, ``false``, ``no``, ``off``."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = _int_env("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2)
worker_class = "gthread"
threads = _int_env("GUNICORN_THREADS", 4)
# A worker silent this long is killed and replaced (seconds).
timeout = _int_env("GUNICORN_TIMEOUT", 30)
# After SIGTERM, in-flight requests get this long to finish (seconds); k8s's
# terminationGracePeriodSeconds for the web pods is set above it.
graceful_timeout = _int_env("GUNICORN_GRACEFUL_TIMEOUT", 20)
# Above the load balancer's idle timeout is wrong (it would reuse a closed
# connection); 5 s sits below common ingress defaults (60 s upstream keep-alive).
keepalive = _int_env("GUNICORN_KEEPALIVE", 5)
# Recycle a worker after this many requests (0: never), plus up to `jitter`
# more so that the workers do not all restart at the same moment.
max_requests = _int_env("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _int_env("GUNICORN_MAX_REQUESTS_JITTER", 0)
# The heartbeat file; in k8s the root filesystem is read-only, so this points
# at a memory-backed emptyDir (gunicorn's docs advise against disk-backed dirs).
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or None

# The webhook receiver answers 401 (with a reason) to oversized signature headers
# itself; gunicorn's 8 KiB default would cut them off with a bare 400 first.
limit_request_field_size = 32768

# gunicorn 27 starts a control socket server in the arbiter unless told not to.
control_socket_disable = True

# -- logging: one stream, redacted once -------------------------------------------------
access_log_enabled = _flag_env("GUNICORN_ACCESSLOG")
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info").lower()
accesslog = "-" if access_log_enabled else None
errorlog = "-"
# Merged over gunicorn's CONFIG_DEFAULTS: the root logger gets the service's JSON handler
# (app/foundation/logs.py: redaction, request ids; stderr), gunicorn's loggers get no handler of their
# own and propagate to it. In each worker, create_app() replaces that handler with an
# identical one (configure_logging), never adds a second.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["json"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": [], "propagate": True},
        # With a logconfig_dict gunicorn formats access lines always; WARNING
        # drops them unless GUNICORN_ACCESSLOG asks for them.
        "gunicorn.access": {
            "level": "INFO" if access_log_enabled else "WARNING",
            "handlers": [],
            "propagate": True,
        },
    },
    "handlers": {"json": {"()": "app.foundation.logs.json_handler"}},
    "formatters": {},
}


# -- metrics: multiprocess mode ----------------------------------------------------------
# prometheus_client picks its storage when a process first imports it: the variable must be
# set here, in the master, before any worker imports the app. Unset with several workers, a
# fresh private directory stands in (make run, docker run); k8s sets a memory-backed emptyDir.
_made_metrics_dir = ""
if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip():
    _made_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix="erx-metrics-"
    )


def on_exit(server: object) -> None:
    """Remove the metrics directory this file made (never one the operator set)."""
    if _made_metrics_dir:
        shutil.rmtree(_made_metrics_dir, ignore_errors=True)


def on_starting(server: object) -> None:
    """Check the service's settings, then empty the multiprocess metrics directory.

    Settings first, in the master: a ConfigError (a production setting missing, a
    malformed value) ends gunicorn with one line on stderr naming the setting and exit
    status 1, before any worker is forked (otherwise each worker would fail to boot
    with a traceback). app.foundation.config imports no metrics code, so the multiprocess choice
    made above still reaches the workers.

    Then the directory: a container restart keeps its emptyDir, and the files of the
    previous run's workers would be added to this run's counters (prometheus_client
    docs, "Multiprocess Mode": the directory must be wiped between runs).
    """
    from app.foundation.config import ConfigError, load_settings

    try:
        load_settings()
    except ConfigError as exc:
        print(f"erx-connector: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if not path:
        return
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


def child_exit(server: object, worker: object) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics (prometheus_client docs,
    "Multiprocess Mode": gunicorn's ``child_exit`` must call ``mark_process_dead``).

    Only when ``PROMETHEUS_MULTIPROC_DIR`` is set (app/mechanisms/metrics.py); imported here so the
    master loads prometheus_client only in multiprocess mode.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


# --- Errors gunicorn answers itself, in the service's JSON shape --------------------------
# Before a request reaches the app, gunicorn refuses what breaks its own limits: a request
# line over limit_request_line (8190 bytes, its maximum) -> 414, more than
# limit_request_fields (100) headers or one over limit_request_field_size (above) -> 431,
# and unparseable HTTP -> 400. Its page for these is HTML; every client of this service
# reads {"code", "message", "errors"} (app/interfaces/errors.py), so the writer is replaced by one that
# answers that JSON. gunicorn's message is not echoed: it quotes the request line, which can
# carry search text. Limits and codes: README, "Request size limits".
_JSON_ERROR_MESSAGES = {
    400: "The request is not valid HTTP.",
    414: "The request line (method, path and query) is longer than 8190 bytes.",
    431: "Too many request headers (more than 100), or one longer than 32768 bytes.",
}


def _write_json_error(sock: object, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error's signature: write ``status_int`` as the JSON error shape."""
    import json as _json

    from gunicorn import util as _util

    code = "".join(ch if ch.isalnum() else "_" for ch in reason.lower()).strip("_") or "error"
    message = _JSON_ERROR_MESSAGES.get(status_int, reason)
    body = _json.dumps({"code": code, "message": message, "errors": {}}).encode("ascii")
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    _util.write_nonblock(sock, head.encode("latin-1") + body)


def _answer_gunicorn_errors_in_json() -> None:
    from gunicorn import util as _util

    _util.write_error = _write_json_error  # looked up at call time by gunicorn's workers


_answer_gunicorn_errors_in_json()
# --- end of the JSON error block ------------------------------------------------------------


# --- One development JWT secret for every worker ---------------------------------------------
# Without JWT_SECRET a development app makes a random secret per process (app/foundation/config.py: no
# committed value may verify a token). Each gunicorn worker is a process, so a token minted
# by one worker (the development page) would fail in another: the master makes the one
# secret here, before forking, and the workers inherit it. Never in production, never logged.
if (os.environ.get("ERX_ENV", "").strip() or "development") != "production" and not os.environ.get(
    "JWT_SECRET", ""
).strip():
    import logging as _logging
    import secrets as _secrets

    os.environ["JWT_SECRET"] = _secrets.token_urlsafe(32)
    _logging.getLogger("app.foundation.config").warning(
        "JWT_SECRET is not set: the workers share a random secret made for this server; "
        "tokens from `flask tokens mint` verify only with JWT_SECRET exported to both"
    )
# --- end of the development JWT secret block ---------------------------------------------------

"""``python -m sandbox``: run the platform simulator as a threaded HTTP/1.1 server.

Connections stay open between requests (keep-alive, as behind a real load
balancer) until idle for ``--keep-alive`` seconds.

Prints ``sandbox listening on http://HOST:PORT`` (flushed) once the socket is
listening (``--port 0`` picks a free port, shown in that line). SIGTERM and
SIGINT stop it cleanly with exit status 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from sandbox.config import (
    DEFAULT_KEEP_ALIVE_S,
    DEFAULT_PORT,
    DEFAULT_WEBHOOK_SECRET,
    ControlValues,
    SandboxConfig,
)
from sandbox.http_server import make_keep_alive_server
from sandbox.server import create_app
from sandbox.state import get_state

log = logging.getLogger("sandbox")


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The CLI (a stable interface: scripts depend on these flags)."""
    p = argparse.ArgumentParser(
        prog="python -m sandbox",
        description=__doc__.replace("``", "`"),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="port to listen on (the service's default ERX_BASE_URL); 0 picks a free port",
    )
    p.add_argument("--webhook-url", default=None, help="receiver URL; no webhooks without it")
    p.add_argument(
        "--webhook-secret", default=DEFAULT_WEBHOOK_SECRET, help="HMAC secret that signs webhooks"
    )
    p.add_argument("--auto", action="store_true", help="walk new prescriptions automatically")
    p.add_argument("--auto-delay", type=_seconds, default=1.0, help="seconds between auto steps")
    p.add_argument(
        "--auto-skip-printed-rate",
        type=_rate,
        default=0.3,
        help="share of auto walks that skip printed",
    )
    p.add_argument("--token-ttl", type=_seconds, default=3600.0, help="access token seconds")
    p.add_argument("--session-ttl", type=_seconds, default=1800.0, help="session seconds")
    p.add_argument("--omit-expires-in", action="store_true", help="no expires_in on tokens")
    p.add_argument(
        "--webhook-retry-base",
        type=_seconds,
        default=1.0,
        help="first webhook retry delay, seconds",
    )
    p.add_argument("--webhook-workers", type=int, default=8, help="threads delivering webhooks")
    p.add_argument(
        "--webhook-duplicate-rate", type=_rate, default=0.0, help="share of events sent twice"
    )
    p.add_argument(
        "--webhook-drop-rate", type=_rate, default=0.0, help="share of events never sent"
    )
    p.add_argument(
        "--webhook-delay-max",
        type=_seconds,
        default=0.0,
        help="random extra delay before a first delivery, up to this many seconds",
    )
    p.add_argument("--webhook-shuffle", action="store_true", help="deliver events out of order")
    p.add_argument(
        "--webhook-hold",
        action="store_true",
        help="queue webhooks until POST /sandbox/webhooks/release",
    )
    p.add_argument("--seed", type=int, default=None, help="seed every random choice")
    p.add_argument(
        "--fail-500-rate", type=_rate, default=0.0, help="share of API calls answered 500"
    )
    p.add_argument("--fail-503-rate", type=_rate, default=0.0, help="share answered 503 (HTML)")
    p.add_argument("--rate-limit-rate", type=_rate, default=0.0, help="share answered 429")
    p.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on 429")
    p.add_argument(
        "--timeout-before-commit-rate",
        type=_rate,
        default=0.0,
        help="share of issues held --fault-sleep seconds, then 504, nothing created",
    )
    p.add_argument(
        "--commit-then-drop-rate",
        type=_rate,
        default=0.0,
        help="share of issues created, then the connection dropped without an answer",
    )
    p.add_argument(
        "--session-expired-rate",
        type=_rate,
        default=0.0,
        help="share of API calls answered session_expired",
    )
    p.add_argument(
        "--fault-sleep", type=_seconds, default=5.0, help="seconds a timeout fault holds a call"
    )
    p.add_argument(
        "--keep-alive",
        type=_seconds,
        default=DEFAULT_KEEP_ALIVE_S,
        help="seconds an idle connection stays open; 0 closes after every response",
    )
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return p


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """Map parsed CLI arguments onto a ``SandboxConfig``."""
    controls = ControlValues(
        fail_500_rate=args.fail_500_rate,
        fail_503_rate=args.fail_503_rate,
        rate_limit_rate=args.rate_limit_rate,
        retry_after_s=args.retry_after,
        timeout_before_commit_rate=args.timeout_before_commit_rate,
        commit_then_drop_rate=args.commit_then_drop_rate,
        session_expired_rate=args.session_expired_rate,
        fault_sleep_s=args.fault_sleep,
        token_ttl_s=args.token_ttl,
        session_ttl_s=args.session_ttl,
        omit_expires_in=args.omit_expires_in,
        auto=args.auto,
        auto_delay_s=args.auto_delay,
        auto_skip_printed_rate=args.auto_skip_printed_rate,
        webhook_url=args.webhook_url or None,
        webhook_secrets=(args.webhook_secret,),
        webhook_duplicate_rate=args.webhook_duplicate_rate,
        webhook_drop_rate=args.webhook_drop_rate,
        webhook_shuffle=args.webhook_shuffle,
        webhook_hold=args.webhook_hold,
        webhook_retry_base_s=args.webhook_retry_base,
        webhook_delay_max_s=args.webhook_delay_max,
    )
    return SandboxConfig(
        host=args.host,
        port=args.port,
        seed=args.seed,
        webhook_workers=max(args.webhook_workers, 1),
        background=True,
        verbose=args.verbose,
        keep_alive_s=args.keep_alive,
        controls=controls,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, serve until SIGTERM/SIGINT, return the exit status."""
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    logging.basicConfig(
        level=logging.DEBUG if config.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Request lines go to stderr only when asked: a parent that never reads
    # our stderr pipe must not be able to block the server.
    logging.getLogger("werkzeug").setLevel(logging.INFO if config.verbose else logging.WARNING)

    app = create_app(config)
    server = make_keep_alive_server(
        config.host,
        config.port,
        app,
        idle_timeout_s=config.keep_alive_s,
        on_connection=get_state(app).stats.count_connection,
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="sandbox-http", daemon=True
    )
    serving.start()
    print(f"sandbox listening on http://{config.host}:{server.port}", flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    get_state(app).shutdown()
    log.info("sandbox stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

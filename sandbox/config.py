"""Frozen configuration for the sandbox.

``ControlValues`` holds every runtime knob that ``POST /sandbox/control`` can
change (fault rates, TTLs, auto mode, webhook behaviour); ``SandboxConfig`` holds
the process-level settings plus the initial ``ControlValues``. All durations are
seconds; all rates are probabilities in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_WEBHOOK_SECRET = "whsec_sandbox_test_secret"
"""The §7 test-vector secret: a development default, never a production value."""

WEBHOOK_TIMEOUT_S = 10.0
"""A delivery succeeds only on a 2xx within this many seconds (§7)."""

WEBHOOK_MAX_ATTEMPTS = 8
"""Attempts per delivery before the sandbox gives up (§7)."""

DEFAULT_PORT = 8765
"""The sandbox's port when none is given: the service's default ``ERX_BASE_URL``
(``app/foundation/config.py``) points here, so the two meet without configuration."""

DEFAULT_KEEP_ALIVE_S = 60.0
"""Seconds an idle client connection stays open (an AWS ALB's default idle timeout)."""


@dataclass(frozen=True)
class ControlValues:
    """Runtime knobs; field names are the control keys of ``/sandbox/control``.

    Fault rates apply per request (``POST /prescriptions`` gets all of them, the
    other session-protected endpoints get 500/503/429/session_expired).
    ``webhook_secrets`` is newest first; every entry signs one ``v1=`` (§7).
    """

    fail_500_rate: float = 0.0
    fail_503_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_s: int = 1
    timeout_before_commit_rate: float = 0.0
    commit_then_drop_rate: float = 0.0
    session_expired_rate: float = 0.0
    fault_sleep_s: float = 5.0
    # Every issue call is held this many seconds and then succeeds: a slow but healthy platform.
    issue_delay_s: float = 0.0
    # Every void call is held this many seconds before it is answered (a slow web request upstream).
    void_delay_s: float = 0.0
    token_ttl_s: float = 3600.0
    session_ttl_s: float = 1800.0
    omit_expires_in: bool = False
    auto: bool = False
    auto_delay_s: float = 1.0
    auto_skip_printed_rate: float = 0.3
    webhook_url: str | None = None
    webhook_secrets: tuple[str, ...] = field(default=(DEFAULT_WEBHOOK_SECRET,), repr=False)
    webhook_duplicate_rate: float = 0.0
    webhook_drop_rate: float = 0.0
    webhook_shuffle: bool = False
    webhook_hold: bool = False
    webhook_retry_base_s: float = 1.0
    webhook_delay_max_s: float = 0.0


@dataclass(frozen=True)
class SandboxConfig:
    """Process-level settings for one sandbox.

    ``background`` starts the webhook worker pool and the auto-mode thread inside
    ``create_app``; tests pass False and drive ``dispatcher.drain()`` and
    ``autopilot.tick()`` by hand. ``seed`` seeds every ``random.Random`` the
    sandbox uses (None: unseeded). ``keep_alive_s``: seconds an idle HTTP/1.1
    connection stays open under ``python -m sandbox`` (0: close after every
    response).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    seed: int | None = None
    webhook_workers: int = 8
    background: bool = True
    verbose: bool = False
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    controls: ControlValues = field(default_factory=ControlValues)

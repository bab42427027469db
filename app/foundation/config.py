"""Service settings, parsed once from the environment into a frozen object.

Twelve-factor (design.md, "Settings"): every knob is an environment variable;
``create_app(settings)`` also accepts a ready-made :class:`Settings` for tests.
Secrets have development defaults (the sandbox's) only when ``ERX_ENV`` is not
``production``; in production a missing secret is a start-up error.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import limits

REPO_ROOT = Path(__file__).resolve().parents[2]

# Development-only defaults. They match the sandbox's seed identities (sandbox/README)
# so that `make demo` works with no configuration; production refuses them.
_DEV_DEFAULTS = {
    "ERX_CLIENT_ID": "erx-sandbox-client",
    "ERX_CLIENT_SECRET": "erx-sandbox-secret",
    "WEBHOOK_SECRETS": "whsec_sandbox_test_secret",
    # A fixed Fernet key for local data only; never used in production.
    "ERX_ENCRYPTION_KEYS": "ZGV2ZWxvcG1lbnQta2V5LW5vdC1mb3ItcHJvZHVjdCE=",
}
_REQUIRED_IN_PRODUCTION = tuple(_DEV_DEFAULTS) + ("DATABASE_URL", "ERX_BASE_URL")
# The HS256 secret for development tokens (`flask tokens mint`) comes from JWT_SECRET;
# production verifies the identity provider's RS256/ES256 tokens against JWT_JWKS_URL.
# No value is committed: a committed secret would let anyone mint accepted tokens.
_generated_jwt_secret: str | None = None
_generated_lock = threading.Lock()
log = logging.getLogger("app.foundation.config")


def development_jwt_secret() -> str:
    """Return this process's random HS256 secret, made (and logged, once) on first use.

    32 random bytes, URL-safe base64 (RFC 7518 section 3.2: an HMAC key at least as long
    as the hash). The default of :attr:`Settings.jwt_secret` when ``JWT_SECRET`` is unset
    outside production: tokens minted by this process verify here, and nowhere else.
    """
    global _generated_jwt_secret
    with _generated_lock:
        if _generated_jwt_secret is None:
            _generated_jwt_secret = secrets.token_urlsafe(32)
            log.warning(
                "JWT_SECRET is not set: development tokens use a random secret made for this "
                "process; set JWT_SECRET to share one between the server and `flask tokens mint`"
            )
        return _generated_jwt_secret


def is_generated_jwt_secret(value: str) -> bool:
    """True when ``value`` is this process's :func:`development_jwt_secret` (never in production)."""
    return _generated_jwt_secret is not None and value == _generated_jwt_secret


# Durations and counts that must be finite and above zero (a negative lease would
# let every worker claim the same row; a zero timeout fails only at the first call).
_POSITIVE = (
    "erx_connect_timeout_s",
    "erx_read_timeout_s",
    "webhook_max_body_bytes",
    "dispatch_max_attempts",
    "dispatch_backoff_base_s",
    "dispatch_backoff_cap_s",
    "lease_s",
    "breaker_fail_max",
    "inbox_max_attempts",
    "inbox_batch",
    "inbox_backoff_base_s",
    "inbox_backoff_cap_s",
    "worker_poll_s",
    "worker_batch",
    "worker_send_threads",
    "reconcile_after_s",
    "smtp_timeout_s",
    "events_poll_s",
    "events_batch",
    "events_lease_s",
    "events_backoff_base_s",
    "events_backoff_cap_s",
    "notify_max_attempts",
    "audit_seal_interval_s",
    "audit_unsealed_max_age_s",
)


# requests' default HTTPAdapter keeps 10 connections per host (pool_maxsize): one per send thread.
MAX_SEND_THREADS = 10


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable, never its value."""


def default_database_url() -> str:
    """Return the embedded SQLite URL, ``sqlite:///<repo>/instance/erx.sqlite3``."""
    return f"sqlite:///{REPO_ROOT / 'instance' / 'erx.sqlite3'}"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """All service settings. Durations are seconds; lists are tuples, newest first."""

    env: str = "development"
    database_url: str = field(default_factory=default_database_url, repr=False)
    erx_base_url: str = "http://127.0.0.1:8765"
    erx_client_id: str = field(default=_DEV_DEFAULTS["ERX_CLIENT_ID"], repr=False)
    erx_client_secret: str = field(default=_DEV_DEFAULTS["ERX_CLIENT_SECRET"], repr=False)
    erx_connect_timeout_s: float = 3.05
    erx_read_timeout_s: float = 10.0
    webhook_secrets: tuple[str, ...] = field(
        default=(_DEV_DEFAULTS["WEBHOOK_SECRETS"],), repr=False
    )
    webhook_tolerance_s: int = 300
    webhook_max_body_bytes: int = 256 * 1024
    encryption_keys: tuple[str, ...] = field(
        default=(_DEV_DEFAULTS["ERX_ENCRYPTION_KEYS"],), repr=False
    )
    # Dispatch outbox.
    dispatch_max_attempts: int = 8
    dispatch_backoff_base_s: float = 2.0
    dispatch_backoff_cap_s: float = 300.0
    lease_s: float = 120.0
    breaker_fail_max: int = 5
    breaker_reset_s: float = 30.0
    # Webhook inbox.
    inbox_max_attempts: int = 8
    # Inbox events a worker applies in one transaction (set-based: one statement per step).
    inbox_batch: int = 200
    inbox_backoff_base_s: float = 1.0
    inbox_backoff_cap_s: float = 300.0
    # Worker loop.
    worker_poll_s: float = 0.5
    worker_batch: int = 10
    # Sends one dispatch worker process runs at once: a thread pool, each thread
    # with its own database session; 1 = one after the other. At most 10: requests keeps 10
    # connections per host; the database pool grows to fit (app.foundation.db.Database).
    worker_send_threads: int = 4
    # Reconciliation: ask the platform about non-final prescriptions quiet this long.
    reconcile_after_s: float = 3600.0
    # Region A email flow.
    mail_backend: str = "file"
    mail_dir: str = str(REPO_ROOT / "instance" / "mail")
    smtp_host: str = "localhost"
    smtp_port: int = 25
    mail_from: str = "prescriptions@erx-connector.example.test"
    # Region A over SMTP: STARTTLS, credentials, per-operation timeout (seconds).
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_timeout_s: float = 30.0
    smtp_tls_verify: bool = True
    smtp_ca_file: str = ""
    # A Unicode .ttf for PDF text outside Latin-1 (default: DejaVu Sans if installed).
    pdf_font_path: str = ""
    # Identity: bearer JWTs. HS256 with jwt_secret unless jwt_jwks_url is set.
    jwt_secret: str = field(default_factory=development_jwt_secret, repr=False)
    jwt_issuer: str = "erx-connector-dev"
    jwt_audience: str = "erx-connector"
    jwt_jwks_url: str | None = None
    jwt_leeway_s: int = 30
    # The longest token lifetime accepted, exp - iat (seconds); iat is required.
    jwt_max_ttl_s: int = 3600
    # Rate limits (Flask-Limiter syntax, "N per minute;M per hour"): per subject and per
    # client address, on search, send and failed token verification. README, "Rate limits".
    rate_limit_storage_url: str = field(default="memory://", repr=False)
    rate_limit_search: str = "120 per minute"
    rate_limit_send: str = "30 per minute"
    rate_limit_auth_failures: str = "30 per minute"
    # Root log level of every process (app/foundation/logs.py).
    log_level: str = "INFO"
    # Status events over RabbitMQ (docs/events.md).
    amqp_url: str = field(default="amqp://guest:guest@127.0.0.1:5672/%2F", repr=False)
    events_exchange: str = "erx.events"
    events_dlx: str = "erx.events.dlq"
    # Idle wait, s: the fallback poll when NOTIFY wakes the publisher (WORKER_WAKEUP).
    events_poll_s: float = 0.5
    events_batch: int = 200
    events_lease_s: float = 30.0
    events_backoff_base_s: float = 0.5
    events_backoff_cap_s: float = 30.0
    notify_queue: str = "erx.notify.patient"
    notify_max_attempts: int = 5
    # The worker's own /metrics port (app/mechanisms/metrics.serve_worker_metrics); 0 = not served.
    worker_metrics_port: int = 0
    # Worker wake-ups: auto = notify on PostgreSQL, poll on SQLite; poll behind a transaction pooler.
    worker_wakeup: str = "auto"
    # The read views as server-side prepared statements (PostgreSQL); false behind a
    # transaction-mode pooler (PgBouncer), which cannot keep a prepared statement.
    db_prepared_statements: bool = True
    # Reverse proxies in front of the web tier whose X-Forwarded-* headers are trusted
    # (werkzeug ProxyFix); 0 = none, the audit's client address is the TCP peer.
    trusted_proxies: int = 0
    # Audit log sealing (app/mechanisms/audit_sealer.py): Ed25519 private keys (base64 raw 32 bytes,
    # newest first; production requires one), the checkpoint origin line, the seal loop's
    # idle wait and the age (s) past which an unsealed row is a verify failure.
    audit_signing_keys: tuple[str, ...] = field(default=(), repr=False)
    audit_log_origin: str = "erx-connector.example/audit"
    audit_seal_interval_s: float = 0.25
    audit_unsealed_max_age_s: float = 60.0

    def __post_init__(self) -> None:
        if self.trusted_proxies < 0:
            raise ConfigError("TRUSTED_PROXIES must be 0 or more")
        if self.env not in ("development", "test", "production"):
            raise ConfigError("ERX_ENV must be development, test or production")
        if not self.webhook_secrets or not all(self.webhook_secrets):
            raise ConfigError("WEBHOOK_SECRETS must list at least one secret")
        if self.webhook_tolerance_s <= 0:
            raise ConfigError("WEBHOOK_TOLERANCE_S must be positive")
        for name in _POSITIVE:
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name.upper()} must be a finite number above 0")
        # One dispatch attempt makes at most 6 calls (lookup, token, login, a re-auth,
        # the send and its retry), each bounded by connect + read timeouts. The lease
        # must outlast that, or another worker could send while this one still waits.
        longest_attempt = 6 * (self.erx_connect_timeout_s + self.erx_read_timeout_s)
        if self.lease_s <= longest_attempt:
            raise ConfigError(
                f"LEASE_S must exceed {longest_attempt:.0f} s (6 x (ERX_CONNECT_TIMEOUT_S + ERX_READ_TIMEOUT_S))"
            )
        if self.worker_send_threads > MAX_SEND_THREADS:
            raise ConfigError(f"WORKER_SEND_THREADS must be between 1 and {MAX_SEND_THREADS}")
        if self.inbox_batch > 1000:  # its prescriptions stay locked until the batch commits
            raise ConfigError("INBOX_BATCH must be between 1 and 1000")
        if not math.isfinite(self.breaker_reset_s) or self.breaker_reset_s < 0:
            raise ConfigError("BREAKER_RESET_S must be a finite number of seconds >= 0")
        if self.mail_backend not in ("file", "smtp"):
            raise ConfigError("MAIL_BACKEND must be file or smtp")
        if self.smtp_username and not self.smtp_starttls and self.env == "production":
            raise ConfigError(
                "SMTP_USERNAME needs SMTP_STARTTLS in production (no cleartext passwords)"
            )
        if self.env == "production" and is_generated_jwt_secret(self.jwt_secret):
            raise ConfigError(
                "JWT_SECRET: a per-process development secret is not allowed in production"
            )
        for name in ("rate_limit_search", "rate_limit_send", "rate_limit_auth_failures"):
            try:
                limits.parse_many(getattr(self, name))
            except ValueError:
                raise ConfigError(
                    f"{name.upper()} must be like '120 per minute' or '120/minute'"
                ) from None
        if not self.rate_limit_storage_url.startswith(("memory://", "redis://", "rediss://")):
            raise ConfigError("RATE_LIMIT_STORAGE_URL must be memory:// or a redis:// URL")
        if self.jwt_max_ttl_s < 1:
            raise ConfigError("JWT_MAX_TTL_S must be at least 1 second")
        if self.jwt_leeway_s < 0:
            raise ConfigError("JWT_LEEWAY_S must be >= 0")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError("LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL")

    @property
    def db_pool_size(self) -> int:
        """Database connections a process keeps: 5, or one per send thread plus the claiming thread."""
        return max(5, self.worker_send_threads + 1)

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with ``changes`` applied (tests use this)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


_NUMBERS: dict[str, tuple[str, type]] = {
    "ERX_CONNECT_TIMEOUT_S": ("erx_connect_timeout_s", float),
    "ERX_READ_TIMEOUT_S": ("erx_read_timeout_s", float),
    "WEBHOOK_TOLERANCE_S": ("webhook_tolerance_s", int),
    "WEBHOOK_MAX_BODY_BYTES": ("webhook_max_body_bytes", int),
    "DISPATCH_MAX_ATTEMPTS": ("dispatch_max_attempts", int),
    "DISPATCH_BACKOFF_BASE_S": ("dispatch_backoff_base_s", float),
    "DISPATCH_BACKOFF_CAP_S": ("dispatch_backoff_cap_s", float),
    "LEASE_S": ("lease_s", float),
    "BREAKER_FAIL_MAX": ("breaker_fail_max", int),
    "BREAKER_RESET_S": ("breaker_reset_s", float),
    "INBOX_MAX_ATTEMPTS": ("inbox_max_attempts", int),
    "INBOX_BATCH": ("inbox_batch", int),
    "INBOX_BACKOFF_BASE_S": ("inbox_backoff_base_s", float),
    "INBOX_BACKOFF_CAP_S": ("inbox_backoff_cap_s", float),
    "WORKER_POLL_S": ("worker_poll_s", float),
    "WORKER_BATCH": ("worker_batch", int),
    "WORKER_SEND_THREADS": ("worker_send_threads", int),
    "RECONCILE_AFTER_S": ("reconcile_after_s", float),
    "SMTP_PORT": ("smtp_port", int),
    "SMTP_TIMEOUT_S": ("smtp_timeout_s", float),
    "JWT_LEEWAY_S": ("jwt_leeway_s", int),
    "JWT_MAX_TTL_S": ("jwt_max_ttl_s", int),
    "EVENTS_POLL_S": ("events_poll_s", float),
    "EVENTS_BATCH": ("events_batch", int),
    "EVENTS_LEASE_S": ("events_lease_s", float),
    "EVENTS_BACKOFF_BASE_S": ("events_backoff_base_s", float),
    "EVENTS_BACKOFF_CAP_S": ("events_backoff_cap_s", float),
    "NOTIFY_MAX_ATTEMPTS": ("notify_max_attempts", int),
    "WORKER_METRICS_PORT": ("worker_metrics_port", int),
    "TRUSTED_PROXIES": ("trusted_proxies", int),
    "AUDIT_SEAL_INTERVAL_S": ("audit_seal_interval_s", float),
    "AUDIT_UNSEALED_MAX_AGE_S": ("audit_unsealed_max_age_s", float),
}
_STRINGS = {
    "DATABASE_URL": "database_url",
    "ERX_BASE_URL": "erx_base_url",
    "ERX_CLIENT_ID": "erx_client_id",
    "ERX_CLIENT_SECRET": "erx_client_secret",
    "MAIL_BACKEND": "mail_backend",
    "MAIL_DIR": "mail_dir",
    "SMTP_HOST": "smtp_host",
    "MAIL_FROM": "mail_from",
    "SMTP_USERNAME": "smtp_username",
    "SMTP_PASSWORD": "smtp_password",
    "SMTP_CA_FILE": "smtp_ca_file",
    "PDF_FONT_PATH": "pdf_font_path",
    "JWT_SECRET": "jwt_secret",
    "JWT_ISSUER": "jwt_issuer",
    "JWT_AUDIENCE": "jwt_audience",
    "JWT_JWKS_URL": "jwt_jwks_url",
    "LOG_LEVEL": "log_level",
    "AMQP_URL": "amqp_url",
    "EVENTS_EXCHANGE": "events_exchange",
    "EVENTS_DLX": "events_dlx",
    "NOTIFY_QUEUE": "notify_queue",
    "WORKER_WAKEUP": "worker_wakeup",
    "RATE_LIMIT_STORAGE_URL": "rate_limit_storage_url",
    "RATE_LIMIT_SEARCH": "rate_limit_search",
    "RATE_LIMIT_SEND": "rate_limit_send",
    "RATE_LIMIT_AUTH_FAILURES": "rate_limit_auth_failures",
    "AUDIT_LOG_ORIGIN": "audit_log_origin",
}
_BOOLS = {
    "SMTP_STARTTLS": "smtp_starttls",
    "SMTP_TLS_VERIFY": "smtp_tls_verify",
    "DB_PREPARED_STATEMENTS": "db_prepared_statements",
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_LISTS = {
    "WEBHOOK_SECRETS": "webhook_secrets",
    "ERX_ENCRYPTION_KEYS": "encryption_keys",
    "AUDIT_SIGNING_KEYS": "audit_signing_keys",
}


# -- production deployment checks ----------------------------------------------------------

# The identity provider: without all three every bearer token is refused (401) while the
# pods report ready, so production refuses to start instead (docs/operations.md,
# "Identity provider"; the overlays set them).
IDENTITY_PROVIDER_SETTINGS = ("JWT_JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE")


def check_production_deployment(environ: Mapping[str, str]) -> None:
    """Refuse a production environment a deployed service could not serve from.

    ``environ``: the process environment (``ERX_ENV=production`` already established).
    Raises :class:`ConfigError` with one line naming every missing identity-provider
    setting (:data:`IDENTITY_PROVIDER_SETTINGS`), or a ``JWT_JWKS_URL`` that is not an
    https URL (RFC 7517 key sets are fetched over TLS; http only on the loopback, for
    tests). Never echoes a value.
    """
    missing = [name for name in IDENTITY_PROVIDER_SETTINGS if not environ.get(name, "").strip()]
    if missing:
        raise ConfigError(
            f"missing identity provider settings in production: {', '.join(missing)} "
            '(docs/operations.md, "Identity provider")'
        )
    url = environ["JWT_JWKS_URL"].strip()
    loopback = url.startswith(("http://127.0.0.1:", "http://localhost:", "http://[::1]:"))
    if not url.startswith("https://") and not loopback:
        raise ConfigError("JWT_JWKS_URL must be an https:// URL in production")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse settings from ``environ`` (default ``os.environ``).

    Returns a frozen :class:`Settings`. Raises :class:`ConfigError` naming the
    variable when a value is malformed, or when ``ERX_ENV=production`` and a
    secret or URL is missing.
    """
    env = dict(os.environ if environ is None else environ)
    mode = env.get("ERX_ENV", "development").strip() or "development"
    if mode == "production":
        missing = [name for name in _REQUIRED_IN_PRODUCTION if not env.get(name, "").strip()]
        if missing:
            raise ConfigError(f"missing required settings in production: {', '.join(missing)}")
        if env.get("MAIL_BACKEND", "file").strip() != "smtp":
            raise ConfigError(
                "MAIL_BACKEND must be smtp in production (the file backend writes PHI to disk)"
            )
        reused = [name for name, dev in _DEV_DEFAULTS.items() if dev in _split(env[name])]
        if reused:
            raise ConfigError(
                f"development values are not allowed in production: {', '.join(reused)}"
            )
        check_production_deployment(env)
    values: dict[str, object] = {"env": mode}
    if mode == "production":
        values["jwt_secret"] = ""  # no development default; JWT_SECRET below, if set
    for name, attr in _STRINGS.items():
        if env.get(name, "").strip():
            values[attr] = env[name].strip()
    for name, attr in _LISTS.items():
        if env.get(name, "").strip():
            values[attr] = _split(env[name])
    for name, (attr, kind) in _NUMBERS.items():
        raw = env.get(name, "").strip()
        if raw:
            try:
                values[attr] = kind(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a {kind.__name__}") from None
    for name, attr in _BOOLS.items():
        raw = env.get(name, "").strip().lower()
        if raw:
            if raw not in _TRUE + _FALSE:
                raise ConfigError(f"{name} must be true or false")
            values[attr] = raw in _TRUE
    if str(values.get("worker_wakeup", "auto")).lower() not in ("auto", "notify", "poll"):
        raise ConfigError("WORKER_WAKEUP must be auto, notify or poll")
    url = str(values.get("database_url", ""))
    if url.startswith("postgres://") or url.startswith("postgresql://"):
        # The service speaks psycopg2; accept the common short forms too.
        values["database_url"] = "postgresql+psycopg2://" + url.split("://", 1)[1]
    return Settings(**values)  # type: ignore[arg-type]

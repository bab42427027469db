"""Connector settings and prescriber credentials (contract §1, §3, §4).

Everything that differs between real platforms and the sandbox (paths, header
names, where the prescription id sits in a response) lives here and nowhere
else, so that pointing the connector at another deployment is a settings change.
The connector never reads the environment: the app builds these objects.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass, field

__all__ = ["ConnectorSettings", "PrescriberCredentials"]


def _require_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")


def _require_positive(name: str, value: object, *, allow_zero: bool = False) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = "zero or more" if allow_zero else "greater than zero"
        raise ValueError(f"{name} must be a finite number {bound}")


@dataclass(frozen=True)
class ConnectorSettings:
    """How to reach one platform deployment, and the platform's wire details.

    Args:
        base_url: root URL of the platform API, e.g. ``"https://api.example.test/v1"``;
            a trailing slash is ignored.
        client_id: OAuth client id (contract §1a).
        client_secret: OAuth client secret; hidden from ``repr()``.

    Keyword-only options:
        scope: OAuth scope requested with the client-credentials grant.
        connect_timeout_s: TCP/TLS connect timeout for every call, seconds.
        read_timeout_s: time to wait for response bytes, seconds.
        default_token_ttl_s: token lifetime assumed when a token response has no
            (valid) ``expires_in`` (contract §1a), seconds.
        max_leeway_s: a token is treated as expired this many seconds early, but
            never more than half its lifetime (Authlib-style leeway), seconds.
        login_failure_ttl_s: how long a failed prescriber login is remembered so
            that callers fail fast without hitting the login endpoint, seconds
            (0 disables the negative cache).
        token_failure_ttl_s: how long a transiently failed access-token request
            (5xx, 429, timeout, unreadable answer) is remembered so that callers
            fail fast instead of hammering a failing token endpoint, seconds
            (0 disables it).
        session_cache_size: most prescriber sessions kept in memory at once.
        token_path, login_path, prescriptions_path, clinics_path, contacts_path,
            medicines_path: endpoint paths relative to ``base_url`` (§1, §3, §4, §5).
        session_header: header carrying the prescriber session token (§1c).
        request_id_header: response header carrying the platform's request id.
        prescription_id_path: keys leading from a success body to the
            prescription token (§4: ``data.prescription.id``).
        user_agent: ``User-Agent`` sent on every call.

    Raises:
        ValueError: a required field is empty or a number is out of range.
    """

    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    _: KW_ONLY
    scope: str = "prescriptions"
    connect_timeout_s: float = 3.05
    read_timeout_s: float = 10.0
    default_token_ttl_s: float = 300
    max_leeway_s: float = 60
    login_failure_ttl_s: float = 10
    token_failure_ttl_s: float = 5
    session_cache_size: int = 1024
    token_path: str = "/oauth/token"
    login_path: str = "/prescriber/login"
    prescriptions_path: str = "/prescriptions"
    clinics_path: str = "/clinics"
    contacts_path: str = "/contacts"
    medicines_path: str = "/medicines"
    session_header: str = "X-Session-Token"
    request_id_header: str = "X-Request-Id"
    prescription_id_path: tuple[str, ...] = ("data", "prescription", "id")
    user_agent: str = "erx-connector/0.1"

    def __post_init__(self) -> None:
        _require_text("base_url", self.base_url)
        _require_text("client_id", self.client_id)
        _require_text("client_secret", self.client_secret)
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        _require_positive("connect_timeout_s", self.connect_timeout_s)
        _require_positive("read_timeout_s", self.read_timeout_s)
        _require_positive("default_token_ttl_s", self.default_token_ttl_s)
        _require_positive("max_leeway_s", self.max_leeway_s, allow_zero=True)
        _require_positive("login_failure_ttl_s", self.login_failure_ttl_s, allow_zero=True)
        _require_positive("token_failure_ttl_s", self.token_failure_ttl_s, allow_zero=True)
        if not isinstance(self.session_cache_size, int) or self.session_cache_size < 1:
            raise ValueError("session_cache_size must be a positive integer")
        if not self.prescription_id_path or not all(
            isinstance(k, str) and k for k in self.prescription_id_path
        ):
            raise ValueError("prescription_id_path must be a non-empty tuple of keys")
        # Lists would make the frozen settings unhashable and mutable.
        object.__setattr__(self, "prescription_id_path", tuple(self.prescription_id_path))

    @property
    def timeout(self) -> tuple[float, float]:
        """The ``(connect, read)`` timeout pair in seconds, as ``requests`` wants it."""
        return (float(self.connect_timeout_s), float(self.read_timeout_s))

    def url(self, path: str) -> str:
        """Join ``base_url`` and an endpoint path into an absolute URL (one slash between)."""
        return f"{self.base_url.rstrip('/')}/{path.lstrip('/')}"


@dataclass(frozen=True)
class PrescriberCredentials:
    """A prescriber's platform login (contract §1b, §3).

    Args:
        key: our stable id for the prescriber (e.g. the platform prescriber id as
            a string); sessions are cached per key and it is safe to log.
        email: login email.
        password: login password.
        secure_pin: the PIN that signs prescriptions (sent in the issue payload).

    ``repr()`` shows only ``key``: the email, password and PIN never appear in
    logs or tracebacks.

    Raises:
        ValueError: ``key``, ``email`` or ``password`` is empty.
    """

    key: str
    email: str = field(repr=False)
    password: str = field(repr=False)
    secure_pin: str = field(repr=False)

    def __post_init__(self) -> None:
        _require_text("key", self.key)
        _require_text("email", self.email)
        _require_text("password", self.password)
        if not isinstance(self.secure_pin, str):
            raise ValueError("secure_pin must be a string")

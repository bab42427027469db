"""The mutable, validated holder of ``ControlValues`` behind ``/sandbox/control``.

Readers take an immutable snapshot with ``Controls.current()``; writers apply a
partial update atomically (all keys validated first, then one swap).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any

from sandbox.config import ControlValues

RATE_KEYS = frozenset(
    {
        "fail_500_rate",
        "fail_503_rate",
        "rate_limit_rate",
        "timeout_before_commit_rate",
        "commit_then_drop_rate",
        "session_expired_rate",
        "auto_skip_printed_rate",
        "webhook_duplicate_rate",
        "webhook_drop_rate",
    }
)
SECONDS_KEYS = frozenset(
    {
        "fault_sleep_s",
        "issue_delay_s",
        "void_delay_s",
        "token_ttl_s",
        "session_ttl_s",
        "auto_delay_s",
        "webhook_retry_base_s",
        "webhook_delay_max_s",
    }
)
INT_KEYS = frozenset({"retry_after_s"})
BOOL_KEYS = frozenset({"omit_expires_in", "auto", "webhook_shuffle", "webhook_hold"})
CONTROL_KEYS = (
    RATE_KEYS
    | SECONDS_KEYS
    | INT_KEYS
    | BOOL_KEYS
    | {"webhook_url", "webhook_secret", "webhook_secrets"}
)


class ControlError(ValueError):
    """A rejected control update; ``errors`` maps each bad key to a message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(key: str, value: Any) -> tuple[str, Any]:
    """Validate one key; returns the ControlValues field and its typed value."""
    if key in RATE_KEYS:
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise ValueError("must be a number between 0 and 1")
        return key, float(value)
    if key in SECONDS_KEYS:
        if not _is_number(value) or value < 0:
            raise ValueError("must be a number of seconds >= 0")
        return key, float(value)
    if key in INT_KEYS:
        if not _is_number(value) or value < 0 or int(value) != value:
            raise ValueError("must be a whole number >= 0")
        return key, int(value)
    if key in BOOL_KEYS:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return key, value
    if key == "webhook_url":
        if value is None or value == "":
            return key, None
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL or null")
        return key, value
    if key == "webhook_secret":
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty string")
        return "webhook_secrets", (value,)
    if key == "webhook_secrets":
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(s, str) and s for s in value)
        ):
            raise ValueError("must be a non-empty list of non-empty strings, newest first")
        return key, tuple(value)
    raise ValueError("unknown control key")


class Controls:
    """Thread-safe current ``ControlValues`` with validated partial updates."""

    def __init__(self, initial: ControlValues) -> None:
        self._values = initial
        self._lock = threading.Lock()

    def current(self) -> ControlValues:
        """The current values (an immutable snapshot)."""
        return self._values

    def update(self, changes: Mapping[str, Any]) -> ControlValues:
        """Apply a partial update and return the new values.

        Raises ``ControlError`` (nothing applied) when any key is unknown or any
        value has the wrong type or range. ``webhook_secret`` replaces the
        secret list with one secret; ``webhook_secrets`` sets it (newest first).
        """
        errors: dict[str, str] = {}
        fields: dict[str, Any] = {}
        for key, value in changes.items():
            try:
                name, typed = _check(key, value)
            except ValueError as exc:
                errors[key] = str(exc)
                continue
            fields[name] = typed
        if errors:
            raise ControlError(errors)
        with self._lock:
            self._values = dataclasses.replace(self._values, **fields)
            return self._values

    def as_json(self) -> dict[str, Any]:
        """Every control key and value, with webhook secrets redacted."""
        values = dataclasses.asdict(self.current())
        secrets = values.pop("webhook_secrets")
        values["webhook_secrets"] = [_redact(s) for s in secrets]
        values["webhook_secret"] = values["webhook_secrets"][0] if secrets else None
        return values


def _redact(secret: str) -> str:
    """Enough to tell secrets apart in a rotation test, never the secret itself."""
    return f"{secret[:6]}...({len(secret)} chars)" if len(secret) > 12 else "***"

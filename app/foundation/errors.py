"""Domain errors: what a use case can refuse, in the domain's words, without HTTP.

Runtime raise these; ``app/interfaces/api.py`` (and the CLI) map them to a response or a
one-line message. ``code`` is machine-readable snake_case, ``message`` is safe
human text (ids only: never a patient's name, date of birth, address, phone,
email, nor a token, password, PIN or secret), and ``errors`` maps a field name
to a list of messages that say what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DomainError(Exception):
    """Base of every refusal a service makes.

    ``code``: snake_case string; ``message``: safe text; ``errors``: field name
    to list of messages (may be empty); ``details``: further facts a caller
    may act on (e.g. ``{"current_status": "queued"}``), ids and statuses only.
    """

    default_code = "domain_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        errors: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message
        self.errors = dict(errors or {})
        self.details = dict(details or {})


class NotFound(DomainError):
    """The thing asked for does not exist, or the caller may not know it does (HTTP 404)."""

    default_code = "not_found"


class Conflict(DomainError):
    """The request clashes with the thing's current state, e.g. already queued or final (HTTP 409)."""

    default_code = "conflict"


class Invalid(DomainError):
    """The input is well-formed but cannot be acted on; ``errors`` says which field and why (HTTP 422)."""

    default_code = "validation_error"


class Forbidden(DomainError):
    """The caller's role may not do this (HTTP 403)."""

    default_code = "forbidden"


class Unavailable(DomainError):
    """A dependency (the platform, SMTP, the database) cannot be reached now; retry later (HTTP 503)."""

    default_code = "unavailable"


class Misconfigured(DomainError):
    """A setting of the service is unusable (e.g. a malformed ``ERX_ENCRYPTION_KEYS``).

    The message names the setting (never its value); an operator must fix it
    before the use case can run (HTTP 500).
    """

    default_code = "misconfigured"

"""What one dispatch attempt came to, and the one rule for "outcome unknown".

An attempt ends in exactly one :class:`Outcome` kind, carrying the token or the
error it learned (:class:`Attempt`). Whether the platform may hold a
prescription we have no token for (``DispatchOutbox.outcome_unknown``) is
decided here and nowhere else: :func:`mark_intent` (or, for one UPDATE
statement, :func:`intent_values`) before a send, :func:`undo_intent` when the
send did not start after all, :func:`settle` (or, for one UPDATE statement,
:func:`outcome_unknown_after`) when the attempt is stored (contract §4: no
idempotency key, so after an unknown outcome the next attempt looks the
``client_ref_id`` up before it may send again). The ``emailed`` outcome
(Region A: the pharmacy has the message) is stored by :func:`store_emailed`
alone, whether dispatch heard the server's 250 or an operator confirmed it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.mechanisms.history import Change, local, record
from app.mechanisms.queue import finish
from connector.errors import ConnectorError


class Outcome(enum.Enum):
    """The kinds of attempt result. ``value`` is the name stored in logs."""

    ISSUED = "issued"  # the platform answered with a token
    ADOPTED = "adopted"  # a lookup after an unknown outcome found the token
    EMAILED = "emailed"  # Region A: the pharmacy was emailed
    # Region A: the server may have the message; an operator decides.
    EMAIL_IN_DOUBT = "email_in_doubt"
    REJECTED = "rejected"  # the platform said no (HTTP 200 success:false): never retried
    INVALID = "invalid"  # the request could never be accepted; nothing was sent
    RETRY_UNSENT = "retry_unsent"  # failed before anything reached the platform
    RETRY_UNKNOWN = "retry_unknown"  # failed after the request may have been processed
    CIRCUIT_OPEN = "circuit_open"  # the breaker refused the call: not an attempt
    CREDENTIALS_REFUSED = "credentials_refused"  # login_failed: park until the credentials change
    # Missing or undecryptable stored credentials: a configuration fault, nothing was
    # sent; parked (blocked_credentials) with its cause instead of retried as transient.
    CREDENTIALS_UNUSABLE = "credentials_unusable"
    # Another configuration fault no retry fixes (a clinic with no API clinic id mapped):
    # nothing was sent; a dead letter with its cause, requeued once the data is fixed.
    MISCONFIGURED = "misconfigured"


@dataclass(frozen=True)
class Attempt:
    """One attempt's result: its :class:`Outcome` and what it carries.

    ``platform_token``: the platform's prescription token (ISSUED, ADOPTED); ``message``/``errors``:
    the refusal and its field errors (REJECTED, INVALID), or the one-line cause
    of a configuration fault (CREDENTIALS_UNUSABLE, MISCONFIGURED) or of an email not accepted
    (RETRY_UNSENT); ``error``: the exception
    to retry after (RETRY_*, CIRCUIT_OPEN); ``reason``: a reason code of a
    configuration fault (a small fixed set, for metrics).
    """

    outcome: Outcome
    platform_token: str | None = None
    message: str | None = None
    errors: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None
    reason: str | None = None

    @property
    def error_code(self) -> str:
        """The reason code: ``reason``, else the connector's code, else the exception's type name.

        A small fixed set (the connector's codes, our exception types): fit for a metric label
        and for ``last_error`` while the row is still retried.
        """
        if self.reason is not None:
            return self.reason
        code = getattr(self.error, "code", None)
        return str(code or type(self.error).__name__)

    @property
    def cause(self) -> str:
        """The one line an operator reads on a dead letter: what went wrong, never PHI.

        ``message`` when set; else a connector error's own text (safe by contract:
        no PHI, secrets or bodies) with its status, code and request id; else the
        reason code only (another exception's text may quote request data).
        """
        if self.message:
            return self.message
        if isinstance(self.error, ConnectorError):
            return str(self.error)
        return self.error_code


def intent_values() -> dict[str, Any]:
    """The outbox values recording, before a send, that its outcome is unknown (an UPDATE)."""
    return {"outcome_unknown": True}


def mark_intent(row: Any) -> None:
    """Record, before a send, that its outcome is unknown until a definite answer comes back."""
    for column, value in intent_values().items():
        setattr(row, column, value)


def undo_intent(row: Any, *, unknown_before: bool) -> None:
    """Take back :func:`mark_intent`: the send did not start, so it is as unknown as before."""
    row.outcome_unknown = unknown_before


def settle(row: Any, outcome: Outcome, *, unknown_before: bool) -> None:
    """Store on ``row`` whether its outcome is unknown after ``outcome`` (the rule below)."""
    row.outcome_unknown = outcome_unknown_after(outcome, unknown_before=unknown_before)


def outcome_unknown_after(outcome: Outcome, *, unknown_before: bool) -> bool:
    """Whether the platform may hold a prescription we have no token for, after ``outcome``.

    ``unknown_before``: it was unknown before this attempt (its intent mark
    aside). A token, or a definite "no", settles it; an attempt that sent
    nothing leaves it as it was; one that may have reached the platform makes it
    unknown.
    """
    if outcome in (Outcome.ISSUED, Outcome.ADOPTED, Outcome.REJECTED, Outcome.EMAILED):
        return False
    if outcome in (Outcome.RETRY_UNKNOWN, Outcome.EMAIL_IN_DOUBT):
        return True
    return unknown_before


def store_emailed(
    session: Session,
    row: Any,
    prescription: Any,
    *,
    source: str,
    detail: str | None,
    now: datetime,
) -> None:
    """Store that the pharmacy has the prescription by email, in ``session``'s transaction.

    ``row`` is the prescription's locked dispatch outbox row (an ORM object):
    finished (``done``, no lease), its outcome known, ``updated_at`` ``now``.
    ``prescription`` (an ORM object of ``session``) records ``emailed`` from
    ``source`` (``service``: dispatch heard the server accept it;
    ``operator``: confirmed by hand) with ``detail``, at ``now`` (aware UTC),
    through :func:`app.mechanisms.history.record`. Nothing is committed here.
    """
    finish(row)
    settle(row, Outcome.EMAILED, unknown_before=bool(row.outcome_unknown))
    row.updated_at = now
    emailed = local(prescription, "emailed", source=source, detail=detail, now=now)
    record(session, [Change(prescription, emailed)])

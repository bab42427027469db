"""Region A's route: the prescription goes to the pharmacy as a PDF by email, exactly once.

The message, its PDF and the exactly-once policy (an intent record and a
stable Message-ID per prescription) live in :mod:`app.services.mail`; this
module turns its :class:`~app.services.mail.Delivery` into an attempt
:class:`~app.services.dispatch.outcome.Outcome`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from app.foundation.db import Database
from app.services.dispatch.outcome import Attempt, Outcome
from app.services.mail import EmailJob, Mailer, email_job

__all__ = ["EmailJob", "email_job", "send_email"]


def send_email(
    mailer: Mailer, db: Database, job: EmailJob, *, now: Callable[[], datetime]
) -> Attempt:
    """Deliver ``job`` once; returns EMAILED, EMAIL_IN_DOUBT (never resent automatically) or RETRY_UNSENT.

    ``now`` returns aware UTC datetimes. A delivery accepted by an earlier
    attempt is EMAILED again without a second message.
    """
    delivery = mailer.deliver_once(db, job, now=now)
    if delivery.kind == "accepted":
        return Attempt(
            Outcome.EMAILED,
            message="accepted earlier; not sent again" if delivery.already else None,
        )
    if delivery.kind == "in_doubt":
        return Attempt(Outcome.EMAIL_IN_DOUBT, message=delivery.reason)
    # The transport's sentence is what an operator reads; its code stays the metric's reason.
    cause = delivery.error.cause if delivery.error is not None else None
    return Attempt(Outcome.RETRY_UNSENT, error=delivery.error, message=cause)

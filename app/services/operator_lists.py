"""Read-only lists for operators: prescribers (who can send) and the webhook inbox.

Plain results for the CLI (``prescribers list``, ``webhooks list``): logins,
names, ids, states and error codes; never credentials, PINs or event bodies
(a webhook body can carry patient details).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from app.foundation.db import Database
from app.foundation.models import Clinic, Prescriber, WebhookInbox


@dataclass(frozen=True)
class PrescriberListing:
    """One prescriber: login email, name, clinic, and the state of their platform credentials.

    ``credentials``: ``"stored"`` (password and PIN stored, usable), ``"blocked"``
    (stored, but the platform refused the login: sends wait until
    ``prescribers set-credentials`` stores new ones) or ``"missing"``.
    """

    login: str
    name: str
    clinic: str
    clinic_display_id: str
    platform_prescriber_id: int
    credentials: str

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict, in declaration order."""
        return asdict(self)


def credentials_state(prescriber: Prescriber) -> str:
    """``"missing"``, ``"blocked"`` or ``"stored"`` (see :class:`PrescriberListing`)."""
    if not prescriber.password_enc or not prescriber.pin_enc:
        return "missing"
    return "blocked" if prescriber.credentials_refused_at is not None else "stored"


def list_prescribers(db: Database) -> list[PrescriberListing]:
    """Every prescriber, by login email."""
    with db.session() as session:
        rows = session.execute(
            select(Prescriber, Clinic)
            .join(Clinic, Clinic.id == Prescriber.clinic_id)
            .order_by(Prescriber.email)
        ).all()
        return [
            PrescriberListing(
                login=prescriber.email,
                name=prescriber.name,
                clinic=clinic.name,
                clinic_display_id=clinic.display_id,
                platform_prescriber_id=prescriber.platform_prescriber_id,
                credentials=credentials_state(prescriber),
            )
            for prescriber, clinic in rows
        ]


@dataclass(frozen=True)
class InboxListing:
    """One stored webhook event: ids, type, state, attempts, times (ISO 8601 UTC) and last error."""

    inbox_id: int
    event_id: str
    event_type: str | None
    platform_token: str | None
    state: str
    attempts: int
    received_at: str
    processed_at: str | None
    awaiting_prescription: bool
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict, in declaration order."""
        return asdict(self)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def list_inbox(db: Database, *, dead: bool = False, limit: int = 100) -> list[InboxListing]:
    """The newest ``limit`` (1..10000) inbox events, newest first; only dead ones when ``dead``.

    Raises ``ValueError`` for a ``limit`` out of range. The raw body and its
    signature are never listed.
    """
    if not 1 <= limit <= 10_000:
        raise ValueError("limit must be between 1 and 10000")
    query = select(WebhookInbox).order_by(WebhookInbox.id.desc()).limit(limit)
    if dead:
        query = query.where(WebhookInbox.state == "dead")
    with db.session() as session:
        return [
            InboxListing(
                inbox_id=row.id,
                event_id=row.event_id,
                event_type=row.event_type,
                platform_token=row.platform_token,
                state=row.state,
                attempts=row.attempts,
                received_at=_iso(row.received_at) or "",
                processed_at=_iso(row.processed_at),
                awaiting_prescription=row.awaiting_prescription,
                last_error=row.last_error,
            )
            for row in session.scalars(query)
        ]

"""Reconciliation: ask the platform about prescriptions the webhooks have gone quiet on.

Webhook delivery can fail for good (the platform gives up after its retries).
``reconcile`` reads, with ``GET /prescriptions/{token}`` (contract §5):

- every non-final prescription with no event and no reconciliation for
  ``quiet_s`` seconds (a lost webhook must not leave it stuck), and
- every final prescription once, ``quiet_s`` after its last event (a lost
  intermediate webhook, e.g. ``signed`` before ``dispensed``, leaves a gap in
  the history that no later event will fill),

and records each transition in the platform's history that ours lacks, with
source ``reconcile``. History inserts are idempotent, so a webhook arriving
afterwards for the same transition adds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select

from app.foundation.crypto import CredentialCipher, CredentialError
from app.foundation.db import Database, utcnow
from app.foundation.models import Prescriber, Prescription
from app.mechanisms.audit import RECONCILER, append_many
from app.mechanisms.history import Change, Transition, record
from app.services.credentials import (
    CredentialsRefused,
    MissingCredentials,
    mark_credentials_refused,
    prescriber_credentials,
)
from app.services.platform_failures import platform_failure
from connector import ConnectorClient
from connector.errors import AuthError, ConnectorError
from connector.statuses import FINAL_STATUSES, LIFECYCLE

log = logging.getLogger("app.reconcile")


class PrescriptionGone(RuntimeError):
    """A prescription selected for reconciliation vanished (or lost its token) mid-run."""

    def __init__(self, prescription_id: int) -> None:
        super().__init__(f"prescription {prescription_id} is gone or has no platform token")
        self.prescription_id = prescription_id


@dataclass(frozen=True)
class ReconcileReport:
    """Counts from one run: prescriptions checked, transitions recorded, errors.

    ``failures``: one line per prescription that could not be reconciled,
    naming its id and the cause (no token, no PHI).
    """

    checked: int
    recorded: int
    errors: int
    failures: tuple[str, ...] = ()


def reconcile(
    db: Database,
    client: ConnectorClient,
    cipher: CredentialCipher,
    *,
    quiet_s: float,
    limit: int = 500,
    now: Callable[[], datetime] = utcnow,
    base_url: str = "",
) -> ReconcileReport:
    """Reconcile up to ``limit`` quiet, non-final prescriptions; returns a report.

    ``quiet_s``: seconds since the last event (or issue) before a prescription
    is asked about. ``now`` returns aware UTC. ``base_url`` (the platform's,
    ``ERX_BASE_URL``) is named in failure lines. Platform errors are counted,
    logged by id and described in ``failures``; the run goes on.
    """
    started = now()
    cutoff = started - timedelta(seconds=quiet_s)
    open_statuses = [s for s in LIFECYCLE if s not in FINAL_STATUSES]
    quiet = or_(Prescription.last_event_at.is_(None), Prescription.last_event_at <= cutoff)
    stuck = and_(
        Prescription.status.in_(open_statuses),
        or_(Prescription.reconciled_at.is_(None), Prescription.reconciled_at <= cutoff),
    )
    unchecked_final = and_(
        Prescription.status.in_(sorted(FINAL_STATUSES)),
        or_(
            Prescription.reconciled_at.is_(None),
            Prescription.reconciled_at < Prescription.last_event_at,
        ),
    )
    with db.session() as session:
        rows = session.execute(
            select(Prescription.id, Prescriber.email)
            .join(Prescription.prescriber)
            .where(Prescription.platform_token.is_not(None), quiet, or_(stuck, unchecked_final))
            .order_by(Prescription.last_event_at)
            .limit(limit)
        ).all()
    checked = recorded = 0
    failures: list[str] = []
    for prescription_id, login in rows:
        checked += 1
        try:
            recorded += _reconcile_one(db, client, cipher, prescription_id, now)
        except ConnectorError as exc:
            if isinstance(exc, AuthError) and exc.step == "login":
                # Like dispatch: no further login for this prescriber until their credentials change.
                _mark_refused(db, prescription_id, now())
            cause = platform_failure(exc, base_url=base_url or "(platform)", login=login).message
            failures.append(f"prescription {prescription_id}: {cause}")
            log.warning("reconcile failed: prescription_id=%s code=%s", prescription_id, exc.code)
        except (MissingCredentials, CredentialsRefused, CredentialError) as exc:
            failures.append(f"prescription {prescription_id}: {exc}")
            log.warning(
                "reconcile failed: prescription_id=%s error=%s", prescription_id, type(exc).__name__
            )
        except Exception as exc:  # noqa: BLE001 - one bad row must not stop the run
            failures.append(f"prescription {prescription_id}: {type(exc).__name__}")
            log.warning(
                "reconcile failed: prescription_id=%s error=%s", prescription_id, type(exc).__name__
            )
    log.info("reconcile done: checked=%s recorded=%s errors=%s", checked, recorded, len(failures))
    return ReconcileReport(checked, recorded, len(failures), tuple(failures))


def _mark_refused(db: Database, prescription_id: int, now: datetime) -> None:
    with db.session() as session:
        prescription = session.get(Prescription, prescription_id)
        if prescription is not None:
            mark_credentials_refused(prescription.prescriber, now=now)


def _reconcile_one(
    db: Database,
    client: ConnectorClient,
    cipher: CredentialCipher,
    prescription_id: int,
    now: Callable[[], datetime],
) -> int:
    with db.session() as session:
        prescription = session.get(Prescription, prescription_id)
        if prescription is None or prescription.platform_token is None:
            raise PrescriptionGone(prescription_id)
        if prescription.prescriber.credentials_refused_at is not None:
            raise CredentialsRefused(
                f"the platform refused the credentials of prescriber {prescription.prescriber.email}; "
                "not logging in until `prescribers set-credentials` stores new ones"
            )
        credentials = prescriber_credentials(prescription.prescriber, cipher)
        token = prescription.platform_token
    remote = client.get_prescription(credentials, token)
    recorded = 0
    with db.session() as session:
        prescription = session.get(Prescription, prescription_id, with_for_update=True)
        if prescription is None:
            raise PrescriptionGone(prescription_id)
        previous: str | None = None
        for change in remote.history:
            status, at = change.status, change.at
            if status in LIFECYCLE:
                (added,) = record(
                    session,
                    [
                        Change(
                            prescription,
                            Transition(
                                to_status=status,
                                from_status=previous,
                                occurred_at=at,
                                received_at=now(),
                                source="reconcile",
                            ),
                        )
                    ],
                )
                recorded += int(added)
            previous = status
        if recorded:
            append_many(
                session,
                RECONCILER,
                action="reconcile",
                prescription_ids=[prescription_id],
                now=now(),
            )
        # Asked and answered: not asked again until quiet_s passes (or, if final, ever).
        at = now()
        prescription.reconciled_at = max(at, prescription.last_event_at or at)
    return recorded

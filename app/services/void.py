"""Voiding a prescription (support staff): at the platform once issued, locally before.

Contract §5: ``POST /prescriptions/{id}/void {"reason"}`` cancels an issued,
signed or printed prescription; once it is dispensed, expired or voided the
platform answers HTTP 200 ``{"success": false, "code": "invalid_transition"}``.

- **Not yet issued** (``draft``, ``queued``, or ``dead`` after dispatch gave up):
  nothing exists on the platform, so one transaction cancels the dispatch outbox
  row (no send afterwards) and records ``voided``. A row a worker holds right
  now (live lease), or whose last attempt's outcome is unknown, may already
  exist on the platform: that is refused with 409 ``dispatch_in_progress``
  (retry once the send settles, then the void goes to the platform). So is a
  Region A prescription whose email may already have left (intent stage
  ``data``, ``accepted`` or ``in_doubt``, see app/services/mail.py).
- **Issued** (``issued``, ``signed``, ``printed``): the connector call happens
  outside any database transaction; on success ``voided`` is recorded through
  :mod:`app.mechanisms.history` with source ``operator`` and the reason as detail.
- **Final** (``dispensed``, ``expired``, ``voided``, and the service's own
  ends ``rejected`` and ``emailed``): 409 ``already_final``, as is a platform
  ``invalid_transition``.

The reason is support's free text: stored in the history and sent to the
platform, never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.foundation.crypto import CredentialCipher, CredentialError
from app.foundation.db import Database, utcnow
from app.foundation.errors import Conflict, DomainError, Forbidden, NotFound, Unavailable
from app.foundation.models import DispatchOutbox, EmailIntent, Prescription
from app.mechanisms.audit import Accessor, record_by
from app.mechanisms.history import Change, Transition, local, record
from app.mechanisms.queue import finish
from app.services.credentials import MissingCredentials, prescriber_credentials
from app.services.platform_failures import platform_failure
from connector import ConnectorClient, PrescriberCredentials
from connector.errors import ConnectorError, PlatformRejected
from connector.statuses import FINAL_STATUSES

log = logging.getLogger("app.void")

# Statuses a void ends in 409: the platform's finals (§6) and the service's own ends
# (a rejected prescription never reached the platform; an emailed one left by email).
ALREADY_FINAL = frozenset(FINAL_STATUSES | {"rejected", "emailed"})
# Nothing exists on the platform yet: voided here, in one transaction.
LOCALLY_VOIDABLE = frozenset({"draft", "queued", "dead"})
# On the platform and still open (§6): voided there first.
PLATFORM_VOIDABLE = frozenset({"issued", "signed", "printed"})
MAX_REASON_LENGTH = 500
OUTBOX_CANCELLED = "cancelled: voided before sending"
# Email intent stages after which the pharmacy may have the message (app/services/mail.py).
EMAIL_MAY_HAVE_LEFT = frozenset({"data", "accepted", "in_doubt"})


@dataclass(frozen=True)
class VoidResult:
    """What :func:`void_prescription` did.

    ``prescription_id``; ``from_status``: the status before the void;
    ``at_platform``: True when the platform voided it, False when it was
    voided locally before issue (its outbox row cancelled).
    """

    prescription_id: int
    from_status: str
    at_platform: bool


@dataclass(frozen=True)
class _PlatformTarget:
    status: str
    token: str
    credentials: PrescriberCredentials


def void_prescription(
    db: Database,
    prescription_id: int,
    *,
    reason: str,
    client: Callable[[], ConnectorClient],
    cipher: Callable[[], CredentialCipher],
    base_url: str,
    now: Callable[[], datetime] = utcnow,
    audit: Accessor | None = None,
) -> VoidResult:
    """Void ``prescription_id`` for support staff; returns a :class:`VoidResult`.

    ``reason``: support's text (1 to 500 characters after trimming), sent to
    the platform and kept as the history row's detail. ``client`` and
    ``cipher`` build the platform client and the credential cipher on demand
    (only an issued prescription needs them). ``base_url`` (``ERX_BASE_URL``)
    is named in failure messages. ``now`` returns aware UTC. ``audit``: who is
    voiding; a ``void`` audit row is written in the transaction that records it.

    Raises (``app.foundation.errors``): :class:`NotFound`; :class:`Conflict`
    ``already_final`` (final status, or the platform's ``invalid_transition``,
    contract §5) or ``dispatch_in_progress`` (a send may be on the wire);
    :class:`Unavailable` when the platform cannot be reached or refuses the
    service's or prescriber's credentials (nothing is recorded).
    """
    with db.session() as session:
        prescription = session.get(Prescription, prescription_id, with_for_update=True)
        if prescription is None:
            raise NotFound(f"Prescription {prescription_id} does not exist.")
        _refuse_final(prescription)
        if prescription.status in LOCALLY_VOIDABLE:
            at = now()
            if audit is not None:
                record_by(session, audit, action="void", prescription_id=prescription_id, now=at)
            return _void_locally(session, prescription, reason=reason, at=at, actor=_actor(audit))
        if prescription.status not in PLATFORM_VOIDABLE or not prescription.platform_token:
            raise Conflict(
                f"Prescription {prescription_id} is {prescription.status}; it cannot be voided.",
                code="not_voidable",
                details={"current_status": prescription.status},
            )
        target = _platform_target(prescription, cipher)

    # Outside any transaction: the platform call may take seconds (timeouts, re-auth).
    _void_at_platform(
        client(), target, prescription_id=prescription_id, reason=reason, base_url=base_url
    )

    with db.session() as session:
        prescription = session.get(Prescription, prescription_id, with_for_update=True)
        if prescription is None:  # pragma: no cover - prescriptions are never deleted
            raise NotFound(f"Prescription {prescription_id} does not exist.")
        at = now()
        record(
            session,
            [
                Change(
                    prescription,
                    Transition(
                        to_status="voided",
                        from_status=prescription.status,
                        occurred_at=at,
                        received_at=at,
                        source="operator",
                        detail=reason,
                        actor=_actor(audit),
                    ),
                )
            ],
        )
        if audit is not None:
            record_by(session, audit, action="void", prescription_id=prescription_id, now=at)
    log.info("prescription %s voided at the platform (was %s)", prescription_id, target.status)
    return VoidResult(prescription_id=prescription_id, from_status=target.status, at_platform=True)


def _actor(audit: Accessor | None) -> str | None:
    # Stored on the history row so the timeline says who voided: "<role>:<subject>".
    return f"{audit.role}:{audit.actor}" if audit is not None else None


def _refuse_final(prescription: Prescription) -> None:
    if prescription.status in ALREADY_FINAL:
        raise Conflict(
            f"Prescription {prescription.id} is {prescription.status}; it can no longer be voided.",
            code="already_final",
            details={"current_status": prescription.status},
        )


def _void_locally(
    session: Session,
    prescription: Prescription,
    *,
    reason: str,
    at: datetime,
    actor: str | None = None,
) -> VoidResult:
    intent_stage = session.scalar(
        select(EmailIntent.stage).where(EmailIntent.prescription_id == prescription.id)
    )
    if intent_stage in EMAIL_MAY_HAVE_LEFT:
        # Region A: the SMTP server may already hold the PDF (app/services/mail.py); an
        # operator settles the intent first (`outbox confirm-sent` / `outbox requeue`).
        raise Conflict(
            f"Prescription {prescription.id} may already have been emailed (intent {intent_stage}); "
            "settle the email first.",
            code="dispatch_in_progress",
            details={"current_status": prescription.status},
        )
    outbox = session.scalars(
        select(DispatchOutbox)
        .where(DispatchOutbox.prescription_id == prescription.id)
        .with_for_update()
    ).first()
    if outbox is not None:
        leased = outbox.locked_until is not None and outbox.locked_until > at
        if outbox.state == "pending" and (leased or outbox.outcome_unknown):
            # A worker may be issuing it right now, or an earlier attempt may have
            # created it on the platform: voiding only here could leave a live
            # prescription there. Once the send settles, void again.
            raise Conflict(
                f"Prescription {prescription.id} is being sent; retry the void in a moment.",
                code="dispatch_in_progress",
                details={"current_status": prescription.status},
            )
        if outbox.outcome_unknown:
            raise Conflict(
                f"Prescription {prescription.id} may exist on the platform (last send outcome unknown); "
                "requeue it so the worker looks it up, then void it.",
                code="dispatch_in_progress",
                details={"current_status": prescription.status},
            )
        # "done" is never claimed again; the note says why it ended.
        finish(outbox, note=OUTBOX_CANCELLED)
        outbox.updated_at = at
    from_status = prescription.status
    record(
        session,
        [
            Change(
                prescription,
                local(
                    prescription, "voided", source="operator", detail=reason, now=at, actor=actor
                ),
            )
        ],
    )
    log.info("prescription %s voided before issue (was %s)", prescription.id, from_status)
    return VoidResult(prescription_id=prescription.id, from_status=from_status, at_platform=False)


def _platform_target(
    prescription: Prescription, cipher: Callable[[], CredentialCipher]
) -> _PlatformTarget:
    prescriber = prescription.prescriber
    try:
        credentials = prescriber_credentials(prescriber, cipher())
    except (MissingCredentials, CredentialError):
        raise Unavailable(
            f"Prescriber {prescriber.email} has no usable platform credentials; store them with "
            "`prescribers set-credentials`, then void again.",
            code="prescriber_credentials_missing",
        ) from None
    return _PlatformTarget(
        status=prescription.status,
        token=str(prescription.platform_token),
        credentials=credentials,
    )


def _void_at_platform(
    client: ConnectorClient,
    target: _PlatformTarget,
    *,
    prescription_id: int,
    reason: str,
    base_url: str,
) -> None:
    try:
        client.void(target.credentials, target.token, reason=reason)
    except PlatformRejected as exc:
        if exc.code == "invalid_transition":
            # §5: dispensed, expired or voided at the platform; the webhook or
            # reconcile brings our status up to date.
            raise Conflict(
                f"The platform says prescription {prescription_id} is already final.",
                code="already_final",
                details={"platform_code": "invalid_transition"},
            ) from None
        raise _unavailable(
            platform_failure(exc, base_url=base_url, login=target.credentials.email)
        ) from None
    except ConnectorError as exc:
        raise _unavailable(
            platform_failure(exc, base_url=base_url, login=target.credentials.email)
        ) from None


def _unavailable(error: DomainError) -> DomainError:
    # A refused client or prescriber credential is the service's problem, not the
    # caller's role: support gets 503 naming the cause, never 403.
    if isinstance(error, Forbidden):
        return Unavailable(error.message, code=error.code)
    return error

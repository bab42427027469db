"""The API layer's one call for auditing who read or changed which prescription.

Read endpoints (API and FHIR) call :func:`append_read_audit` in the read's own
session, so the answer is sent only after the view and its row are both
written (a read that fails writes nothing): one row per read, naming the
prescriptions it showed. A plain GET of one prescription or of a patient's page
passes :func:`read_access` to the view instead, whose own statement writes the
row on PostgreSQL (one round trip): recorded when shown, committed with the
read; should building the answer fail after it, the row stays (a record of an
access the caller never received: more than happened, never less). Endpoints
that change a prescription (send, void) take :func:`request_accessor` and
record the change in their own transaction.
Rows go through :mod:`app.mechanisms.audit` (a plain INSERT, no lock, no read
of another row).
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import request
from sqlalchemy.orm import Session

from app.foundation.db import utcnow
from app.foundation.logs import current_request_id
from app.interfaces.identity import current_identity
from app.mechanisms.audit import Access, Accessor


def request_accessor() -> Accessor:
    """The verified caller of the current request: token ``sub`` and role, request id and
    client address (``request.remote_addr``, after ProxyFix when ``TRUSTED_PROXIES`` > 0)."""
    identity = current_identity()
    return Accessor(
        actor=identity.subject,
        role=identity.role,
        request_id=current_request_id(),
        client_addr=(request.remote_addr or None),
    )


def read_access(action: str) -> Access:
    """The access the current caller makes now (UTC) by a read recorded as ``action``, for a
    read that writes its audit row in the statement that reads
    (:func:`app.services.prescription_reads.find_row`'s ``recorded``)."""
    return Access(request_accessor(), action, utcnow())


AUDIT_APPEND_IS_ONE_STATEMENT = True
"""Whether ``app.mechanisms.audit``'s append is one plain INSERT (no lock, no read of another row).

It is (the sealer adds rows to the signed tree after they commit), so reads
run in driver autocommit (:meth:`app.foundation.db.Database.read_session`): the view
SELECT and the audit INSERT, two statements and no BEGIN/COMMIT. Set False
only for an append that needs a transaction around it.
"""


def append_read_audit(
    session: Session, action: str, prescription_ids: Iterable[int | None]
) -> None:
    """Append the audit record of one read by the current caller, now (UTC), in ``session``.

    ``action``: one of :data:`app.mechanisms.audit.ACTIONS` (``read``, ``list``,
    ``read-not-modified``, ``fhir-search``...); ``prescription_ids``: the
    prescriptions the caller was shown, in order (``[None]`` for a lookup that
    found nothing). One read is one row, one INSERT (:meth:`app.mechanisms.audit.Access.record`):
    naming its prescription when it showed exactly one, else holding the whole
    list, empty included.
    Raises ValueError for an unknown action; database errors propagate.
    """
    read_access(action).record(session, list(prescription_ids))

"""The audit append of the read endpoints (API and FHIR), in the read's own session.

A read is one query for the view plus its audit row: the row is appended in
the session that read the view, so the answer is sent only after both
committed (a read that fails writes nothing). Every read endpoint goes through
:func:`append_read_audit`, so changing how reads are recorded is one edit.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from app.access_audit import request_accessor
from app.audit import record_by
from app.db import utcnow

AUDIT_APPEND_IS_ONE_STATEMENT = False
"""Whether ``app.audit``'s append is one plain INSERT (no lock, no read of the previous row).

While it chains rows under a transaction-level advisory lock, a read and its
audit row share one transaction (``BEGIN``, view, lock, previous hash, INSERT,
``COMMIT``). Once the append is one INSERT (and a list's ids go in one row),
set this True: reads then run in driver autocommit
(:meth:`app.db.Database.read_session`), the view SELECT and the audit INSERT,
two statements and no BEGIN/COMMIT.
"""


def append_read_audit(
    session: Session, action: str, prescription_ids: Iterable[int | None]
) -> None:
    """Append the audit record of one read by the current caller, now (UTC), in ``session``.

    ``action``: one of :data:`app.audit.ACTIONS` (``read``, ``list``,
    ``read-not-modified``, ``fhir-search``...); ``prescription_ids``: the
    prescriptions the caller was shown (None for a lookup that found nothing).
    Today one row per id (what :func:`app.audit.record_by` appends). Raises
    ValueError for an unknown action; database errors propagate.
    """
    accessor, now = request_accessor(), utcnow()
    for prescription_id in prescription_ids:
        record_by(session, accessor, action=action, prescription_id=prescription_id, now=now)

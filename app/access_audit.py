"""The API layer's one call for auditing who read or changed which prescription.

Views call :func:`record_access` after a successful read (its own short
transaction, so a refused or failed call leaves no row), or pass
:func:`request_accessor` to a service that records the change in its own
transaction (send, void). Rows go through :mod:`app.audit` (a plain INSERT, no lock).
"""

from __future__ import annotations

from flask import request

from app.audit import Accessor, append_many
from app.db import utcnow
from app.extensions import services
from app.identity import current_identity
from app.logs import current_request_id


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


def record_access(action: str, *prescription_ids: int) -> None:
    """Append one ``action`` audit row per prescription id, for the current caller, now (UTC).

    One multi-row INSERT, committed in its own transaction (a list of 50 is one statement). Raises ValueError for an action not in
    :data:`app.audit.ACTIONS`; database errors propagate (the caller answers 503).
    """
    if not prescription_ids:
        return
    accessor = request_accessor()
    now = utcnow()
    with services().db.session() as session:
        append_many(session, accessor, action=action, prescription_ids=prescription_ids, now=now)

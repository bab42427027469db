"""``POST /webhooks/platform``: verify, store in the inbox, acknowledge. Nothing else.

The request path never parses before verifying, never calls out, and never
processes: a worker applies stored events (webhooks/processing.py). The 2xx
is sent only after the inbox row is committed (contract §7: at-least-once).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Flask, Response, request
from sqlalchemy import literal_column
from sqlalchemy.exc import SQLAlchemyError

from app.db import insert_ignore_statement, single_statement, utcnow
from app.errors import ApiError
from app.extensions import Services, services
from app.models import WebhookInbox
from app.queue import wakeup_sql
from webhooks.errors import SignatureError
from webhooks.events import envelope
from webhooks.signature import verify

log = logging.getLogger("webhooks")

bp = Blueprint("webhooks", __name__)
_STORE: dict[tuple[str, bool], Any] = {}


def _store_statement(dialect: str, *, wake: bool) -> Any:
    """The receipt INSERT for ``dialect``, built once; with ``wake`` (PostgreSQL) it also wakes the inbox workers.

    ``RETURNING pg_notify(...)`` runs only for a row actually inserted (not a
    duplicate) and is delivered when the insert commits: one round trip, no
    extra statement (see app/queue_wakeup.py; the receiver asks its
    ``NotifyCoalescer`` whether to use it).
    """
    stmt = _STORE.get((dialect, wake))
    if stmt is None:
        # inline(): the receiver needs only the row count, so SQLAlchemy must not fetch the
        # new id (without RETURNING it would run `SELECT nextval(...)` first: a round trip).
        stmt = insert_ignore_statement(dialect, WebhookInbox.__table__).inline()
        if wake:
            stmt = stmt.returning(literal_column(wakeup_sql(WebhookInbox)))
        _STORE[(dialect, wake)] = stmt
    return stmt


SIGNATURE_HEADER = "X-Signature"
_SIGNATURE_ENVIRON = "HTTP_X_SIGNATURE"
# The acknowledgement's bytes are what ``jsonify`` writes outside debug mode (sorted keys,
# compact, ASCII-escaped, trailing newline), composed without the JSON provider.
_encode_str = json.JSONEncoder(ensure_ascii=True).encode


def _acknowledgement(event_id: str, *, duplicate: bool) -> Response:
    body = f'{{"duplicate":{"true" if duplicate else "false"},"event_id":{_encode_str(event_id)},"received":true}}\n'
    return Response(body, 200, mimetype="application/json")


def _notify(svc: Services, kind: str, reason: str | None = None) -> None:
    """Tell the receipt listeners (app/metrics.py counts) what became of this delivery."""
    at = svc.unix_time()
    for listener in svc.webhook_listeners:
        listener(kind, reason, at)


def _read_body(environ: dict[str, Any], declared: int | None, limit: int) -> bytes:
    if declared is not None:
        if declared > limit:
            raise ApiError(413, "payload_too_large", f"Webhook bodies are limited to {limit} bytes.")
        # Reading at most the declared length straight from the WSGI input is safe (PEP 3333);
        # a client that sends fewer bytes gets a body its signature does not match.
        return environ["wsgi.input"].read(declared) if declared else b""
    raw = request.stream.read(limit + 1)  # chunked: no declared length, read up to the cap
    if len(raw) > limit:
        raise ApiError(413, "payload_too_large", f"Webhook bodies are limited to {limit} bytes.")
    return raw


@bp.post("/webhooks/platform")
def receive() -> Response:
    """Verify the ``X-Signature`` over the raw body, store the event, answer 200.

    401 ``invalid_signature`` (with ``reason``) writes nothing; 400 ``empty_body``
    for an empty (or whitespace-only) body, even when signed; 413 for bodies
    over ``WEBHOOK_MAX_BODY_BYTES``; 503 when the inbox cannot be written, so
    the platform retries. A duplicate event id answers 200 and adds nothing.
    The 200 body is ``{"duplicate": bool, "event_id": str, "received": true}``.
    """
    svc = services()
    settings = svc.settings
    req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup, not one per use
    environ = req.environ
    raw = _read_body(environ, req.content_length, settings.webhook_max_body_bytes)
    signature = environ.get(_SIGNATURE_ENVIRON)
    try:
        verify(
            raw,
            signature,
            settings.webhook_secrets,
            tolerance_s=settings.webhook_tolerance_s,
            unix_time=svc.unix_time(),
        )
    except SignatureError as exc:
        log.warning("webhook refused: reason=%s", exc.reason)
        _notify(svc, "rejected", exc.reason)
        raise ApiError(
            401,
            "invalid_signature",
            exc.message,
            {SIGNATURE_HEADER: [exc.reason]},
            reason=exc.reason,
        ) from None
    if not raw.strip():  # signed or not, an empty body is not an event: refuse, store nothing
        _notify(svc, "rejected", "empty_body")
        raise ApiError(400, "empty_body", "The webhook body is empty: it is not an event.", {"body": ["Empty."]})
    env = envelope(raw)
    now = utcnow()
    pending = env.state == "pending"
    engine = svc.db.engine
    # Only a pending event is work; nobody listens on SQLite or in poll mode (notifier None).
    # Notifying in the INSERT itself at most once per window per process, else right after
    # (app/queue_wakeup.py NotifyCoalescer: every NOTIFY serialises commits in PostgreSQL).
    notifier = svc.inbox_notifier if pending else None
    ticket = notifier.claim() if notifier is not None else None
    wake = ticket is not None
    try:
        # Core, one statement built once, committed on its own (one round trip on
        # PostgreSQL: app.db.single_statement): this is the hot path.
        with single_statement(engine) as conn:
            result = conn.execute(
                _store_statement(engine.dialect.name, wake=wake),
                {
                    "event_id": env.event_id,
                    "event_type": env.event_type,
                    "platform_token": env.platform_token,
                    # The bytes exactly as signed, with their header: re-verifiable later.
                    "body": raw,
                    "signature": signature,
                    "state": env.state,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "last_error": env.error,
                    "received_at": now,
                    "processed_at": None if pending else now,
                    "awaiting_prescription": False,
                },
            )
            inserted = bool(result.rowcount)
            result.close()
    except SQLAlchemyError as exc:
        log.error("webhook not stored: event_id=%s db_error=%s", env.event_id, type(exc).__name__)
        raise ApiError(503, "inbox_unavailable", "The event could not be stored; retry.") from None
    if inserted and notifier is not None:
        if ticket is not None:
            notifier.settle(ticket)  # this commit carried a notification: earlier rows announced too
        else:
            notifier.owe()  # committed without a notification: one follows (app/queue_wakeup.py)
    _notify(svc, "received" if inserted else "duplicate")
    # The inbox row is the audit record of every receipt; per-event logging is for debugging.
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "webhook stored: event_id=%s type=%s state=%s duplicate=%s",
            env.event_id,
            env.event_type,
            env.state,
            not inserted,
        )
    return _acknowledgement(env.event_id, duplicate=not inserted)


def init_app(app: Flask) -> None:
    """Register the receiver blueprint on ``app``."""
    app.register_blueprint(bp)

"""``POST /webhooks/platform``: verify, store in the inbox, acknowledge. Nothing else.

The request path never parses before verifying, never calls out, and never
processes: a worker applies stored events (webhooks/processing.py). The 2xx
is sent only after the inbox row is committed (contract §7: at-least-once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request
from sqlalchemy import literal_column
from sqlalchemy.exc import SQLAlchemyError

from app.db import insert_ignore_statement, utcnow
from app.errors import ApiError
from app.extensions import services
from app.models import WebhookInbox
from app.queue import wakeup_sql
from webhooks.errors import SignatureError
from webhooks.events import envelope
from webhooks.signature import verify

log = logging.getLogger("webhooks")
@dataclass(frozen=True)
class WebhookOutcome:
    """What the receiver did with one delivery, left on ``flask.g.webhook_outcome`` for
    whoever counts deliveries (app/metrics.py, as an ``after_request`` hook), so the
    receiver itself imports no metrics. ``kind``: received | duplicate | rejected;
    ``reason``: the refusal's reason; ``at``: Unix seconds of an acknowledged receipt."""

    kind: str
    reason: str | None = None
    at: float | None = None


bp = Blueprint("webhooks", __name__)
_STORE: dict[tuple[str, bool], Any] = {}


def _store_statement(dialect: str, *, wake: bool) -> Any:
    """The receipt INSERT for ``dialect``, built once; with ``wake`` (PostgreSQL) it also wakes the inbox workers.

    ``RETURNING pg_notify(...)`` runs only for a row actually inserted (not a
    duplicate) and is delivered when the insert commits: one round trip, no
    extra statement (see app/queue_wakeup.py).
    """
    stmt = _STORE.get((dialect, wake))
    if stmt is None:
        stmt = insert_ignore_statement(dialect, WebhookInbox.__table__)
        if wake:
            stmt = stmt.returning(literal_column(wakeup_sql(WebhookInbox)))
        _STORE[(dialect, wake)] = stmt
    return stmt
SIGNATURE_HEADER = "X-Signature"


def _read_body(limit: int) -> bytes:
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ApiError(413, "payload_too_large", f"Webhook bodies are limited to {limit} bytes.")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(413, "payload_too_large", f"Webhook bodies are limited to {limit} bytes.")
    return raw


@bp.post("/webhooks/platform")
def receive() -> tuple[Response, int]:
    """Verify the ``X-Signature`` over the raw body, store the event, answer 200.

    401 ``invalid_signature`` (with ``reason``) writes nothing; 400 ``empty_body``
    for an empty (or whitespace-only) body, even when signed; 413 for bodies
    over ``WEBHOOK_MAX_BODY_BYTES``; 503 when the inbox cannot be written, so
    the platform retries. A duplicate event id answers 200 and adds nothing.
    """
    svc = services()
    settings = svc.settings
    raw = _read_body(settings.webhook_max_body_bytes)
    signature = request.headers.get(SIGNATURE_HEADER)
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
        g.webhook_outcome = WebhookOutcome("rejected", reason=exc.reason)
        raise ApiError(
            401,
            "invalid_signature",
            exc.message,
            {SIGNATURE_HEADER: [exc.reason]},
            reason=exc.reason,
        ) from None
    if not raw.strip():  # signed or not, an empty body is not an event: refuse, store nothing
        g.webhook_outcome = WebhookOutcome("rejected", reason="empty_body")
        raise ApiError(400, "empty_body", "The webhook body is empty: it is not an event.", {"body": ["Empty."]})
    env = envelope(raw)
    now = utcnow()
    try:
        # Core, one prepared statement, one short transaction: this is the hot path.
        with svc.db.engine.begin() as conn:
            result = conn.execute(
                _store_statement(
                    conn.dialect.name,
                    # Only a pending event is work; in poll mode (WORKER_WAKEUP=poll) nobody listens.
                    wake=env.state == "pending"
                    and conn.dialect.name == "postgresql"
                    and settings.worker_wakeup != "poll",
                ),
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
                    "processed_at": None if env.state == "pending" else now,
                    "awaiting_prescription": False,
                },
            )
            inserted = bool(result.rowcount)
            result.close()
    except SQLAlchemyError as exc:
        log.error("webhook not stored: event_id=%s db_error=%s", env.event_id, type(exc).__name__)
        raise ApiError(503, "inbox_unavailable", "The event could not be stored; retry.") from None
    g.webhook_outcome = WebhookOutcome("received" if inserted else "duplicate", at=svc.unix_time())
    # The inbox row is the audit record of every receipt; per-event logging is for debugging.
    log.debug(
        "webhook stored: event_id=%s type=%s state=%s duplicate=%s",
        env.event_id,
        env.event_type,
        env.state,
        not inserted,
    )
    return jsonify({"received": True, "event_id": env.event_id, "duplicate": not inserted}), 200


def init_app(app: Flask) -> None:
    """Register the receiver blueprint on ``app``."""
    app.register_blueprint(bp)

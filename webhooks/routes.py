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

from app.foundation.db import utcnow
from app.interfaces.errors import ApiError
from app.mechanisms.runtime import Runtime, runtime
from webhooks.errors import SignatureError
from webhooks.events import envelope
from webhooks.inbox_store import InboxUnavailable, store_event
from webhooks.signature import verify

log = logging.getLogger("webhooks")

bp = Blueprint("webhooks", __name__)

SIGNATURE_HEADER = "X-Signature"
# The acknowledgement's bytes are what ``jsonify`` writes outside debug mode (sorted keys,
# compact, ASCII-escaped, trailing newline), composed without the JSON provider: the
# receiver answers thousands of these a second, and the provider costs more than the rest.
_encode_str = json.JSONEncoder(ensure_ascii=True).encode


def _acknowledgement(event_id: str, *, duplicate: bool) -> Response:
    """The 200 body ``{"duplicate": bool, "event_id": str, "received": true}``."""
    flag = "true" if duplicate else "false"
    body = f'{{"duplicate":{flag},"event_id":{_encode_str(event_id)},"received":true}}\n'
    return Response(body, 200, mimetype="application/json")


def _tell_listeners(svc: Runtime, kind: str, reason: str | None = None) -> None:
    """Tell the receipt listeners (app/mechanisms/metrics.py counts) what became of this delivery."""
    at = svc.unix_time()
    for listener in svc.webhook_listeners:
        listener(kind, reason, at)


def _read_body(limit: int) -> bytes:
    """The raw body, at most ``limit`` bytes; 413 beyond it, declared or chunked.

    Read from ``request.stream`` (bounded by a declared length), never through
    ``get_data``: that would buffer whatever a client sends before the cap applies.
    """
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"Webhook bodies are limited to {limit} bytes.")
    raw = request.stream.read(limit + 1)
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
    svc = runtime()
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
        _tell_listeners(svc, "rejected", exc.reason)
        raise ApiError(
            401,
            "invalid_signature",
            exc.message,
            {SIGNATURE_HEADER: [exc.reason]},
            reason=exc.reason,
        ) from None
    if not raw.strip():  # signed or not, an empty body is not an event: refuse, store nothing
        _tell_listeners(svc, "rejected", "empty_body")
        raise ApiError(
            400,
            "empty_body",
            "The webhook body is empty: it is not an event.",
            {"body": ["Empty."]},
        )
    env = envelope(raw)
    try:
        inserted = store_event(svc.db, env, raw, signature, now=utcnow(), wakeups=svc.inbox_wakeups)
    except InboxUnavailable as exc:
        log.error("webhook not stored: event_id=%s db_error=%s", env.event_id, exc)
        raise ApiError(503, "inbox_unavailable", "The event could not be stored; retry.") from None
    _tell_listeners(svc, "received" if inserted else "duplicate")
    # The inbox row is the audit record of every receipt; per-event logging is for debugging.
    log.debug(
        "webhook stored: event_id=%s state=%s duplicate=%s", env.event_id, env.state, not inserted
    )
    return _acknowledgement(env.event_id, duplicate=not inserted)


RECEIVER_PATH = "/webhooks/platform"
_RECEIVER = "erx_webhook_receiver"


def init_app(app: Flask) -> None:
    """Register the receiver blueprint on ``app`` (its URL map and route lists see it)."""
    app.register_blueprint(bp)


def serve_apart(app: Flask) -> None:
    """Serve ``POST /webhooks/platform`` from a Flask app of its own, in front of ``app``.

    The receiver app shares ``app``'s runtime (``app.extensions["erx"]``) and the one
    error shape (:func:`app.interfaces.errors.init_app`), and nothing else: none of the
    request hooks the API installs on ``app`` (rate limits keyed by bearer token, the
    input boundary of API parameters, the pages' security headers) runs for the
    platform, which is no browser and sends no bearer token. Those hooks cost more CPU
    than verifying and storing an event (docs/benchmarks.md, section 9). Every other
    request, and other methods on this path (405), go to ``app`` as before. Call it
    before wrapping ``app.wsgi_app`` in middleware that both must share (proxy headers,
    request ids).
    """
    from app.interfaces import errors

    receiver = Flask("webhooks")
    receiver.config["MAX_CONTENT_LENGTH"] = app.config.get("MAX_CONTENT_LENGTH")
    receiver.extensions["erx"] = app.extensions["erx"]
    errors.init_app(receiver)
    receiver.register_blueprint(bp)
    app.extensions[_RECEIVER] = receiver
    app.wsgi_app = _ReceiverFirst(app.wsgi_app, receiver.wsgi_app)  # type: ignore[method-assign]


def receiver_of(app: Flask) -> Flask:
    """The Flask app whose view answers the platform's POSTs: the one :func:`serve_apart`
    made for ``app``, else ``app`` itself."""
    receiver: Flask = app.extensions.get(_RECEIVER, app)
    return receiver


class _ReceiverFirst:
    """WSGI: ``POST`` :data:`RECEIVER_PATH` to the receiver app, everything else to the service."""

    def __init__(self, service: Any, receiver: Any) -> None:
        self.service, self.receiver = service, receiver

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO") == RECEIVER_PATH:
            return self.receiver(environ, start_response)
        return self.service(environ, start_response)

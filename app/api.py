"""The patient-facing API (``/api/v1``): queue a send, read a prescription's timeline.

Every endpoint requires ``Authorization: Bearer <token>`` with a token from
``API_TOKENS``. Errors use the one JSON shape of app/errors.py, which also maps
the services' domain errors (``app.services.errors``) to HTTP statuses.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from marshmallow import ValidationError

from app.errors import ApiError
from app.extensions import services
from app.logs import current_request_id
from app.schemas import MAX_ID, SendRequestSchema
from app.services.prescriptions import prescription_view, queue_send

bp = Blueprint("api", __name__, url_prefix="/api/v1")
_send_schema = SendRequestSchema()
MAX_IDEMPOTENCY_KEY = 200


@bp.before_request
def _require_token() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    valid = scheme.lower() == "bearer" and token and any(
        hmac.compare_digest(token.encode(), known.encode()) for known in services().settings.api_tokens
    )
    if not valid:
        raise ApiError(401, "unauthorized", "A valid bearer token is required.")


def _json_body() -> dict[str, Any]:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "Send a JSON body (Content-Type: application/json).")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # absurdly nested JSON
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "The body is not a JSON object.")
    return body


def _check_id(prescription_id: int) -> None:
    if prescription_id > MAX_ID:
        raise ApiError(404, "not_found", "No such prescription.")


@bp.post("/prescriptions/<int:prescription_id>/send")
def send(prescription_id: int) -> tuple[Response, int]:
    """Queue a prescription for its region's flow; answers 202 with the status URL.

    Body ``{"pharmacy_id": int}``. Optional ``Idempotency-Key`` header: a repeat
    returns the first response; a different body with the same key gets 422.
    """
    _check_id(prescription_id)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 200 printable characters.",
            {"Idempotency-Key": ["Invalid."]},
        )
    try:
        data = _send_schema.load(_json_body())
    except ValidationError as exc:
        raise ApiError(422, "validation_error", "The request is invalid.", exc.normalized_messages()) from None
    queued = queue_send(
        services().db,
        prescription_id,
        pharmacy_id=data["pharmacy_id"],
        idempotency_key=key,
        request_id=current_request_id(),
    )
    response = jsonify(queued.as_dict())
    response.headers["Location"] = queued.status_url
    return response, 202


@bp.get("/prescriptions/<int:prescription_id>")
def show(prescription_id: int) -> tuple[Response, int]:
    """Return the prescription's current status, dispatch state and full timeline."""
    _check_id(prescription_id)
    return jsonify(prescription_view(services().db, prescription_id)), 200


def init_app(app: Flask) -> None:
    """Register the API blueprint on ``app``."""
    app.register_blueprint(bp)

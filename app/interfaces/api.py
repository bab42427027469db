"""The prescription endpoints under ``/api/v1``: read one, send it, void it.

Every endpoint takes a bearer JWT (:func:`app.interfaces.identity.require_roles`):

- ``GET /prescriptions/<id or reference>``: patient (own only), support,
  service. A patient never sees the platform token nor the patient block.
- ``GET /prescriptions?reference=|platform_token=``: support, service.
- ``POST /prescriptions/<id>/send``: patient (own only), service.
- ``POST /prescriptions/<id>/void``: support.

A patient asking about another patient's prescription gets 404, exactly as
for a missing one. Bodies and answers go through the marshmallow
schemas of :mod:`app.interfaces.schemas`. Errors use the one JSON shape of
app/interfaces/errors.py, which also maps the services' domain errors
(``app.foundation.errors``) to HTTP statuses.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from marshmallow import Schema, ValidationError

from app.foundation.logs import current_request_id
from app.interfaces.access_audit import (
    AUDIT_APPEND_IS_ONE_STATEMENT,
    append_read_audit,
    read_access,
    request_accessor,
)
from app.interfaces.conditional import respond_conditionally
from app.interfaces.errors import ApiError
from app.interfaces.identity import current_identity, require_roles
from app.interfaces.json_body import json_object
from app.interfaces.schemas import (
    MAX_ID,
    PrescriptionViewSchema,
    SendRequestSchema,
    SendResponseSchema,
    VoidRequestSchema,
)
from app.mechanisms.runtime import runtime
from app.services.connector_factory import make_client
from app.services.credentials import credential_cipher
from app.services.prescription_reads import Viewer, find_view
from app.services.prescriptions import queue_send
from app.services.void import void_prescription
from connector import ConnectorClient

bp = Blueprint("api", __name__, url_prefix="/api/v1")
_send_schema = SendRequestSchema()
_send_response = SendResponseSchema()
_void_schema = VoidRequestSchema()
_view_schema = PrescriptionViewSchema()
MAX_IDEMPOTENCY_KEY = 200
_CLIENT_EXTENSION = "erx_platform_client"


def _load(schema: Schema, body: dict[str, Any]) -> dict[str, Any]:
    try:
        return schema.load(body)
    except ValidationError as exc:
        raise ApiError(
            422, "validation_error", "The request is invalid.", exc.normalized_messages()
        ) from None


def _check_id(prescription_id: int) -> None:
    if prescription_id > MAX_ID:
        raise ApiError(404, "not_found", "No such prescription.")


def _own_patient_ref() -> str | None:
    """The caller's patient reference when the caller is a patient (own data only), else None."""
    identity = current_identity()
    return identity.subject if identity.role == "patient" else None


def _viewer() -> Viewer:
    identity = current_identity()
    staff = identity.role in ("support", "service")
    return Viewer(patient_ref=_own_patient_ref(), privileged=staff)


def _view(prescription_id: int) -> dict[str, Any]:
    with runtime().db.read_session() as session:
        view = find_view(session, viewer=_viewer(), prescription_id=prescription_id)
    if view is None:
        raise ApiError(404, "not_found", "No such prescription.")
    return _view_schema.dump(view)


# Our references ("rx-000025") and platform tokens are printable ASCII without spaces.
_KEY_PATTERN = re.compile(r"[!-~]{1,64}")
KEY_PATTERN = "^[!-~]{1,64}$"  # the same rule as OpenAPI writes it (app/interfaces/openapi.py)


def _text_key(name: str, value: str) -> str:
    """``value`` of the query parameter ``name``, checked as a reference or platform token.

    Raises :class:`ApiError` 422 naming ``name`` when it is not 1 to 64
    printable ASCII characters without spaces.
    """
    if not _KEY_PATTERN.fullmatch(value):
        raise ApiError(
            422,
            "validation_error",
            "The request is invalid.",
            {name: ["1 to 64 printable ASCII characters, no spaces."]},
        )
    return value


def _prescription_key(value: str) -> dict[str, Any]:
    """The lookup key for a path segment: digits are an id, anything else our reference.

    Anything that cannot be an id or a reference names no prescription: 404.
    """
    if value.isascii() and value.isdigit():
        prescription_id = int(value)
        _check_id(prescription_id)
        return {"prescription_id": prescription_id}
    if not _KEY_PATTERN.fullmatch(value):
        raise ApiError(404, "not_found", "No such prescription.")
    return {"reference": value}


def _platform_client() -> ConnectorClient:
    # One client per app, created on first use: it owns the platform token cache.
    client = current_app.extensions.get(_CLIENT_EXTENSION)
    if client is None:
        client = make_client(runtime().settings)
        current_app.extensions[_CLIENT_EXTENSION] = client
    return client


@bp.post("/prescriptions/<int:prescription_id>/send")
@require_roles("patient", "service")
def send(prescription_id: int) -> tuple[Response, int]:
    """Queue a prescription for its region's flow; answers 202 with the status URL.

    Body ``{"pharmacy_id": int}``. Optional ``Idempotency-Key`` header: a repeat
    returns the first response; a different body with the same key gets 422.
    A patient may send only their own prescriptions (another's is 404).
    """
    _check_id(prescription_id)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (
        key.strip() and len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()
    ):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 200 printable characters, not only spaces.",
            {"Idempotency-Key": ["Invalid."]},
        )
    data = _load(_send_schema, json_object())
    queued = queue_send(
        runtime().db,
        prescription_id,
        pharmacy_id=data["pharmacy_id"],
        idempotency_key=key,
        patient_ref=_own_patient_ref(),
        request_id=current_request_id(),
        audit=request_accessor(),
    )
    response = jsonify(_send_response.dump(queued.as_dict()))
    response.headers["Location"] = queued.status_url
    return response, 202


@bp.get("/prescriptions/<prescription_id>")
@require_roles("patient", "support", "service")
def show(prescription_id: str) -> tuple[Response, int]:
    """Return the prescription: status, region, pharmacy, medicines, prescriber, rejection,
    dispatch, timeline. ``prescription_id`` is the numeric id or our reference (``rx-000025``).

    A plain GET reads the view and writes its ``read`` audit row in ONE statement on
    PostgreSQL (the row is written only when the view is shown). A conditional GET
    (``If-None-Match``) must see the view before it knows what it records (``read``,
    or ``read-not-modified`` for a 304): one query, then one INSERT.
    ``ETag``/``If-None-Match``: see :func:`app.interfaces.conditional.respond_conditionally`.
    """
    key = _prescription_key(prescription_id)
    conditional = bool(request.if_none_match)
    with runtime().db.read_session(autocommit=AUDIT_APPEND_IS_ONE_STATEMENT) as session:
        recorded = None if conditional else read_access("read")
        view = find_view(session, viewer=_viewer(), recorded=recorded, **key)
        if view is None:
            raise ApiError(404, "not_found", "No such prescription.")
        # The view has exactly PrescriptionViewSchema's shape (tests hold the dump equal to it).
        response, not_modified = respond_conditionally(view)
        if conditional:
            action = "read-not-modified" if not_modified else "read"
            append_read_audit(session, action, [view["id"]])
    return response, response.status_code


@bp.get("/prescriptions")
@require_roles("support", "service")
def lookup() -> tuple[Response, int]:
    """Find a prescription by ``?reference=rx-000025`` or ``?platform_token=<token>`` (exactly one).

    Support and service only (a patient gets 403). Answers ``{"items": [view]}``
    with 0 or 1 items; one audit row either way (``read`` of the prescription
    found, or ``lookup`` with no prescription). 422 for neither, both, a
    repeated or a malformed parameter.
    """
    given = {name: request.args.getlist(name) for name in ("reference", "platform_token")}
    given = {name: values for name, values in given.items() if values}
    if len(given) != 1 or any(len(values) > 1 for values in given.values()):
        message = "Give exactly one of reference or platform_token, once."
        raise ApiError(
            422,
            "validation_error",
            message,
            {name: [message] for name in ("reference", "platform_token")},
        )
    name, (value,) = next(iter(given.items()))
    with runtime().db.read_session(autocommit=AUDIT_APPEND_IS_ONE_STATEMENT) as session:
        view = find_view(session, viewer=_viewer(), **{name: _text_key(name, value)})
        items = [_view_schema.dump(view)] if view is not None else []
        found = [view["id"]] if view is not None else [None]
        append_read_audit(session, "read" if view is not None else "lookup", found)
    return jsonify({"items": items}), 200


@bp.post("/prescriptions/<int:prescription_id>/void")
@require_roles("support")
def void(prescription_id: int) -> tuple[Response, int]:
    """Void a prescription (support): body ``{"reason"}``; answers 200 with the prescription.

    409 ``already_final`` once it is final, 503 when the platform cannot be
    reached (nothing recorded); see :func:`app.services.void.void_prescription`.
    """
    _check_id(prescription_id)
    data = _load(_void_schema, json_object())
    settings = runtime().settings
    void_prescription(
        runtime().db,
        prescription_id,
        reason=data["reason"].strip(),
        client=_platform_client,
        cipher=lambda: credential_cipher(settings.encryption_keys),
        base_url=settings.erx_base_url,
        audit=request_accessor(),
    )
    return jsonify(_view(prescription_id)), 200


def init_app(app: Flask) -> None:
    """Register the API blueprint on ``app``."""
    app.register_blueprint(bp)

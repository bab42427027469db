"""The OpenAPI 3 document of the service's HTTP API, generated from the marshmallow schemas.

One home for the contract (issue 8 point 4): every ``/api/v1`` endpoint with
its request schema, parameters, bearer-JWT security and every response it can
give, plus the platform's webhook receiver with its ``X-Signature`` header.
Bodies come from :mod:`app.schemas` and :mod:`app.directory_schemas` through
apispec's marshmallow plugin; the error shape is :mod:`app.errors`'.

Served without authentication at ``GET /api/v1/openapi.json`` and committed as
``docs/openapi.json``; ``tests/unit/test_openapi.py`` fails when the two differ
or when a route exists that the document does not describe. Regenerate with::

    python -m app.openapi > docs/openapi.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response
from marshmallow import INCLUDE, Schema, fields

from app.api import KEY_PATTERN, MAX_IDEMPOTENCY_KEY
from app.directory_schemas import (
    MAX_PAGE,
    REGION_CODES,
    PharmacyPageSchema,
    PrescriptionPageSchema,
    ProfileSchema,
    RegionListSchema,
    RegionUpdateSchema,
)
from app.fhir_openapi import fhir_paths
from app.schemas import (
    MAX_ID,
    PrescriptionViewSchema,
    SendRequestSchema,
    SendResponseSchema,
    VoidRequestSchema,
)
from app.services.paging import MAX_PER_PAGE
from app.services.pharmacies import MAX_QUERY_LENGTH

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1"
DOCUMENT_PATH = "/api/v1/openapi.json"
REGENERATE_COMMAND = "python -m app.openapi > docs/openapi.json"
BEARER = "bearerAuth"


class ErrorSchema(Schema):
    """Every error answer (app/errors.py): ``{"code", "message", "errors"}``.

    ``errors`` maps a field (or header) name to its messages. Some errors add
    top-level keys: ``reason`` (webhook signature), ``current_status`` (409),
    so further properties are allowed.
    """

    class Meta:
        unknown = INCLUDE

    code = fields.String(required=True, metadata={"description": "Machine-readable, snake_case."})
    message = fields.String(required=True, metadata={"description": "Human-readable; no personal data."})
    errors = fields.Dict(
        keys=fields.String(),
        required=True,
        metadata={"description": "Field (or header) name to its messages; empty when not about a field."},
    )


class SignatureErrorSchema(ErrorSchema):
    """The webhook receiver's 401: the error shape plus ``reason`` (why the signature failed)."""

    reason = fields.String(required=True, metadata={"description": "missing_header, malformed_header, stale_timestamp or no_match."})


class PrescriptionLookupSchema(Schema):
    """``GET /api/v1/prescriptions?reference=|platform_token=``: ``{"items": [prescription]}``,
    0 or 1 items."""

    items = fields.List(fields.Nested(PrescriptionViewSchema), required=True)


class WebhookAckSchema(Schema):
    """``POST /webhooks/platform`` 200: ``{"received": true, "event_id", "duplicate"}``."""

    received = fields.Boolean(required=True)
    event_id = fields.String(required=True, allow_none=True)
    duplicate = fields.Boolean(required=True, metadata={"description": "True when this event id was already stored."})


# Why each error status is answered; an operation lists only those it can give.
_ERROR_WHY = {
    400: "The body is not a JSON object, or a header is malformed.",
    401: 'No valid bearer token; the answer carries `WWW-Authenticate: Bearer error="invalid_token"`.',
    403: "The token's role may not use this endpoint.",
    404: "No such resource (a patient asking about another patient's prescription gets 404 too).",
    409: "The resource's state does not allow this (its current status is in `current_status`).",
    413: "The body is larger than the service accepts.",
    415: "The body is not declared `application/json`.",
    422: "The request is well-formed but invalid: `errors` names each field to fix.",
    503: "A dependency (database, platform) cannot be reached; nothing was changed, retry later.",
}
# Every endpoint reads the database, and app/errors.py answers its absence with 503.
_ALWAYS = (401, 503)
_JSON_BODY = (400, 413, 415, 422)


@dataclass(frozen=True)
class _Operation:
    """One documented operation: ``path`` in OpenAPI form, ``method`` lower case.

    ``ok``: (2xx status, response schema or None, description). ``errors``: the
    error statuses it can give (401 and 503 are added to every token endpoint);
    ``extra_responses``: statuses described by hand (the webhook's 400 and 401).
    ``roles``: the JWT roles allowed (empty: no bearer token, e.g. the webhook).
    """

    path: str
    method: str
    operation_id: str
    summary: str
    tag: str
    ok: tuple[int, type[Schema] | None, str]
    errors: Sequence[int] = ()
    roles: Sequence[str] = ()
    body: type[Schema] | None = None
    parameters: Sequence[dict[str, Any]] = ()
    description: str = ""
    extra_responses: dict[int, dict[str, Any]] = field(default_factory=dict)


_PRESCRIPTION_ID = {
    "name": "prescription_id",
    "in": "path",
    "required": True,
    "description": "The prescription's id (as in `status_url`).",
    "schema": {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_ID},
}
_PRESCRIPTION_ID_OR_REFERENCE = {
    "name": "prescription_id",
    "in": "path",
    "required": True,
    "description": (
        "The prescription's id (as in `status_url`) or our reference (`rx-000025`, as "
        "quoted to the pharmacy)."
    ),
    "schema": {"type": "string", "pattern": KEY_PATTERN, "example": "rx-000025"},
}
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": (
        "The `ETag` of an earlier answer: 304 with no body while nothing the caller sees changed."
    ),
    "schema": {"type": "string"},
}
_NOT_MODIFIED = {
    304: {
        "description": (
            "Not modified (`If-None-Match` matched the current `ETag`): no body. Still an access: "
            "the audit trail records it (`read-not-modified` / `list-not-modified`)."
        ),
        "headers": {
            "ETag": {"description": "The current entity tag.", "schema": {"type": "string"}}
        },
    }
}


def _lookup_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": f"{description} Give exactly one of `reference` or `platform_token`.",
        "schema": {"type": "string", "pattern": KEY_PATTERN},
    }


_PAGE = {
    "name": "page",
    "in": "query",
    "required": False,
    "description": "1-based page number.",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
}
_PER_PAGE = {
    "name": "per_page",
    "in": "query",
    "required": False,
    "description": "Items per page.",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE, "default": 20},
}
_Q = {
    "name": "q",
    "in": "query",
    "required": False,
    "description": "Name, town or postcode (a prefix such as `W1U` matches); case- and accent-insensitive.",
    "schema": {"type": "string", "maxLength": MAX_QUERY_LENGTH},
}
_REGION = {
    "name": "region",
    "in": "query",
    "required": False,
    "description": "A region code (`GET /api/v1/regions`); region B lists only pharmacies with a branch id.",
    "schema": {"type": "string", "enum": list(REGION_CODES)},
}
_KEY_CHAR = "[ -~\\xa1-\\xac\\xae-\\xff]"
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A repeat with the same key returns the first answer; the same key with another body is 422.",
    # What app/api.py accepts, as HTTP carries it (ISO-8859-1): printable characters (no
    # controls, no soft hyphen), at least one of them not a space.
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDEMPOTENCY_KEY,
        "pattern": f"^{_KEY_CHAR}*{_KEY_CHAR.replace(' ', '!')}{_KEY_CHAR}*$",
    },
}
# webhooks.routes.SIGNATURE_HEADER: app may import webhooks only in create_app (design.md);
# tests/unit/test_openapi.py keeps the two names equal.
_SIGNATURE = {
    "name": "X-Signature",
    "in": "header",
    "required": True,
    "description": (
        "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\">` with the shared webhook secret "
        "(platform contract §7); stale timestamps are refused."
    ),
    "schema": {"type": "string", "example": "t=1767225600,v1=5d41402abc4b2a76b9719d911017c592"},
}

_OPERATIONS: tuple[_Operation, ...] = (
    _Operation(
        path="/api/v1/prescriptions/{prescription_id}/send",
        method="post",
        operation_id="sendPrescription",
        summary="Queue a prescription for its region's flow (email PDF or e-prescription platform).",
        tag="prescriptions",
        roles=("patient", "service"),
        body=SendRequestSchema,
        parameters=(_PRESCRIPTION_ID, _IDEMPOTENCY_KEY),
        ok=(202, SendResponseSchema, "Queued; `Location` is the status URL. A repeat answers the same."),
        errors=(*_JSON_BODY, 401, 403, 404, 409, 503),
        description="A patient may send only their own prescriptions; another's answers 404.",
    ),
    _Operation(
        path="/api/v1/prescriptions/{prescription_id}",
        method="get",
        operation_id="getPrescription",
        summary=(
            "A prescription: status, pharmacy, medicines, prescriber, timeline; by id or by our "
            "reference."
        ),
        tag="prescriptions",
        roles=("patient", "support", "service"),
        parameters=(_PRESCRIPTION_ID_OR_REFERENCE, _IF_NONE_MATCH),
        ok=(
            200,
            PrescriptionViewSchema,
            "The prescription with its `ETag`; `platform_token` and `patient` only for support "
            "and service.",
        ),
        errors=(*_ALWAYS, 404, 422),
        extra_responses=_NOT_MODIFIED,
        description=(
            "A patient reads only their own (another's, by id or reference, is 404). Every answer, "
            "304 included, is one audit row."
        ),
    ),
    _Operation(
        path="/api/v1/prescriptions",
        method="get",
        operation_id="lookupPrescription",
        summary="Find a prescription by our reference or by its platform token (support desk).",
        tag="prescriptions",
        roles=("support", "service"),
        parameters=(
            _lookup_parameter("reference", "Our reference, e.g. `rx-000025`."),
            _lookup_parameter("platform_token", "The platform's prescription token."),
        ),
        ok=(200, PrescriptionLookupSchema, "`{\"items\": [prescription]}`: 0 or 1 items."),
        errors=(*_ALWAYS, 403, 422),
        description=(
            "Neither or both parameters, or one given twice, is 422. One audit row per lookup."
        ),
    ),
    _Operation(
        path="/api/v1/prescriptions/{prescription_id}/void",
        method="post",
        operation_id="voidPrescription",
        summary="Void a prescription (at the platform once issued).",
        tag="prescriptions",
        roles=("support",),
        body=VoidRequestSchema,
        parameters=(_PRESCRIPTION_ID,),
        ok=(200, PrescriptionViewSchema, "Voided; the prescription as it now stands."),
        errors=(*_JSON_BODY, 401, 403, 404, 409, 503),
    ),
    _Operation(
        path="/api/v1/regions",
        method="get",
        operation_id="listRegions",
        summary="Every region with its delivery method.",
        tag="directory",
        roles=("patient", "support", "service"),
        ok=(200, RegionListSchema, "The regions."),
        errors=_ALWAYS,
    ),
    _Operation(
        path="/api/v1/me",
        method="get",
        operation_id="getProfile",
        summary="The calling patient's region.",
        tag="directory",
        roles=("patient",),
        ok=(200, ProfileSchema, "The patient's profile."),
        errors=(*_ALWAYS, 403, 404),
    ),
    _Operation(
        path="/api/v1/me",
        method="patch",
        operation_id="updateProfile",
        summary="Set the calling patient's region; it decides the route of later sends.",
        tag="directory",
        roles=("patient",),
        body=RegionUpdateSchema,
        ok=(200, ProfileSchema, "The updated profile."),
        errors=(*_JSON_BODY, *_ALWAYS, 403, 404),
    ),
    _Operation(
        path="/api/v1/me/prescriptions",
        method="get",
        operation_id="listMyPrescriptions",
        summary="The calling patient's prescriptions, newest first.",
        tag="directory",
        roles=("patient",),
        parameters=(_PAGE, _PER_PAGE, _IF_NONE_MATCH),
        ok=(
            200,
            PrescriptionPageSchema,
            "One page of prescriptions, each with its view; with an `ETag`.",
        ),
        errors=(*_ALWAYS, 403, 404, 422),
        extra_responses=_NOT_MODIFIED,
    ),
    _Operation(
        path="/api/v1/pharmacies",
        method="get",
        operation_id="searchPharmacies",
        summary="Search pharmacies by name, town or postcode, best matches first.",
        tag="directory",
        roles=("patient", "support", "service"),
        parameters=(_REGION, _Q, _PAGE, _PER_PAGE),
        ok=(200, PharmacyPageSchema, "One page of pharmacies."),
        errors=(*_ALWAYS, 422),
        description="Each query parameter may be given once (a repeated one is 422); unknown ones are ignored.",
    ),
    _Operation(
        path="/webhooks/platform",
        method="post",
        operation_id="receivePlatformWebhook",
        summary="The e-prescription platform's signed status events (verified, stored, acknowledged).",
        tag="webhooks",
        parameters=(_SIGNATURE,),
        ok=(200, WebhookAckSchema, "Stored (or a duplicate event id, stored before); the platform stops retrying."),
        errors=(413, 503),
        extra_responses={
            400: {
                "description": "The body is empty (even when signed): it is not an event; nothing stored.",
                "content": {"application/json": {"schema": "Error"}},
            },
            401: {
                "description": "The signature is missing, malformed, stale or wrong (`reason`); nothing stored.",
                "content": {"application/json": {"schema": "SignatureError"}},
            }
        },
        description="The raw body is verified before it is parsed; 2xx only once the event is committed.",
    ),
)


def _operation(op: _Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    status, schema, why = op.ok
    responses[str(status)] = {"description": why}
    if schema is not None:
        responses[str(status)]["content"] = {"application/json": {"schema": schema}}
    if 304 in op.extra_responses:
        responses[str(status)]["headers"] = {
            "ETag": {
                "description": "Changes whenever anything in the answer changes.",
                "schema": {"type": "string"},
            }
        }
    if status == 202:
        responses[str(status)]["headers"] = {
            "Location": {"description": "The prescription's status URL.", "schema": {"type": "string"}}
        }
    errors = {*op.errors, *(_ALWAYS if op.roles else ())}
    for code in sorted(errors):
        responses[str(code)] = {"description": _ERROR_WHY[code], "content": {"application/json": {"schema": "Error"}}}
        if code == 401:
            responses[str(code)]["headers"] = {
                "WWW-Authenticate": {"description": 'Bearer error="invalid_token"', "schema": {"type": "string"}}
            }
    for code, response in op.extra_responses.items():
        responses[str(code)] = response
    description = op.description
    if op.roles:
        roles = ", ".join(f"`{role}`" for role in op.roles)
        description = f"Roles: {roles}. {description}".strip()
    operation: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": description,
        "tags": [op.tag],
        "responses": dict(sorted(responses.items())),
        "security": [{BEARER: []}] if op.roles else [],
    }
    if op.parameters:
        operation["parameters"] = [dict(p) for p in op.parameters]
    if op.body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.body}}}
    elif not op.roles:  # the webhook: any JSON object, verified as raw bytes first
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object", "description": "A platform event (§7)."}}},
        }
    return operation


def build_spec() -> dict[str, Any]:
    """Return the OpenAPI 3.0 document as a dict (a fresh one on each call).

    Errors: apispec's errors if a schema cannot be converted (a programming error).
    """
    spec = APISpec(
        title="erx-connector",
        version=API_VERSION,
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={
            "description": (
                "The patient app's API (regions, pharmacy search, send, status, void) and the "
                "e-prescription platform's webhook receiver. Errors share one shape: "
                '`{"code", "message", "errors"}`. The read-only FHIR R4 view lives under '
                "`/fhir/R4` (FHIR resources as `application/fhir+json`, errors as "
                "OperationOutcome)."
            )
        },
    )
    spec.components.security_scheme(
        BEARER,
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A JWT from the identity provider: `sub` is the patient reference, "
            "`role` one of patient, support, service.",
        },
    )
    spec.components.schema("Error", schema=ErrorSchema)
    spec.components.schema("SignatureError", schema=SignatureErrorSchema)
    paths: dict[str, dict[str, Any]] = {}
    for op in _OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    paths[DOCUMENT_PATH] = {
        "get": {
            "operationId": "getOpenApiDocument",
            "summary": "This OpenAPI document.",
            "tags": ["meta"],
            "security": [],
            "responses": {
                "200": {"description": "The document.", "content": {"application/json": {"schema": {"type": "object"}}}}
            },
        }
    }
    paths.update(fhir_paths(security_scheme=BEARER))
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


@lru_cache(maxsize=1)
def openapi_json() -> str:
    """The document as pretty-printed JSON text, keys sorted, ending in a newline (stable diffs)."""
    return json.dumps(build_spec(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


bp = Blueprint("openapi", __name__)


@bp.get(DOCUMENT_PATH)
def document() -> Response:
    """Serve the OpenAPI document (no authentication: it is public)."""
    return Response(openapi_json(), mimetype="application/json")


def init_app(app: Flask) -> None:
    """Register ``GET /api/v1/openapi.json`` on ``app``."""
    app.register_blueprint(bp)


if __name__ == "__main__":
    sys.stdout.write(openapi_json())

"""The patient app's directory under ``/api/v1``: regions, the caller's profile and
prescriptions, pharmacy search.

Every endpoint needs a bearer JWT (:func:`app.interfaces.identity.require_roles`). Runtime
raise domain errors (``app/foundation/errors.py``); the app's one handler (app/interfaces/errors.py) maps them to the
JSON error shape ``{"code", "message", "errors"}``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from marshmallow import Schema, ValidationError

from app.foundation.errors import Invalid
from app.interfaces.access_audit import (
    AUDIT_APPEND_IS_ONE_STATEMENT,
    append_read_audit,
    read_access,
)
from app.interfaces.conditional import respond_conditionally
from app.interfaces.directory_schemas import (
    PageQuerySchema,
    PharmacyPageSchema,
    PharmacySearchQuerySchema,
    ProfileSchema,
    RegionListSchema,
    RegionUpdateSchema,
    prescription_page_body,
)
from app.interfaces.identity import ROLES, current_identity, require_roles
from app.interfaces.json_body import json_object
from app.mechanisms.runtime import runtime
from app.services.patients import patient_prescription_page, patient_profile, set_region
from app.services.pharmacies import search_pharmacies
from app.services.regions import list_regions

bp = Blueprint("directory_api", __name__, url_prefix="/api/v1")

_page_query = PageQuerySchema()
_search_query = PharmacySearchQuerySchema()
_region_update = RegionUpdateSchema()


def _load(schema: Schema, data: Any) -> dict[str, Any]:
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise Invalid("The request is invalid.", errors=exc.normalized_messages()) from None


def _query(schema: Schema) -> dict[str, Any]:
    # One value per parameter: a repeated one (?page=1&page=2) is refused, not guessed.
    repeated = {
        key: ["Give this parameter once."]
        for key in request.args
        if len(request.args.getlist(key)) > 1
    }
    if repeated:
        raise Invalid("The request is invalid.", errors=repeated)
    return _load(schema, request.args.to_dict())


@bp.get("/regions")
@require_roles(*ROLES)
def regions() -> tuple[Response, int]:
    """Every region with its delivery method."""
    return jsonify(RegionListSchema().dump({"regions": list_regions(runtime().db)})), 200


@bp.get("/me")
@require_roles("patient")
def me() -> tuple[Response, int]:
    """The calling patient's region (404 when the token's subject is no patient)."""
    profile = patient_profile(runtime().db, current_identity().subject)
    return jsonify(ProfileSchema().dump(profile)), 200


@bp.patch("/me")
@require_roles("patient")
def update_me() -> tuple[Response, int]:
    """Set the calling patient's region: body ``{"region": "A" | "B"}``."""
    data = _load(_region_update, json_object())
    profile = set_region(runtime().db, current_identity().subject, data["region"])
    return jsonify(ProfileSchema().dump(profile)), 200


@bp.get("/me/prescriptions")
@require_roles("patient")
def my_prescriptions() -> tuple[Response, int]:
    """The calling patient's prescriptions with their views, newest first: ``?page=&per_page=``.

    One query for the page and its total; a plain GET writes the audit row naming every
    prescription listed in that same statement on PostgreSQL. A conditional GET
    (``If-None-Match``) records after it knows the answer, as the single read does (a 304
    records ``list-not-modified``).
    """
    args = _query(_page_query)
    conditional = bool(request.if_none_match)
    with runtime().db.read_session(autocommit=AUDIT_APPEND_IS_ONE_STATEMENT) as session:
        page = patient_prescription_page(
            session,
            current_identity().subject,
            page=args["page"],
            per_page=args["per_page"],
            recorded=None if conditional else read_access("list"),
        )
        response, not_modified = respond_conditionally(prescription_page_body(page))
        if conditional:
            action = "list-not-modified" if not_modified else "list"
            append_read_audit(session, action, [item["id"] for item in page.items])
    return response, response.status_code


@bp.get("/pharmacies")
@require_roles(*ROLES)
def pharmacies() -> tuple[Response, int]:
    """Search pharmacies: ``?q=&region=&page=&per_page=``, best matches first."""
    args = _query(_search_query)
    page = search_pharmacies(
        runtime().db,
        q=args["q"],
        region=args["region"],
        page=args["page"],
        per_page=args["per_page"],
    )
    return jsonify(PharmacyPageSchema().dump(page)), 200


def init_app(app: Flask) -> None:
    """Register the directory blueprint on ``app``."""
    app.register_blueprint(bp)

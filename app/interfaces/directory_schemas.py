"""Marshmallow schemas of the directory endpoints: regions, the patient's profile, pharmacy search.

Request schemas refuse unknown body fields; query-string schemas ignore unknown
parameters (browsers and proxies add cache-busters) but validate the known ones.
Response schemas dump the services' frozen results (``app/services``).
"""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates

from app.foundation.text_folding import fold
from app.interfaces.schemas import (
    DispatchSchema,
    HistoryEntrySchema,
    MedicineLineSchema,
    PharmacySummarySchema,
    PrescriberSummarySchema,
    RejectionSchema,
)
from app.interfaces.text_input import Text
from app.services.paging import MAX_PER_PAGE, Page
from app.services.pharmacies import MAX_QUERY_LENGTH

MAX_PAGE = 10_000
# The region codes of the seeded regions table (scripts/seed/001_reference.sql), for the
# OpenAPI document; the table stays the validator. tests/unit/test_openapi.py keeps them equal.
REGION_CODES = ("A", "B")
FOLDS_TO_NOTHING = (
    "Type at least one letter or digit of a pharmacy name, town or postcode "
    "(spaces, punctuation and symbols alone match nothing); leave q empty to list every pharmacy."
)


class PageQuerySchema(Schema):
    """``?page=&per_page=``: page 1-based (default 1), per_page 1..50 (default 20)."""

    class Meta:
        unknown = EXCLUDE

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_PER_PAGE))


class PharmacySearchQuerySchema(PageQuerySchema):
    """``GET /api/v1/pharmacies?region=&q=&page=&per_page=``: q up to 100 characters, region a code.

    An absent or empty ``q`` (``q=``) means no filter: every pharmacy of the region, as the
    README documents. A ``q`` that folds to nothing (only spaces, punctuation or symbols,
    :func:`app.foundation.text_folding.fold`) would silently mean the same, so it is refused (422) with
    a message saying what to type.
    """

    q = Text(load_default=None, validate=validate.Length(max=MAX_QUERY_LENGTH))
    region = Text(
        load_default=None,
        validate=validate.Length(min=1, max=8),
        metadata={"enum": list(REGION_CODES)},
    )

    @validates("q")
    def _q_matches_something(self, value: str | None, **_: object) -> None:
        if value and not fold(value):
            raise ValidationError(FOLDS_TO_NOTHING)


class RegionUpdateSchema(Schema):
    """``PATCH /api/v1/me`` body: ``{"region": "A" | "B"}`` (checked against the regions table)."""

    class Meta:
        unknown = RAISE

    region = Text(
        required=True, validate=validate.Length(min=1, max=8), metadata={"enum": list(REGION_CODES)}
    )


class RegionSchema(Schema):
    """A region: ``code``, ``name``, ``flow`` ("email" | "erx") and ``delivery_method``."""

    code = fields.String(required=True)
    name = fields.String(required=True)
    flow = fields.String(required=True)
    delivery_method = fields.String(required=True)


class RegionListSchema(Schema):
    """``GET /api/v1/regions``: ``{"regions": [Region, ...]}``."""

    regions = fields.List(fields.Nested(RegionSchema), required=True)


class ProfileSchema(Schema):
    """``GET/PATCH /api/v1/me``: ``{"subject", "region": Region}``."""

    subject = fields.String(required=True)
    region = fields.Nested(RegionSchema, required=True)


class _PageSchema(Schema):
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)
    total = fields.Integer(required=True)


class PharmacyHitSchema(Schema):
    """One pharmacy: ``id`` (send with this), ``name``, ``address`` (one line), ``group``, ``region``, ``branch_id``."""

    id = fields.Integer(required=True)
    name = fields.String(required=True)
    address = fields.String(required=True)
    group = fields.String(allow_none=True)
    region = fields.String(required=True)
    branch_id = fields.Integer(allow_none=True)


class PharmacyPageSchema(_PageSchema):
    """``GET /api/v1/pharmacies``: ``{"items": [PharmacyHit], "page", "per_page", "total"}``."""

    items = fields.List(fields.Nested(PharmacyHitSchema), required=True)


class PrescriptionSummarySchema(Schema):
    """One of the patient's prescriptions: ids, status, times (ISO 8601 UTC) and its status URL."""

    id = fields.Integer(required=True)
    reference = fields.String(required=True)
    status = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(allow_none=True)
    pharmacy_id = fields.Integer(allow_none=True)
    pharmacy_name = fields.String(allow_none=True)
    status_url = fields.String(required=True)
    # The rest of the prescription's view (GET /api/v1/prescriptions/<id>):
    # the page needs one call.
    region = fields.String()
    prescriber = fields.Nested(PrescriberSummarySchema)
    pharmacy = fields.Nested(PharmacySummarySchema, allow_none=True)
    medicines = fields.List(fields.Nested(MedicineLineSchema))
    rejection = fields.Nested(RejectionSchema, allow_none=True)
    dispatch = fields.Nested(DispatchSchema, allow_none=True)
    history = fields.List(fields.Nested(HistoryEntrySchema))


class PrescriptionPageSchema(_PageSchema):
    """``GET /api/v1/me/prescriptions``: ``{"items": [PrescriptionSummary], "page", "per_page", "total"}``."""

    items = fields.List(fields.Nested(PrescriptionSummarySchema), required=True)


# The summary's top-level keys (none is renamed by a data_key), and those dumped as DateTime.
_SUMMARY_KEYS = tuple(PrescriptionSummarySchema().fields)
_SUMMARY_TIMES = ("created_at", "updated_at")


def prescription_page_body(page: Page[dict[str, Any]]) -> dict[str, Any]:
    """The JSON body of ``GET /api/v1/me/prescriptions`` for ``page`` (items as
    :func:`app.services.patients.patient_prescription_page` builds them).

    Exactly what ``PrescriptionPageSchema().dump(page)`` gives (the schema stays the
    documented contract, and tests/unit/test_prescription_view_contract.py holds the two
    equal on real pages of every shape), built directly: marshmallow's per-field walk of
    50 nested timelines cost more CPU than reading them. ``created_at``/``updated_at``
    are written as ``fields.DateTime`` writes them (``datetime.isoformat()``).
    """
    items = []
    for item in page.items:
        body = {key: item[key] for key in _SUMMARY_KEYS if key in item}
        for key in _SUMMARY_TIMES:
            if body.get(key) is not None:
                body[key] = body[key].isoformat()
        items.append(body)
    return {"items": items, "page": page.page, "per_page": page.per_page, "total": page.total}

"""Marshmallow schemas of the prescription endpoints (``app/api.py``): requests and responses.

Request schemas refuse unknown fields, not silently drop them. Response
schemas dump the services' results (``app/services/prescriptions.py``,
``app/services/void.py``); a key absent from the result (``platform_token``
for a patient) is absent from the response.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from app.services.void import MAX_REASON_LENGTH

MAX_ID = 2**63 - 1  # the largest BIGINT primary key


class SendRequestSchema(Schema):
    """``POST /api/v1/prescriptions/<id>/send`` body: ``{"pharmacy_id": <int >= 1>}``."""

    class Meta:
        unknown = RAISE

    pharmacy_id = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=MAX_ID))


class SendResponseSchema(Schema):
    """``202`` answer of a send: ``{"id", "reference", "status": "queued", "status_url"}``."""

    id = fields.Integer(required=True)
    reference = fields.String(required=True)
    status = fields.String(required=True)
    status_url = fields.String(required=True)


class VoidRequestSchema(Schema):
    """``POST /api/v1/prescriptions/<id>/void`` body: ``{"reason": "<1..500 characters>"}``.

    Surrounding whitespace is trimmed; a reason of only whitespace is refused.
    """

    class Meta:
        unknown = RAISE

    # A list, not validate.And: the same checks, and apispec can see the Length for the
    # OpenAPI document. The pattern documents "not only spaces" as str.strip sees them:
    # a regex \s (ECMA, as OpenAPI validators read it) misses \x1c-\x1f and \x85.
    reason = fields.String(
        required=True,
        validate=[
            validate.Length(min=1, max=MAX_REASON_LENGTH),
            validate.Predicate("strip", error="Give a reason (not only spaces)."),
        ],
        metadata={"pattern": r"[^\s\x1c-\x1f\x85]"},
    )


class PharmacySummarySchema(Schema):
    """The chosen pharmacy: ``{"id", "name", "address"}`` (address on one line)."""

    id = fields.Integer(required=True)
    name = fields.String(required=True)
    address = fields.String(required=True)


class MedicineLineSchema(Schema):
    """One prescribed medicine: dm+d ``vpid`` (may be null), description, quantity, directions."""

    vpid = fields.String(allow_none=True)
    description = fields.String(required=True)
    quantity = fields.Integer(required=True)
    directions = fields.String(required=True)


class RejectionSchema(Schema):
    """Why the platform refused the prescription: its message and field errors (contract §4)."""

    message = fields.String(allow_none=True)
    errors = fields.Dict(keys=fields.String())


class DispatchSchema(Schema):
    """The outbox row's state: ``pending|done|dead``, attempts, next attempt (UTC ISO 8601), last error."""

    state = fields.String(required=True)
    attempts = fields.Integer(required=True)
    next_attempt_at = fields.String(allow_none=True)
    last_error = fields.String(allow_none=True)


class HistoryEntrySchema(Schema):
    """One transition of the timeline; times are UTC ISO 8601 with ``Z``."""

    from_status = fields.String(data_key="from", attribute="from", allow_none=True)
    to = fields.String(required=True)
    occurred_at = fields.String(required=True)
    received_at = fields.String(allow_none=True)
    source = fields.String(required=True)
    event_id = fields.String(allow_none=True)
    reason = fields.String(
        allow_none=True,
        metadata={"description": "The stored reason of a void (support's text), else null."},
    )
    actor = fields.String(
        allow_none=True,
        metadata={
            "description": (
                'Who did an operator step such as a void ("support:<subject>"), else null.'
            )
        },
    )


class PrescriberSummarySchema(Schema):
    """The prescriber: ``{"id", "name"}``."""

    id = fields.Integer(required=True)
    name = fields.String(required=True)


class PatientSummarySchema(Schema):
    """The patient, for support and service callers only: ``{"ref", "name"}`` (PHI: audited)."""

    ref = fields.String(required=True)
    name = fields.String(required=True)


class PrescriptionViewSchema(Schema):
    """``GET /api/v1/prescriptions/<id>`` (and the void's 200): status, pharmacy, medicines, timeline.

    ``platform_token`` is present only for support and service callers.
    """

    id = fields.Integer(required=True)
    reference = fields.String(required=True)
    status = fields.String(required=True)
    region = fields.String(required=True)
    pharmacy_id = fields.Integer(allow_none=True)
    pharmacy = fields.Nested(PharmacySummarySchema, allow_none=True)
    medicines = fields.List(fields.Nested(MedicineLineSchema))
    rejection = fields.Nested(RejectionSchema, allow_none=True)
    dispatch = fields.Nested(DispatchSchema, allow_none=True)
    history = fields.List(fields.Nested(HistoryEntrySchema))
    platform_token = fields.String(allow_none=True)
    created_at = fields.String(
        metadata={"description": "When it was written, ISO 8601 UTC with Z."}
    )
    prescriber = fields.Nested(PrescriberSummarySchema)
    patient = fields.Nested(
        PatientSummarySchema,
        metadata={"description": "Support and service callers only; absent for a patient."},
    )

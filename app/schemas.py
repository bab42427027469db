"""Request schemas (marshmallow). Unknown fields are refused, not silently dropped."""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

MAX_ID = 2**63 - 1  # the largest BIGINT primary key


class SendRequestSchema(Schema):
    """``POST /api/v1/prescriptions/<id>/send`` body: ``{"pharmacy_id": <int >= 1>}``."""

    class Meta:
        unknown = RAISE

    pharmacy_id = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=MAX_ID))

"""§7 signing and identifier formats."""

from __future__ import annotations

import random
import re

from sandbox.identifiers import new_event_id, new_prescription_id
from sandbox.webhooks import (
    build_status_event,
    compute_signature,
    serialize_event,
    signature_header,
)

VECTOR_SECRET = "whsec_sandbox_test_secret"
VECTOR_T = 1763634902
VECTOR_BODY = (
    b'{"id":"evt_01JD0Q7W4R9N6M8K2H3F5T7V9X","type":"prescription.status_updated",'
    b'"created":"2026-11-20T10:15:09Z","data":{"prescription":{"id":"SRXC49F3D4F66A7",'
    b'"client_ref_id":"rx-000042","status":"signed","previous_status":"issued",'
    b'"occurred_at":"2026-11-20T10:15:08Z"}}}'
)
VECTOR_V1 = "2d5b88c8910d4650ff5c62db1d3596e0d968e05ef6303f7edf4199207afe6fa4"


def test_contract_test_vector() -> None:
    assert compute_signature(VECTOR_SECRET, VECTOR_T, VECTOR_BODY) == VECTOR_V1
    assert (
        signature_header([VECTOR_SECRET], VECTOR_T, VECTOR_BODY) == f"t={VECTOR_T},v1={VECTOR_V1}"
    )


def test_event_serialisation_reproduces_the_vector_body() -> None:
    event = build_status_event(
        event_id="evt_01JD0Q7W4R9N6M8K2H3F5T7V9X",
        created="2026-11-20T10:15:09Z",
        prescription_id="SRXC49F3D4F66A7",
        client_ref_id="rx-000042",
        status="signed",
        previous_status="issued",
        occurred_at="2026-11-20T10:15:08Z",
    )
    assert serialize_event(event) == VECTOR_BODY


def test_rotation_header_has_one_v1_per_secret_newest_first() -> None:
    header = signature_header(["whsec_new", VECTOR_SECRET], VECTOR_T, VECTOR_BODY)
    parts = header.split(",")
    assert parts[0] == f"t={VECTOR_T}"
    assert parts[1] == "v1=" + compute_signature("whsec_new", VECTOR_T, VECTOR_BODY)
    assert parts[2] == f"v1={VECTOR_V1}"


def test_identifier_formats_and_uniqueness() -> None:
    rng = random.Random(1)
    event_ids = {new_event_id(rng, 1763634902.5) for _ in range(2000)}
    assert len(event_ids) == 2000
    assert all(re.fullmatch(r"evt_[0-9A-HJKMNP-TV-Z]{26}", e) for e in event_ids)
    rx_ids = {new_prescription_id(rng) for _ in range(2000)}
    assert len(rx_ids) == 2000
    assert all(re.fullmatch(r"SRX[0-9A-F]{12}", r) for r in rx_ids)

"""The OpenAPI document (issue 8 point 4): served, committed, complete, and consistent.

The committed ``docs/openapi.json`` is what client developers read; it must be
the document the running app serves, and every route under ``/api/v1`` and
``/webhooks`` must appear in it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from app.directory_schemas import REGION_CODES
from app.models import Pharmacy, Prescription
from app.openapi import DOCUMENT_PATH, REGENERATE_COMMAND
from app.services.void import MAX_REASON_LENGTH
from tests.conftest import bearer
from webhooks.routes import SIGNATURE_HEADER

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "docs" / "openapi.json"
DOCUMENTED_PREFIXES = ("/api/v1", "/webhooks", "/fhir/R4")
# The FHIR blueprint's catch-all answers unknown paths and writes with an OperationOutcome: no operation.
UNDOCUMENTED_RULES = ("/fhir/R4/", "/fhir/R4/<path:rest>")


def _flask_to_openapi(rule: str) -> str:
    # Flask's "<int:prescription_id>" is OpenAPI's "{prescription_id}".
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_served_without_a_token_as_json(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get(DOCUMENT_PATH)

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }


def test_committed_document_is_the_served_one(client) -> None:  # type: ignore[no-untyped-def]
    served = client.get(DOCUMENT_PATH).get_data(as_text=True)

    assert COMMITTED.exists(), f"docs/openapi.json is missing; generate it: {REGENERATE_COMMAND}"
    assert COMMITTED.read_text(encoding="utf-8") == served, (
        f"docs/openapi.json differs from the served document; regenerate it: {REGENERATE_COMMAND}"
    )


def test_every_api_and_webhook_route_is_documented(app) -> None:  # type: ignore[no-untyped-def]
    paths = json.loads(COMMITTED.read_text(encoding="utf-8"))["paths"]
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(DOCUMENTED_PREFIXES) or rule.rule in UNDOCUMENTED_RULES:
            continue
        path = _flask_to_openapi(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if method.lower() not in paths.get(path, {}):
                missing.append(f"{method} {path}")
    assert not missing, f"routes missing from the OpenAPI document (describe them in app/openapi.py): {missing}"


def test_every_documented_operation_is_a_route(app) -> None:  # type: ignore[no-untyped-def]
    routes = {
        (method.lower(), _flask_to_openapi(rule.rule))
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set())
    }
    paths = json.loads(COMMITTED.read_text(encoding="utf-8"))["paths"]
    documented = {(method, path) for path, operations in paths.items() for method in operations}

    assert documented - routes == set()


def test_token_endpoints_declare_bearer_auth_401_and_error_shape() -> None:
    paths = json.loads(COMMITTED.read_text(encoding="utf-8"))["paths"]
    for path, operations in paths.items():
        if not path.startswith("/api/v1") or path == DOCUMENT_PATH:
            continue
        for method, operation in operations.items():
            assert operation["security"] == [{"bearerAuth": []}], (method, path)
            assert "401" in operation["responses"], (method, path)
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_webhook_documents_its_signature_header_and_answers() -> None:
    operation = json.loads(COMMITTED.read_text(encoding="utf-8"))["paths"]["/webhooks/platform"]["post"]

    assert operation["security"] == []
    header = next(p for p in operation["parameters"] if p["in"] == "header")
    assert header["name"] == SIGNATURE_HEADER and header["required"] is True
    assert sorted(operation["responses"]) == ["200", "400", "401", "413", "503"]
    assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SignatureError"
    }


# -- regressions found by schemathesis (tests/integration/test_openapi_fuzz.py) ------------


def _components() -> dict:  # type: ignore[type-arg]
    return json.loads(COMMITTED.read_text(encoding="utf-8"))["components"]["schemas"]


def test_documented_region_codes_are_the_regions_table(client, seeded) -> None:  # type: ignore[no-untyped-def]
    # Schemathesis sent PATCH /me {"region": "outcome"}, valid by the document, refused with 422.
    codes = sorted(r["code"] for r in client.get("/api/v1/regions", headers=bearer(client.application, role="service")).get_json()["regions"])

    assert sorted(REGION_CODES) == codes
    assert _components()["RegionUpdate"]["properties"]["region"]["enum"] == codes
    search = json.loads(COMMITTED.read_text(encoding="utf-8"))["paths"]["/api/v1/pharmacies"]["get"]
    region = next(p for p in search["parameters"] if p["name"] == "region")
    assert region["schema"]["enum"] == codes


@pytest.mark.parametrize("reason", ["", "   "], ids=["empty", "blank"])
def test_void_reason_the_document_allows_is_one_the_service_accepts(client, seeded, reason: str) -> None:  # type: ignore[no-untyped-def]
    # Schemathesis sent {"reason": ""}: the document (validate.And hid the Length) allowed it.
    prop = _components()["VoidRequest"]["properties"]["reason"]
    documented_ok = prop["minLength"] <= len(reason) <= prop["maxLength"] and re.search(prop["pattern"], reason)
    support = bearer(client.application, role="support", subject="support-7")

    resp = client.post("/api/v1/prescriptions/1/void", json={"reason": reason}, headers=support)

    assert not documented_ok
    assert prop["maxLength"] == MAX_REASON_LENGTH
    assert resp.status_code == 422


def test_any_idempotency_key_the_document_allows_is_accepted(client, seeded) -> None:  # type: ignore[no-untyped-def]
    # Schemathesis sent a key the document allowed (any string of 1..200) and got 400.
    # ISO-8859-1 printable characters (e.g. "é") are accepted too; only controls are refused.
    send = json.loads(COMMITTED.read_text(encoding="utf-8"))["paths"]["/api/v1/prescriptions/{prescription_id}/send"]
    schema = next(p for p in send["post"]["parameters"] if p["name"] == "Idempotency-Key")["schema"]
    key = " k" + "~ \u00e9" * 66  # 200 printable characters, spaces included
    with seeded.session() as session:
        pid = session.scalar(select(Prescription.id).where(Prescription.reference == "rx-000017"))  # Region A
        pharmacy = session.scalar(select(Pharmacy.id).where(Pharmacy.email == "ards@pharmacy-a.example.test"))
    headers = {**bearer(client.application, role="service", subject="svc-tests"), "Idempotency-Key": key}

    resp = client.post(f"/api/v1/prescriptions/{pid}/send", json={"pharmacy_id": pharmacy}, headers=headers)

    assert len(key) == schema["maxLength"] and re.fullmatch(schema["pattern"], key)
    for refused in ("   ", "k\x7f", "k\x00", "k\u00ad", ""):
        assert not re.fullmatch(schema["pattern"], refused), refused
    assert resp.status_code == 202, resp.get_data(as_text=True)


def test_idempotency_key_of_only_spaces_is_400(client, seeded) -> None:  # type: ignore[no-untyped-def]
    # Printable, so it was accepted in-process, while HTTP servers trim it to nothing.
    headers = {**bearer(client.application, role="service", subject="svc-tests"), "Idempotency-Key": "   "}

    resp = client.post("/api/v1/prescriptions/1/send", json={"pharmacy_id": 1}, headers=headers)

    assert resp.status_code == 400
    assert resp.get_json()["code"] == "invalid_idempotency_key"

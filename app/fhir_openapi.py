"""The read-only FHIR R4 endpoints (``app/fhir_api.py``) in the OpenAPI document.

:func:`fhir_paths` returns their path items for ``app/openapi.py``; bodies are
FHIR resources (``application/fhir+json``), errors OperationOutcomes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from app.fhir import MAX_OFFSET, PATIENT_SEARCH_PATTERN

# Why each error status is answered, as the FHIR blueprint answers it (app/fhir_api.py).
_WHY = {
    400: "A bad search (parameter named in the issue's expression). As an OperationOutcome.",
    401: "No valid bearer token. As an OperationOutcome.",
    404: "No such resource, or not the caller's. As an OperationOutcome.",
    503: "The database cannot be reached; retry later. As an OperationOutcome.",
}

FHIR_BASE = "/fhir/R4"
_FHIR_JSON = "application/fhir+json"


def _fhir_content(resource: str) -> dict[str, Any]:
    return {
        _FHIR_JSON: {
            "schema": {
                "type": "object",
                "description": f"A FHIR R4 {resource} (http://hl7.org/fhir/R4/{resource.lower()}.html).",
                "properties": {"resourceType": {"type": "string", "enum": [resource]}},
                "required": ["resourceType"],
            }
        }
    }


def _fhir_operation(
    operation_id: str,
    summary: str,
    resource: str,
    *,
    security_scheme: str,
    parameters: Sequence[dict[str, Any]] = (),
    errors: Sequence[int] = (401, 404, 503),
    secured: bool = True,
    description: str = "",
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": f"A {resource}.", "content": _fhir_content(resource)}
    }
    for code in errors:
        responses[str(code)] = {
            "description": _WHY[code],
            "content": _fhir_content("OperationOutcome"),
        }
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "tags": ["fhir"],
        "responses": dict(sorted(responses.items())),
        "security": [{security_scheme: []}] if secured else [],
    }
    if parameters:
        operation["parameters"] = [dict(p) for p in parameters]
    return operation


def _fhir_path_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def fhir_paths(*, security_scheme: str) -> dict[str, dict[str, Any]]:
    """The read-only FHIR R4 endpoints (``app/fhir_api.py``) as OpenAPI paths.

    Bodies are FHIR resources in ``application/fhir+json``, described by their
    ``resourceType`` with a link to the R4 definition (the models of
    ``fhir.resources`` validate them in the tests); errors are OperationOutcomes.
    Roles as the API: a patient sees only their own prescriptions and Patient;
    support and service see everything, including the platform token.
    ``security_scheme``: the name of the bearer-JWT scheme in the document.
    """
    op = functools.partial(_fhir_operation, security_scheme=security_scheme)
    roles = "Roles: `patient` (own records only), `support`, `service`."
    medication_request_id = _fhir_path_parameter(
        "resource_id",
        "`<prescription id>-<line>`, e.g. `12-1`. A bare prescription id or our reference answers 404 "
        "with the MedicationRequest ids that exist.",
    )
    count_parameter = {
        "name": "_count",
        "in": "query",
        "required": False,
        "description": "Page size (at most 100; larger values are lowered).",
        "schema": {"type": "integer", "minimum": 0, "default": 50},
    }
    offset_parameter = {
        "name": "_offset",
        "in": "query",
        "required": False,
        "description": "Matches to skip.",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
    }
    patient_parameter = {
        "name": "patient",
        "in": "query",
        "required": True,
        "description": "`Patient/<ref>`, `<ref>` or an absolute URL ending in `Patient/<ref>`.",
        "schema": {"type": "string", "pattern": PATIENT_SEARCH_PATTERN},
    }
    return {
        f"{FHIR_BASE}/metadata": {
            "get": op(
                "fhirCapabilities",
                "The CapabilityStatement: what this FHIR server supports.",
                "CapabilityStatement",
                errors=(),
                secured=False,
            )
        },
        f"{FHIR_BASE}/MedicationRequest": {
            "get": op(
                "fhirSearchMedicationRequests",
                "Search a patient's MedicationRequests (one per prescription line).",
                "Bundle",
                parameters=(patient_parameter, count_parameter, offset_parameter),
                errors=(400, 401, 503),
                description=f"{roles} Another patient's search is empty.",
            )
        },
        f"{FHIR_BASE}/MedicationRequest/{{resource_id}}": {
            "get": op(
                "fhirReadMedicationRequest",
                "Read one MedicationRequest (`ETag`: its version).",
                "MedicationRequest",
                parameters=(medication_request_id,),
                description=roles,
            )
        },
        f"{FHIR_BASE}/MedicationRequest/{{resource_id}}/_history": {
            "get": op(
                "fhirMedicationRequestHistory",
                "A MedicationRequest's versions, one per status change, newest first.",
                "Bundle",
                parameters=(medication_request_id,),
                description=roles,
            )
        },
        f"{FHIR_BASE}/Patient/{{ref}}": {
            "get": op(
                "fhirReadPatient",
                "A MedicationRequest's subject: identity only (no name, birth date or address).",
                "Patient",
                parameters=(_fhir_path_parameter("ref", "The patient reference, e.g. `pt-0001`."),),
                description=f"{roles} A patient reads only their own.",
            )
        },
        f"{FHIR_BASE}/Practitioner/{{practitioner_id}}": {
            "get": op(
                "fhirReadPractitioner",
                "A MedicationRequest's requester: the prescriber's id and name.",
                "Practitioner",
                parameters=(_fhir_path_parameter("practitioner_id", "The prescriber's id."),),
                description=roles,
            )
        },
        f"{FHIR_BASE}/Organization/{{organization_id}}": {
            "get": op(
                "fhirReadOrganization",
                "A MedicationRequest's dispensing pharmacy: name, address, branch id.",
                "Organization",
                parameters=(_fhir_path_parameter("organization_id", "The pharmacy's id."),),
                description=roles,
            )
        },
    }

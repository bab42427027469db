"""The read-only FHIR R4 endpoints (``/fhir/R4``), speaking ``application/fhir+json``.

    GET /fhir/R4/metadata                          the CapabilityStatement (no token needed)
    GET /fhir/R4/MedicationRequest/<id>            read (id: "<prescription id>-<line>")
    GET /fhir/R4/MedicationRequest?patient=<ref>   search: a searchset Bundle (_count, _offset)
    GET /fhir/R4/MedicationRequest/<id>/_history   history: a history Bundle from the status history
    GET /fhir/R4/Patient/<ref>                     the subject (identity only; a patient: own only)
    GET /fhir/R4/Practitioner/<id>                 the requester (a prescriber)
    GET /fhir/R4/Organization/<id>                 the dispensing pharmacy

Same roles and the same platform-token rule as the API: a patient sees only
their own prescriptions (another patient's reads as 404), support and service
see all, and only support and service see the platform token (an
``identifier``). A bare prescription id or our reference in place of a
MedicationRequest id answers 404 with the ids that exist. Each read is one
query plus its audit row (no lock, no lazy load). Every error, including the
401/403 of the bearer check and
unknown paths under ``/fhir/R4``, is an ``OperationOutcome`` with the matching
HTTP status (http://hl7.org/fhir/R4/http.html#Status-Codes). Translation lives
in ``app/interfaces/fhir.py``; this module only parses the request and picks the caller's view.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from app.foundation.connection_names import url_location
from app.foundation.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, Unavailable
from app.interfaces import fhir
from app.interfaces.access_audit import AUDIT_APPEND_IS_ONE_STATEMENT, append_read_audit
from app.interfaces.errors import ApiError
from app.interfaces.identity import current_identity, require_roles
from app.mechanisms.runtime import runtime

# The CapabilityStatement's software version: the API's major version.
API_VERSION = "1"

log = logging.getLogger("app.interfaces.fhir_api")

bp = Blueprint("fhir", __name__, url_prefix="/fhir/R4")

_DOMAIN_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Invalid: 400,  # FHIR answers a bad search with 400 (http.html#search)
    Forbidden: 403,
    Conflict: 409,
    Unavailable: 503,
}


def _fhir_response(
    resource: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    response = Response(resource.json(), status=status, mimetype=fhir.FHIR_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _outcome(
    status: int, code: str, message: str, errors: dict[str, Any] | None = None
) -> Response:
    outcome = fhir.operation_outcome(status, code, message, errors)
    return _fhir_response(outcome.resource, outcome.status)


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    response = _outcome(exc.status, exc.code, exc.message, exc.errors)
    for name, value in (getattr(exc, "headers", None) or {}).items():
        response.headers[name] = value
    if exc.status == 401 and "WWW-Authenticate" not in response.headers:
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


@bp.errorhandler(DomainError)
def _domain_error(exc: DomainError) -> Response:
    status = next((s for kind, s in _DOMAIN_STATUS.items() if isinstance(exc, kind)), 400)
    return _outcome(status, exc.code, exc.message, exc.errors)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    name = "".join(ch if ch.isalnum() else "_" for ch in (exc.name or "error").lower()).strip("_")
    return _outcome(status, name, exc.description or exc.name or "Error")


@bp.errorhandler(OperationalError)
def _db_down(exc: OperationalError) -> Response:
    log.error(
        "database unavailable: %s at %s",
        type(exc.orig).__name__ if exc.orig else "unknown",
        url_location(runtime().settings.database_url),
    )
    response = _outcome(
        503, "database_unavailable", "The service cannot reach its database; retry later."
    )
    response.headers["Retry-After"] = "5"
    return response


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    # Only the type and the frames: an exception's text can carry SQL parameters (PHI).
    log.error(
        "unhandled error %s\n%s",
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    return _outcome(500, "internal_error", "An unexpected error occurred.")


def _view() -> tuple[str | None, bool]:
    """The caller's view: the only patient they may see (None: all) and whether the platform token
    shows (support and service, as in the API)."""
    identity = current_identity()
    return (identity.subject if identity.role == "patient" else None), identity.role in (
        "support",
        "service",
    )


def _audited_read(action: str, build: Any, ids_of: Any) -> Any:
    """Return ``build(session)``, with one ``action`` audit row naming the prescription ids of
    ``ids_of(result)``, in the read's own session (one query plus the audit append)."""
    with runtime().db.read_session(autocommit=AUDIT_APPEND_IS_ONE_STATEMENT) as session:
        result = build(session)
        append_read_audit(session, action, ids_of(result))
    return result


def _listed_prescriptions(bundle: Any) -> list[int]:
    """The distinct prescription ids behind a Bundle's MedicationRequest entries, in order."""
    ids: dict[int, None] = {}
    for entry in bundle.entry or ():
        resource_id = getattr(entry.resource, "id", None)
        if getattr(entry.resource, "resource_type", None) == "MedicationRequest" and resource_id:
            ids[fhir.parse_resource_id(resource_id)[0]] = None
    return list(ids)


def _base_url() -> str:
    return request.url_root.rstrip("/") + bp.url_prefix


@bp.get("/MedicationRequest/<resource_id>")
@require_roles("patient", "support", "service")
def read(resource_id: str) -> Response:
    """Return one MedicationRequest (``ETag`` and ``meta.versionId``: its history length)."""
    patient_ref, show_token = _view()
    resource = _audited_read(
        "fhir-read",
        lambda session: fhir.read_medication_request(
            session, resource_id, patient_ref=patient_ref, show_platform_token=show_token
        ),
        lambda found: [fhir.parse_resource_id(found.id)[0]],
    )
    headers = (
        {"ETag": f'W/"{resource.meta.versionId}"'}
        if resource.meta and resource.meta.versionId
        else {}
    )
    return _fhir_response(resource, headers=headers)


@bp.get("/MedicationRequest")
@require_roles("patient", "support", "service")
def search() -> Response:
    """Return a searchset Bundle for ``?patient=<ref>`` (required).

    Paged by ``_count`` (at most 100) and ``_offset``.
    """
    patient_ref, show_token = _view()
    patient = fhir.patient_ref_from_search(request.args.get("patient"))
    count = fhir.parse_count(request.args.get("_count"))
    offset = fhir.parse_count(
        request.args.get("_offset"), name="_offset", default=0, maximum=fhir.MAX_OFFSET, clamp=False
    )
    base = _base_url()
    next_query = urlencode({"patient": patient, "_count": count, "_offset": offset + count})
    bundle = _audited_read(
        "fhir-search",
        lambda session: fhir.search_medication_requests(
            session,
            patient=patient,
            base_url=base,
            self_url=request.url,
            next_url=f"{base}/MedicationRequest?{next_query}",
            count=count,
            offset=offset,
            patient_ref=patient_ref,
            show_platform_token=show_token,
        ),
        _listed_prescriptions,
    )
    return _fhir_response(bundle)


@bp.get("/MedicationRequest/<resource_id>/_history")
@require_roles("patient", "support", "service")
def history(resource_id: str) -> Response:
    """Return the history Bundle of one MedicationRequest, newest version first."""
    patient_ref, show_token = _view()
    history_of: list[int] = []

    def build(session: Any) -> Any:
        bundle, prescription_id = fhir.medication_request_history(
            session,
            resource_id,
            base_url=_base_url(),
            self_url=request.url,
            patient_ref=patient_ref,
            show_platform_token=show_token,
        )
        history_of.append(prescription_id)
        return bundle

    bundle = _audited_read("fhir-history", build, lambda _: history_of)
    return _fhir_response(bundle)


@bp.get("/metadata")
def metadata() -> Response:
    """The ``CapabilityStatement``: what this server supports (no token: clients call it first)."""
    return _fhir_response(
        fhir.capability_statement(base_url=_base_url(), software_version=API_VERSION)
    )


@bp.get("/Patient/<ref>")
@require_roles("patient", "support", "service")
def patient(ref: str) -> Response:
    """Return ``Patient/<ref>`` (identity only); a patient reads only their own (else 404)."""
    patient_ref, _ = _view()
    with runtime().db.read_session() as session:
        resource = fhir.read_patient(session, ref, patient_ref=patient_ref)
    return _fhir_response(resource)


@bp.get("/Practitioner/<practitioner_id>")
@require_roles("patient", "support", "service")
def practitioner(practitioner_id: str) -> Response:
    """Return ``Practitioner/<id>``: a prescriber's id and name."""
    with runtime().db.read_session() as session:
        resource = fhir.read_practitioner(session, practitioner_id)
    return _fhir_response(resource)


@bp.get("/Organization/<organization_id>")
@require_roles("patient", "support", "service")
def organization(organization_id: str) -> Response:
    """Return ``Organization/<id>``: a pharmacy's name, address and platform branch id."""
    with runtime().db.read_session() as session:
        resource = fhir.read_organization(session, organization_id)
    return _fhir_response(resource)


@bp.route("/", defaults={"rest": ""}, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
@bp.route("/<path:rest>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
def unsupported(rest: str) -> Response:
    """Anything else under ``/fhir/R4``: 405 for writes (read-only), 404 otherwise, as OperationOutcome."""
    if request.method not in ("GET", "HEAD"):
        return _outcome(405, "method_not_allowed", "This FHIR endpoint is read-only.")
    return _outcome(404, "not_found", "No such FHIR resource or interaction here.")


def init_app(app: Flask) -> None:
    """Register the FHIR blueprint on ``app``."""
    app.register_blueprint(bp)

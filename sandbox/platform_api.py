"""The session-protected platform API (contract §1c, §3, §4, §5).

Every route needs ``Authorization: Bearer <access token>`` (else HTTP 401
``access_token_expired``) and ``X-Session-Token`` (else HTTP 200
``session_expired``). Gateway faults (429/503/500) are answered before
authentication; ``POST /prescriptions`` also gets timeout_before_commit and
commit_then_drop (see ``sandbox.faults``).
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, g, request

from sandbox import directory, faults
from sandbox.directory import Prescriber
from sandbox.responses import (
    access_token_expired,
    bearer_token,
    fail,
    json_body,
    ok,
    session_expired,
)
from sandbox.state import get_state
from sandbox.store import InvalidTransition, MedicineLine, UnknownPrescription
from sandbox.validation import parse_int_id, validate_issue

log = logging.getLogger(__name__)

blueprint = Blueprint("platform", __name__)

ISSUE_ENDPOINT = "platform.issue_prescription"
UNAUTHORIZED_CLINIC = "You trying to issue prescription to unauthorized clinic."
CONTROLLED_DRUG = "Schedule 2 and 3 controlled drugs cannot be issued electronically."


@blueprint.before_request
def _gateway() -> Response | None:
    state = get_state()
    if request.endpoint == ISSUE_ENDPOINT and request.method == "POST":
        state.stats.count_issue_attempt()
    fault = state.faults.gateway_fault()
    if fault is None:
        return None
    log.info("injected %s on %s", fault, request.endpoint)
    return faults.gateway_fault_response(fault, state.controls.current())


def requires_session(view: Callable[..., Response]) -> Callable[..., Response]:
    """Check both tokens (§1c); the view finds the prescriber in ``g.prescriber``."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        state = get_state()
        now = state.clock()
        if not state.store.access_token_valid(bearer_token(), now=now):
            return access_token_expired()
        prescriber_id = state.store.session_prescriber_id(
            request.headers.get("X-Session-Token"), now=now
        )
        prescriber = directory.prescriber_by_id(prescriber_id) if prescriber_id else None
        if prescriber is None:
            return session_expired()
        if state.faults.roll(faults.SESSION_EXPIRED):
            return session_expired()
        g.prescriber = prescriber
        return view(*args, **kwargs)

    return wrapper


@blueprint.get("/clinics")
@requires_session
def list_clinics() -> Response:
    """§3: the prescriber's clinics, ``{"clinics": [{"id", "display_id", "name"}]}``."""
    prescriber: Prescriber = g.prescriber
    return ok({"clinics": [c.to_json() for c in directory.clinics_for(prescriber)]})


@blueprint.get("/contacts")
@requires_session
def list_contacts() -> Response:
    """§3: pharmacy contacts matching ``q`` (``type`` must be ``pharmacy`` or absent)."""
    contact_type = request.args.get("type", "pharmacy")
    if contact_type != "pharmacy":
        return ok({"contacts": []})
    found = directory.search_pharmacies(request.args.get("q"))
    return ok({"contacts": [p.to_json() for p in found]})


@blueprint.get("/medicines")
@requires_session
def list_medicines() -> Response:
    """§3: dm+d medicines whose description contains ``search`` (or VPID starts with it)."""
    found = directory.search_medicines(request.args.get("search"))
    return ok({"medicines": [m.to_json() for m in found]})


@blueprint.post("/prescriptions")
@requires_session
def issue_prescription() -> Response:
    """§4: issue to a pharmacy contact. Every accepted call creates a NEW prescription.

    Checks, in order: field validation, clinic (internal id among the
    prescriber's), contact (branch id), controlled drugs (schedule 2/3),
    secure PIN. Success: ``{"success": true, "message": "Prescription issued",
    "data": {"prescription": {"id", "status", "client_ref_id", "created_at"}}}``.
    """
    state = get_state()
    controls = state.controls.current()
    prescriber: Prescriber = g.prescriber

    if state.faults.roll(faults.TIMEOUT_BEFORE_COMMIT):
        log.info("injected timeout_before_commit (nothing created)")
        state.sleep(controls.fault_sleep_s)
        return faults.gateway_timeout_response()
    if controls.issue_delay_s:
        state.sleep(controls.issue_delay_s)

    payload = json_body()
    errors = validate_issue(payload)
    if errors:
        return fail("The given data was invalid.", errors=errors)
    clinic_id = parse_int_id(payload["clinic_id"])
    if clinic_id not in prescriber.clinic_ids:
        return fail(UNAUTHORIZED_CLINIC)
    contact_id = parse_int_id(payload["contact_id"])
    if contact_id is None or directory.pharmacy_by_branch(contact_id) is None:
        return fail("Contact not found.")
    lines = [
        MedicineLine(
            vpid=item.get("vpid"),
            description=item["description"],
            qty=item["qty"],
            directions=item["directions"],
        )
        for item in payload["medicines"]
    ]
    for line in lines:
        known = directory.medicine_by_vpid(line.vpid) if line.vpid else None
        if known is not None and known.controlled_schedule in directory.BLOCKED_SCHEDULES:
            return fail(CONTROLLED_DRUG, code="controlled_drug")
    if not hmac.compare_digest(str(payload["secure_pin"]).encode(), prescriber.secure_pin.encode()):
        return fail("Invalid secure PIN.")

    patient = payload["patient"]
    client_ref_id = payload.get("client_ref_id")
    rx = state.store.create(
        client_ref_id=client_ref_id,
        prescriber_id=prescriber.id,
        clinic_id=clinic_id,
        contact_id=contact_id,
        medicines=lines,
        patient_name=f"{patient['first_name'].strip()} {patient['last_name'].strip()}",
        now=state.clock(),
    )
    state.stats.count_issued(client_ref_id)
    log.info("issued %s for prescriber %s", rx.id, prescriber.id)
    if controls.auto:
        state.autopilot.schedule(rx.id)

    if state.faults.roll(faults.COMMIT_THEN_DROP):
        log.info("injected commit_then_drop on %s", rx.id)
        if not faults.drop_connection(request.environ):
            # No socket to drop (test client): answer so late the client has given up.
            state.sleep(controls.fault_sleep_s)
            return faults.gateway_timeout_response()
        return Response(status=204)

    return ok({"prescription": rx.summary_json()}, message="Prescription issued")


@blueprint.get("/prescriptions")
@requires_session
def lookup_prescriptions() -> Response:
    """§4: every prescription issued with ``client_ref_id``, oldest first."""
    client_ref_id = request.args.get("client_ref_id")
    if not client_ref_id:
        return fail(
            "The given data was invalid.",
            errors={"client_ref_id": ["The client ref id field is required."]},
        )
    found = get_state().store.find_by_client_ref(client_ref_id)
    return ok({"prescriptions": [rx.to_json() for rx in found]})


@blueprint.get("/prescriptions/<prescription_id>")
@requires_session
def read_prescription(prescription_id: str) -> Response:
    """§5: one prescription with its history; unknown token → 200 ``not_found``."""
    rx = get_state().store.get(prescription_id)
    if rx is None:
        return fail("Prescription not found.", code="not_found")
    return ok({"prescription": rx.to_json()})


@blueprint.post("/prescriptions/<prescription_id>/void")
@requires_session
def void_prescription(prescription_id: str) -> Response:
    """§5: cancel; once dispensed, expired or voided → 200 ``invalid_transition``.

    The optional ``reason`` is accepted and not kept (it may carry patient details).
    """
    state = get_state()
    delay_s = state.controls.current().void_delay_s
    if delay_s:
        state.sleep(delay_s)
    try:
        change = state.store.transition(prescription_id, "voided", now=state.clock())
    except UnknownPrescription:
        return fail("Prescription not found.", code="not_found")
    except InvalidTransition as exc:
        return fail(
            f"Prescription is {exc.current} and cannot be voided.", code="invalid_transition"
        )
    return ok({"prescription": change.prescription.to_json()}, message="Prescription voided")

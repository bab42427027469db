"""The pharmacy side of the platform (contract §6): the secure-link page and dispensing.

No authentication (the token in the link is the secret) and no fault injection.
The page shows the token, status, clinic, pharmacy, patient name and medicines;
never the patient's date of birth, phone or address.
"""

from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template_string, request, url_for

from sandbox import directory, lifecycle
from sandbox.clock import iso_utc
from sandbox.responses import fail, ok
from sandbox.state import get_state
from sandbox.store import InvalidTransition, UnknownPrescription

blueprint = Blueprint("pharmacy", __name__, url_prefix="/pharmacy")

_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Prescription {{ rx.id }}</title></head>
<body>
<h1>Prescription {{ rx.id }}</h1>
<p>Status: <strong id="status">{{ rx.status }}</strong></p>
<p>Issued: {{ created_at }}</p>
<p>Clinic: {{ clinic_name }}</p>
<p>Pharmacy: {{ pharmacy_name }}</p>
<p>Patient: {{ rx.patient_name }}</p>
<table>
<thead><tr><th>VPID</th><th>Medicine</th><th>Qty</th><th>Directions</th></tr></thead>
<tbody>
{% for m in rx.medicines %}<tr><td>{{ m.vpid or "" }}</td><td>{{ m.description }}</td>
<td>{{ m.qty }}</td><td>{{ m.directions }}</td></tr>
{% endfor %}</tbody>
</table>
{% if not final %}
<form method="post" action="{{ dispense_url }}"><button type="submit">Mark dispensed</button></form>
{% endif %}
</body>
</html>
"""


@blueprint.get("/prescriptions/<token>")
def prescription_page(token: str) -> Response | tuple[str, int]:
    """The HTML page behind the pharmacy's secure link; 404 for an unknown token."""
    state = get_state()
    rx = state.store.get(token)
    if rx is None:
        return "<!doctype html><h1>Prescription not found</h1>", 404
    clinic = directory.clinic_by_id(rx.clinic_id)
    pharmacy = directory.pharmacy_by_branch(rx.contact_id)
    html = render_template_string(
        _PAGE,
        rx=rx,
        created_at=iso_utc(rx.created_at),
        clinic_name=clinic.name if clinic else "",
        pharmacy_name=pharmacy.name if pharmacy else "",
        final=lifecycle.is_final(rx.status),
        dispense_url=url_for("pharmacy.dispense", token=rx.id),
    )
    return Response(html, mimetype="text/html")


@blueprint.post("/prescriptions/<token>/dispense")
def dispense(token: str) -> Response:
    """Mark dispensed (§6). From ``issued`` the prescription is signed first (two events).

    JSON: 200 ``{"success": true, "data": {"prescription": {...}}}``; 404 unknown;
    409 ``invalid_transition`` when final. A form post (from the page) redirects back.
    """
    state = get_state()
    now = state.clock()
    rx = state.store.get(token)
    if rx is None:
        return fail("Prescription not found.", code="not_found", status=404)
    try:
        if rx.status == lifecycle.ISSUED:
            state.store.transition(token, lifecycle.SIGNED, now=now)
        change = state.store.transition(token, lifecycle.DISPENSED, now=now)
    except UnknownPrescription:
        return fail("Prescription not found.", code="not_found", status=404)
    except InvalidTransition as exc:
        return fail(
            f"Prescription is {exc.current} and cannot be dispensed.",
            code="invalid_transition",
            status=409,
        )
    if request.mimetype == "application/x-www-form-urlencoded":
        return redirect(url_for("pharmacy.prescription_page", token=token), code=303)
    return ok({"prescription": change.prescription.to_json()}, message="Prescription dispensed")

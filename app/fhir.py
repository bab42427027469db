"""FHIR R4 at the boundary (issue 11 point 4): our prescription rows as read-only FHIR resources.

The one translation layer between the domain and FHIR: everything FHIR-shaped
is built here, with ``fhir.resources`` 6.4.0, whose root package is FHIR R4
4.0.1 (http://hl7.org/fhir/R4/); every resource is validated by its model as it
is built. (Releases from 7.0 carry R5 at the root and only R4B, 4.3.0, as a
sub-package: close to R4 but not R4. 6.4.0 needs pydantic 1.x, pinned.) No Flask: ``app/fhir_api.py`` maps the domain errors raised here
(:class:`NotFound`, :class:`Invalid`) to ``OperationOutcome`` responses.

One ``MedicationRequest`` per prescription line
-----------------------------------------------
A FHIR MedicationRequest orders one medication; our prescription has one to
three lines. As in the NHS EPS FHIR model, each line is its own
MedicationRequest and the lines of one prescription share ``groupIdentifier``
(our ``reference``). The resource id is ``"<prescription id>-<line position>"``,
e.g. ``"12-1"``; every line carries the prescription's status and history.

Status and intent (FHIR R4 value sets)
--------------------------------------
``intent`` is always ``order``: a prescriber's authorised request for supply
(http://hl7.org/fhir/R4/valueset-medicationrequest-intent.html, "order": "The
request represents a request/demand and authorization for action by a
Practitioner"). ``status`` comes from http://hl7.org/fhir/R4/valueset-medicationrequest-status.html
(code system http://hl7.org/fhir/CodeSystem/medicationrequest-status); our own
status always travels too, in the ``erx-status`` extension.

=========  ================  ==================================================================
ours       FHIR R4 status    why (FHIR definition quoted; our lifecycle: platform-contract §6)
=========  ================  ==================================================================
draft      draft             "not yet actionable, e.g. a work in progress": not sent yet.
queued     draft             accepted by us for sending; no pharmacy can act on it yet.
issued     draft             created on the platform but not yet signed: "requires sign-off";
                             the pharmacy is only sent the token after signing (§6).
signed     active            "actionable, but not all actions ... have occurred": the pharmacy
                             has the secure token and may dispense.
printed    active            still actionable: printing is optional and precedes dispensing.
emailed    active            Region A: the pharmacy has the prescription and may dispense.
dispensed  completed         "All actions that are implied by the prescription have occurred".
expired    stopped           "Actions implied by the prescription are to be permanently halted,
                             before all of the administrations occurred": never collected.
voided     cancelled         "withdrawn before any administrations have occurred": the platform
                             refuses a void once dispensed (§5), so nothing was supplied.
rejected   cancelled         the platform refused it; no pharmacy ever received it, so it was
                             "withdrawn before any administrations". Not ``entered-in-error``:
                             that tells consumers the record itself is a mistake ("should not
                             have existed"), while this is a real prescriber request that may be
                             corrected and sent again (then it reads ``draft`` once more).
dead       unknown           dispatch gave up after its retries and the platform's outcome may
                             be unknown: "The authoring/source system does not know which of
                             the status values currently applies".
=========  ================  ==================================================================

What a resource carries, and what it never does
-----------------------------------------------
``subject`` is ``Patient/<external_ref>`` with no display: no name, date of
birth, address or contact ever leaves through FHIR. ``requester`` is
``Practitioner/<prescriber id>``; ``dispenseRequest.performer`` is
``Organization/<pharmacy id>`` with the pharmacy's name. ``identifier`` holds
our reference and line; the platform token (a bearer secret a pharmacy
dispenses with) is added only when ``show_platform_token`` is set, which the
API does for the support role alone. A rejection's platform message is not
exposed: it may echo patient details.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir.resources.bundle import Bundle
from fhir.resources.medicationrequest import MedicationRequest
from fhir.resources.operationoutcome import OperationOutcome
from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from app.models import Patient, Prescription, PrescriptionMedicine, StatusHistory
from app.services.errors import Invalid, NotFound
from connector.statuses import LIFECYCLE, can_advance

FHIR_JSON = "application/fhir+json"
"""Media type of every FHIR response (http://hl7.org/fhir/R4/http.html#mime-type)."""

DMD_SYSTEM = "https://dmd.nhs.uk"
"""Code system URI of the NHS Dictionary of medicines and devices (dm+d); codes are VMP ids (``vpid``)."""

# Identifier systems and extensions need URIs we own; this placeholder domain stands in until
# the organisation assigns one (changing it changes only these constants).
NAMESPACE = "https://erx-connector.example.test/fhir"
REFERENCE_SYSTEM = f"{NAMESPACE}/NamingSystem/prescription-reference"
LINE_SYSTEM = f"{NAMESPACE}/NamingSystem/prescription-line"
PLATFORM_TOKEN_SYSTEM = f"{NAMESPACE}/NamingSystem/platform-token"
STATUS_EXTENSION = f"{NAMESPACE}/StructureDefinition/erx-status"
TRANSITION_EXTENSION = f"{NAMESPACE}/StructureDefinition/status-transition"

STATUS_MAP: dict[str, str] = {
    "draft": "draft",
    "queued": "draft",
    "issued": "draft",
    "signed": "active",
    "printed": "active",
    "emailed": "active",
    "dispensed": "completed",
    "expired": "stopped",
    "voided": "cancelled",
    "rejected": "cancelled",
    "dead": "unknown",
}
"""Our status -> FHIR R4 ``MedicationRequest.status``; the module docstring justifies each row."""

_STATUS_REASONS = {
    "expired": "Not collected before the prescription expired.",
    "voided": "Voided (cancelled) on the e-prescription platform.",
    "rejected": "Rejected by the e-prescription platform.",
    "dead": "Sending failed after every retry; the outcome is unknown.",
}

MAX_COUNT = 100
DEFAULT_COUNT = 50


def fhir_status(status: str) -> str:
    """Return the FHIR R4 MedicationRequest status for our ``status`` (``unknown`` for anything unmapped)."""
    return STATUS_MAP.get(status, "unknown")


def parse_resource_id(value: str) -> tuple[int, int]:
    """Split ``"<prescription id>-<position>"`` into two ints.

    Raises :class:`NotFound` for anything else: a malformed id names no resource.
    """
    head, sep, tail = value.partition("-")
    if not (sep and head.isascii() and head.isdigit() and tail.isascii() and tail.isdigit()):
        # Not echoed: it is arbitrary text from the URL.
        raise NotFound("No such MedicationRequest.")
    # Bounded like the API's ids (app.schemas.MAX_ID): larger values only make the database raise.
    prescription_id, position = int(head), int(tail)
    if prescription_id > 2**53 or position > 2**31 - 1:
        raise NotFound("No such MedicationRequest.")
    return prescription_id, position


def resource_id(line: PrescriptionMedicine) -> str:
    """Return the FHIR id of a prescription line, ``"<prescription id>-<position>"``."""
    return f"{line.prescription_id}-{line.position}"


def _reference(kind: str, value: object, display: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"reference": f"{kind}/{value}"}
    if display:
        ref["display"] = display
    return ref


def medication_request(
    prescription: Prescription,
    line: PrescriptionMedicine,
    *,
    status: str | None = None,
    version_id: int | None = None,
    last_updated: datetime | None = None,
    show_platform_token: bool = False,
    extensions: Sequence[dict[str, Any]] = (),
) -> MedicationRequest:
    """Translate one line of ``prescription`` into a validated R4 ``MedicationRequest``.

    Options as :func:`medication_request_data`, which this validates. Raises
    pydantic's ValidationError if the result is not valid R4 (a bug, never bad input).
    """
    return MedicationRequest.parse_obj(
        medication_request_data(
            prescription,
            line,
            status=status,
            version_id=version_id,
            last_updated=last_updated,
            show_platform_token=show_platform_token,
            extensions=extensions,
        )
    )


def medication_request_data(
    prescription: Prescription,
    line: PrescriptionMedicine,
    *,
    status: str | None = None,
    version_id: int | None = None,
    last_updated: datetime | None = None,
    show_platform_token: bool = False,
    extensions: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Return one line of ``prescription`` as MedicationRequest JSON data, not yet validated.

    Bundles embed this and validate once, as a whole (validating each resource
    and then the Bundle again doubles the cost: fhir.resources validates every
    nested element).

    ``status``: our status to show (default: the prescription's current one;
    history snapshots pass the status as of that version). ``version_id`` and
    ``last_updated`` (aware UTC) fill ``meta``. ``show_platform_token`` adds the
    platform token identifier (support only). ``extensions``: further FHIR
    extension dicts.
    """
    ours = status or prescription.status
    identifiers: list[dict[str, Any]] = [
        {"use": "official", "system": LINE_SYSTEM, "value": f"{prescription.reference}/{line.position}"},
        # The prescription's own reference too, so a search by identifier finds every line.
        {"use": "usual", "system": REFERENCE_SYSTEM, "value": prescription.reference},
    ]
    if show_platform_token and prescription.platform_token:
        identifiers.append({"use": "secondary", "system": PLATFORM_TOKEN_SYSTEM, "value": prescription.platform_token})
    medication: dict[str, Any] = {"text": line.description}
    if line.vpid:
        medication["coding"] = [{"system": DMD_SYSTEM, "code": line.vpid, "display": line.description}]
    dispense: dict[str, Any] = {"quantity": {"value": line.quantity}}
    if prescription.pharmacy is not None:
        dispense["performer"] = _reference("Organization", prescription.pharmacy.id, prescription.pharmacy.name)
    data: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": resource_id(line),
        "extension": [{"url": STATUS_EXTENSION, "valueCode": ours}, *extensions],
        "identifier": identifiers,
        "status": fhir_status(ours),
        "intent": "order",
        "medicationCodeableConcept": medication,
        "subject": _reference("Patient", prescription.patient.external_ref),
        "authoredOn": prescription.created_at,
        "requester": _reference("Practitioner", prescription.prescriber.id, prescription.prescriber.name),
        "groupIdentifier": {"system": REFERENCE_SYSTEM, "value": prescription.reference},
        "dosageInstruction": [{"sequence": 1, "text": line.directions}],
        "dispenseRequest": dispense,
    }
    if ours in _STATUS_REASONS:
        data["statusReason"] = {"text": _STATUS_REASONS[ours]}
    meta: dict[str, Any] = {}
    if version_id is not None:
        meta["versionId"] = str(version_id)
    if last_updated is not None:
        meta["lastUpdated"] = last_updated
    if meta:
        data["meta"] = meta
    return data


def _load_prescription(session: Session, prescription_id: int) -> Prescription | None:
    return session.get(
        Prescription,
        prescription_id,
        options=[
            selectinload(Prescription.medicines),
            # Many-to-one: one joined SELECT instead of a query each.
            joinedload(Prescription.patient),
            joinedload(Prescription.prescriber),
            joinedload(Prescription.pharmacy),
        ],
    )


def _history(session: Session, prescription_id: int) -> list[StatusHistory]:
    # Append order (the id) is the order the service learned things in: versions follow it.
    return list(
        session.scalars(
            select(StatusHistory).where(StatusHistory.prescription_id == prescription_id).order_by(StatusHistory.id)
        )
    )


def _visible_line(
    session: Session, resource: str, *, patient_ref: str | None
) -> tuple[Prescription, PrescriptionMedicine]:
    prescription_id, position = parse_resource_id(resource)
    prescription = _load_prescription(session, prescription_id)
    line = next((m for m in prescription.medicines if m.position == position), None) if prescription else None
    # Another patient's prescription reads exactly like a missing one: no existence leak.
    if prescription is None or line is None or (patient_ref is not None and prescription.patient.external_ref != patient_ref):
        raise NotFound(f"MedicationRequest/{resource} does not exist.")
    return prescription, line


def read_medication_request(
    session: Session, resource: str, *, patient_ref: str | None, show_platform_token: bool = False
) -> MedicationRequest:
    """Return ``MedicationRequest/<resource>`` as it is now.

    ``patient_ref``: when set (a patient caller), only that patient's
    prescriptions exist. ``meta.versionId`` is the number of history rows (the
    latest ``_history`` entry), absent before the first transition.
    Raises :class:`NotFound` for an unknown, malformed or hidden id.
    """
    prescription, line = _visible_line(session, resource, patient_ref=patient_ref)
    rows = _history(session, prescription.id)
    return medication_request(
        prescription,
        line,
        version_id=len(rows) or None,
        # The same rule as search (_versions): the latest time we recorded anything.
        last_updated=max(r.received_at for r in rows) if rows else (prescription.updated_at or prescription.created_at),
        show_platform_token=show_platform_token,
    )


def patient_ref_from_search(value: str | None) -> str:
    """Return the patient's external ref from a ``patient`` search value.

    Accepts ``pt-0001``, ``Patient/pt-0001`` or an absolute URL ending in
    ``/Patient/pt-0001`` (http://hl7.org/fhir/R4/search.html#reference).
    Raises :class:`Invalid` (field ``patient``) when missing or empty.
    """
    raw = (value or "").strip()
    if "Patient/" in raw:
        raw = raw.rsplit("Patient/", 1)[1]
    if not raw or "/" in raw:
        raise Invalid(
            "Search MedicationRequest by patient: ?patient=<ref>.",
            code="invalid_search",
            errors={"patient": ["Required: a patient reference such as Patient/pt-0001."]},
        )
    return raw


def parse_count(
    value: str | None, *, name: str = "_count", default: int = DEFAULT_COUNT, maximum: int = MAX_COUNT, clamp: bool = True
) -> int:
    """Parse a non-negative integer search control (``_count``, ``_offset``).

    Above ``maximum`` it is lowered to ``maximum`` when ``clamp`` (FHIR lets a
    server return fewer than ``_count`` asks, http://hl7.org/fhir/R4/search.html#count),
    else refused. Raises :class:`Invalid` for anything but digits.
    """
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or (not clamp and int(value) > maximum):
        raise Invalid(
            f"{name} must be a whole number from 0 to {maximum}.",
            code="invalid_search",
            errors={name: [f"A whole number from 0 to {maximum}."]},
        )
    return min(int(value), maximum)


def search_medication_requests(
    session: Session,
    *,
    patient: str,
    base_url: str,
    self_url: str,
    next_url: str | None = None,
    count: int = DEFAULT_COUNT,
    offset: int = 0,
    patient_ref: str | None,
    show_platform_token: bool = False,
) -> Bundle:
    """Return a ``searchset`` Bundle of the patient's MedicationRequests, oldest prescription first.

    ``patient``: the external ref searched for; ``patient_ref``: when set, the
    only patient the caller may see (another patient's search is empty, like an
    unknown patient's). ``base_url``: the FHIR base ending in ``/fhir/R4``, for
    ``fullUrl``. ``self_url``: the request URL. ``next_url``: the URL of the
    next page, used only when more matches follow. ``count``/``offset`` page
    through the matches; ``total`` counts them all.
    """
    lines: list[PrescriptionMedicine] = []
    total = 0
    if patient_ref is None or patient == patient_ref:
        matches = (
            select(PrescriptionMedicine)
            .join(Prescription, Prescription.id == PrescriptionMedicine.prescription_id)
            .join(Patient, Patient.id == Prescription.patient_id)
            .where(Patient.external_ref == patient)
        )
        total = session.scalar(select(func.count()).select_from(matches.subquery())) or 0
        if count:
            lines = list(
                session.scalars(
                    matches.order_by(PrescriptionMedicine.prescription_id, PrescriptionMedicine.position)
                    .offset(offset)
                    .limit(count)
                    .options(
                        selectinload(PrescriptionMedicine.prescription).options(
                            joinedload(Prescription.patient),
                            joinedload(Prescription.prescriber),
                            joinedload(Prescription.pharmacy),
                        )
                    )
                )
            )
    versions = _versions(session, {line.prescription_id for line in lines})
    entries = []
    for line in lines:
        prescription = line.prescription
        n, last = versions.get(prescription.id, (0, None))
        resource = medication_request_data(
            prescription,
            line,
            version_id=n or None,
            last_updated=last or prescription.updated_at or prescription.created_at,
            show_platform_token=show_platform_token,
        )
        entries.append(
            {
                "fullUrl": f"{base_url}/MedicationRequest/{resource['id']}",
                "resource": resource,
                "search": {"mode": "match"},
            }
        )
    links = [{"relation": "self", "url": self_url}]
    if next_url and offset + len(lines) < total and count:
        links.append({"relation": "next", "url": next_url})
    return Bundle.parse_obj(
        {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links, "entry": entries or None}
    )


def _versions(session: Session, prescription_ids: Iterable[int]) -> dict[int, tuple[int, datetime | None]]:
    ids = sorted(prescription_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(StatusHistory.prescription_id, func.count(), func.max(StatusHistory.received_at))
        .where(StatusHistory.prescription_id.in_(ids))
        .group_by(StatusHistory.prescription_id)
    )
    return {pid: (n, last) for pid, n, last in rows}


def replay(rows: Iterable[StatusHistory]) -> Iterator[tuple[StatusHistory, str]]:
    """Yield each history row with the prescription's status right after it.

    The rules of ``webhooks.history``: a lifecycle status (contract §6) moves
    the status only forward (a late ``signed`` after ``dispensed`` is kept in
    the history but changes nothing); a service-side status always moves it.
    """
    current: str | None = None
    for row in rows:
        if row.to_status not in LIFECYCLE or can_advance(current, row.to_status):
            current = row.to_status
        yield row, current or row.to_status


def transition_extension(row: StatusHistory) -> dict[str, Any]:
    """Return the ``status-transition`` extension for one history row.

    Sub-extensions: ``from`` and ``to`` (our statuses, codes), ``source``
    (service, api, webhook, reconcile or operator), ``occurredAt`` (when it
    happened, per its source) and ``receivedAt`` (when we recorded it), both
    dateTime in UTC; ``eventId`` when the platform gave one.
    """
    parts: list[dict[str, Any]] = []
    if row.from_status:
        parts.append({"url": "from", "valueCode": row.from_status})
    parts += [
        {"url": "to", "valueCode": row.to_status},
        {"url": "source", "valueCode": row.source},
        {"url": "occurredAt", "valueDateTime": row.occurred_at},
        {"url": "receivedAt", "valueDateTime": row.received_at},
    ]
    if row.event_id:
        parts.append({"url": "eventId", "valueString": row.event_id})
    return {"url": TRANSITION_EXTENSION, "extension": parts}


def medication_request_history(
    session: Session,
    resource: str,
    *,
    base_url: str,
    self_url: str,
    patient_ref: str | None,
    show_platform_token: bool = False,
) -> Bundle:
    """Return the ``history`` Bundle of ``MedicationRequest/<resource>``, newest version first.

    One version per status history row (http://hl7.org/fhir/R4/http.html#history):
    the resource as it stood after that transition, ``meta.versionId`` its
    1-based place in append order, ``meta.lastUpdated`` and
    ``response.lastModified`` the time we recorded it, and the
    ``status-transition`` extension with its source and both times. The first
    version reads as a create (POST, 201), later ones as updates (PUT, 200).
    Raises :class:`NotFound` like :func:`read_medication_request`.
    """
    prescription, line = _visible_line(session, resource, patient_ref=patient_ref)
    rows = _history(session, prescription.id)
    entries = []
    for version, (row, status) in enumerate(replay(rows), start=1):
        snapshot = medication_request_data(
            prescription,
            line,
            status=status,
            version_id=version,
            last_updated=row.received_at,
            show_platform_token=show_platform_token,
            extensions=[transition_extension(row)],
        )
        first = version == 1
        entries.append(
            {
                "fullUrl": f"{base_url}/MedicationRequest/{snapshot['id']}",
                "resource": snapshot,
                "request": {
                    "method": "POST" if first else "PUT",
                    "url": "MedicationRequest" if first else f"MedicationRequest/{snapshot['id']}",
                },
                "response": {
                    "status": "201 Created" if first else "200 OK",
                    "etag": f'W/"{version}"',
                    "lastModified": row.received_at,
                },
            }
        )
    entries.reverse()
    return Bundle.parse_obj(
        {
            "resourceType": "Bundle",
            "type": "history",
            "total": len(entries),
            "link": [{"relation": "self", "url": self_url}],
            "entry": entries or None,
        }
    )


# OperationOutcome issue types by HTTP status (http://hl7.org/fhir/R4/valueset-issue-type.html).
_ISSUE_TYPES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
    422: "invalid",
    429: "throttled",
    503: "transient",
}


@dataclass(frozen=True)
class Outcome:
    """An error as FHIR answers it: HTTP ``status`` and the ``OperationOutcome`` resource."""

    status: int
    resource: OperationOutcome


def operation_outcome(status: int, code: str, message: str, errors: dict[str, Any] | None = None) -> Outcome:
    """Build the ``OperationOutcome`` for an error (http://hl7.org/fhir/R4/operationoutcome.html).

    ``status``: HTTP status; ``code``: our snake_case error code (in
    ``details.coding``); ``message``: safe text (``diagnostics``); ``errors``:
    field name -> messages, one extra issue per field with its ``expression``.
    """
    issue_type = _ISSUE_TYPES.get(status, "exception" if status >= 500 else "processing")
    issues: list[dict[str, Any]] = [
        {
            "severity": "error",
            "code": issue_type,
            "details": {"coding": [{"system": f"{NAMESPACE}/CodeSystem/error-code", "code": code}], "text": message},
            "diagnostics": message,
        }
    ]
    for field, messages in (errors or {}).items():
        texts = messages if isinstance(messages, list) else [messages]
        issues.append(
            {
                "severity": "error",
                "code": "value" if issue_type == "invalid" else issue_type,
                "diagnostics": "; ".join(str(t) for t in texts),
                "expression": [str(field)],
            }
        )
    return Outcome(status, OperationOutcome.parse_obj({"resourceType": "OperationOutcome", "issue": issues}))

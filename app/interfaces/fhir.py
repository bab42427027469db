"""FHIR R4 at the boundary: our prescription rows as read-only FHIR resources.

The one translation layer between the domain and FHIR: everything FHIR-shaped
is built here, with ``fhir.resources`` 6.4.0, whose root package is FHIR R4
4.0.1 (http://hl7.org/fhir/R4/); every resource is validated by its model as it
is built. (Releases from 7.0 carry R5 at the root and only R4B, 4.3.0, as a
sub-package: close to R4 but not R4. 6.4.0 needs pydantic 1.x, pinned.) No Flask:
``app/interfaces/fhir_api.py`` maps the domain errors raised here
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
API does for the support and service roles (the API's one visibility rule). A
rejection's platform message is not exposed: it may echo patient details.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from fhir.resources.bundle import Bundle
from fhir.resources.capabilitystatement import CapabilityStatement
from fhir.resources.medicationrequest import MedicationRequest
from fhir.resources.operationoutcome import OperationOutcome
from fhir.resources.organization import Organization
from fhir.resources.patient import Patient as FhirPatient
from fhir.resources.practitioner import Practitioner
from sqlalchemy import RowMapping, Select, bindparam, func, over, select
from sqlalchemy.orm import Session

from app.foundation.db import execute_prepared
from app.foundation.errors import Invalid, NotFound
from app.foundation.models import (
    Patient,
    Pharmacy,
    Prescriber,
    Prescription,
    PrescriptionMedicine,
    StatusHistory,
)
from app.services.prescription_reads import Viewer, aggregated, as_utc, find_row, view_select
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
PATIENT_SYSTEM = f"{NAMESPACE}/NamingSystem/patient-reference"
PRESCRIBER_SYSTEM = f"{NAMESPACE}/NamingSystem/prescriber-id"
PHARMACY_BRANCH_SYSTEM = f"{NAMESPACE}/NamingSystem/platform-branch-id"
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
MAX_OFFSET = 10**9
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
    # Bounded like the API's ids (app.interfaces.schemas.MAX_ID): larger values only make the database raise.
    prescription_id, position = int(head), int(tail)
    if prescription_id > 2**53 or position > 2**31 - 1:
        raise NotFound("No such MedicationRequest.")
    return prescription_id, position


def resource_id(line: PrescriptionMedicine | LineFacts) -> str:
    """Return the FHIR id of a prescription line, ``"<prescription id>-<position>"``."""
    return f"{line.prescription_id}-{line.position}"


def _reference(kind: str, value: object, display: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"reference": f"{kind}/{value}"}
    if display:
        ref["display"] = display
    return ref


def medication_request(
    prescription: Prescription | PrescriptionFacts,
    line: PrescriptionMedicine | LineFacts,
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
    prescription: Prescription | PrescriptionFacts,
    line: PrescriptionMedicine | LineFacts,
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
        {
            "use": "official",
            "system": LINE_SYSTEM,
            "value": f"{prescription.reference}/{line.position}",
        },
        # The prescription's own reference too, so a search by identifier finds every line.
        {"use": "usual", "system": REFERENCE_SYSTEM, "value": prescription.reference},
    ]
    if show_platform_token and prescription.platform_token:
        identifiers.append(
            {
                "use": "secondary",
                "system": PLATFORM_TOKEN_SYSTEM,
                "value": prescription.platform_token,
            }
        )
    medication: dict[str, Any] = {"text": line.description}
    if line.vpid:
        medication["coding"] = [
            {"system": DMD_SYSTEM, "code": line.vpid, "display": line.description}
        ]
    dispense: dict[str, Any] = {"quantity": {"value": line.quantity}}
    if prescription.pharmacy is not None:
        dispense["performer"] = _reference(
            "Organization", prescription.pharmacy.id, prescription.pharmacy.name
        )
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
        "requester": _reference(
            "Practitioner", prescription.prescriber.id, prescription.prescriber.name
        ),
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


@dataclass(frozen=True)
class Named:
    """An id and a display name (a prescriber, a pharmacy)."""

    id: int
    name: str


@dataclass(frozen=True)
class PatientKey:
    """The patient as FHIR may name it: the external reference only."""

    external_ref: str


@dataclass(frozen=True)
class PrescriptionFacts:
    """What the translation reads of a prescription, as a view row carries it (aware UTC)."""

    id: int
    reference: str
    status: str
    platform_token: str | None
    created_at: datetime
    updated_at: datetime | None
    patient: PatientKey
    prescriber: Named
    pharmacy: Named | None


@dataclass(frozen=True)
class LineFacts:
    """One prescription line as the translation reads it."""

    prescription_id: int
    position: int
    vpid: str | None
    description: str
    quantity: int
    directions: str


@dataclass(frozen=True)
class HistoryFacts:
    """One status history row as the translation reads it (times aware UTC)."""

    id: int
    from_status: str | None
    to_status: str
    occurred_at: datetime
    received_at: datetime
    source: str
    event_id: str | None


@dataclass(frozen=True)
class Loaded:
    """A prescription read in one query: facts, lines (by position), history (append order)."""

    prescription: PrescriptionFacts
    lines: tuple[LineFacts, ...]
    history: tuple[HistoryFacts, ...]

    @classmethod
    def from_row(cls, row: RowMapping) -> Loaded:
        """Build from a :func:`app.services.prescription_reads.view_select` row."""
        rx = PrescriptionFacts(
            id=row["id"],
            reference=row["reference"],
            status=row["status"],
            platform_token=row["platform_token"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            patient=PatientKey(row["patient_ref"]),
            prescriber=Named(row["prescriber_id"], row["prescriber_name"]),
            pharmacy=Named(row["pharmacy_id"], row["pharmacy_name"])
            if row["pharmacy_id"]
            else None,
        )
        lines = tuple(
            LineFacts(
                prescription_id=rx.id,
                position=m["position"],
                vpid=m["vpid"],
                description=m["description"],
                quantity=m["quantity"],
                directions=m["directions"],
            )
            for m in sorted(aggregated(row["medicines"]), key=lambda m: m["position"])
        )
        # Append order (the id) is the order the service learned things in: versions follow it.
        history = tuple(
            HistoryFacts(
                id=h["id"],
                from_status=h["from_status"],
                to_status=h["to_status"],
                occurred_at=as_utc(h["occurred_at"]),
                received_at=as_utc(h["received_at"]),
                source=h["source"],
                event_id=h["event_id"],
            )
            for h in sorted(aggregated(row["history"]), key=lambda h: h["id"])
        )
        return cls(prescription=rx, lines=lines, history=history)

    def version(self) -> tuple[int | None, datetime]:
        """``(versionId, lastUpdated)``: the number of history rows (None before the first) and
        the latest time we recorded anything (else the prescription's own times)."""
        if self.history:
            return len(self.history), max(h.received_at for h in self.history)
        return None, self.prescription.updated_at or self.prescription.created_at


def _existing_ids(loaded: Loaded) -> list[str]:
    return [f"{line.prescription_id}-{line.position}" for line in loaded.lines]


def _visible_line(
    session: Session, resource: str, *, patient_ref: str | None
) -> tuple[Loaded, LineFacts]:
    """The prescription and line behind ``MedicationRequest/<resource>``, in one query.

    A bare prescription id (``12``) or our reference (``rx-000012``), or a line
    that does not exist, names no MedicationRequest: the :class:`NotFound`
    then says which ids this prescription has, so a client can follow one
    (only for a prescription the caller may see).
    """
    prescription_key, position = _lookup_key(resource)
    row = find_row(
        session, viewer=Viewer(patient_ref=patient_ref, privileged=False), **prescription_key
    )
    # Another patient's prescription reads exactly like a missing one: no existence leak.
    if row is None:
        raise NotFound(f"MedicationRequest/{resource} does not exist.")
    loaded = Loaded.from_row(row)
    line = next((m for m in loaded.lines if m.position == position), None)
    if line is None:
        ids = ", ".join(f"MedicationRequest/{i}" for i in _existing_ids(loaded)) or "none"
        raise NotFound(
            "MedicationRequest ids are <prescription id>-<line>; "
            f"prescription {loaded.prescription.reference} has: {ids}.",
            errors={"id": [f"Use one of: {ids}."]},
        )
    return loaded, line


def _lookup_key(resource: str) -> tuple[dict[str, Any], int | None]:
    """``({prescription_id|reference: ...}, line position or None)`` for a requested id."""
    if resource.isascii() and resource.isdigit() and int(resource) <= 2**53:
        return {"prescription_id": int(resource)}, None
    head, sep, tail = resource.partition("-")
    if sep and head.isascii() and head.isdigit() and tail.isascii() and tail.isdigit():
        prescription_id, position = parse_resource_id(resource)
        return {"prescription_id": prescription_id}, position
    if 0 < len(resource) <= 64 and resource.isprintable():
        return {"reference": resource}, None  # our reference, e.g. rx-000012
    raise NotFound("No such MedicationRequest.")


def read_medication_request(
    session: Session, resource: str, *, patient_ref: str | None, show_platform_token: bool = False
) -> MedicationRequest:
    """Return ``MedicationRequest/<resource>`` as it is now, read in one query.

    ``patient_ref``: when set (a patient caller), only that patient's
    prescriptions exist. ``meta.versionId`` is the number of history rows (the
    latest ``_history`` entry), absent before the first transition.
    Raises :class:`NotFound` for an unknown, malformed or hidden id; for a
    prescription the caller may see but an id naming no line (a bare
    prescription id, our reference, a missing line) its message lists the ids
    that exist.
    """
    loaded, line = _visible_line(session, resource, patient_ref=patient_ref)
    version, last_updated = loaded.version()
    return medication_request(
        loaded.prescription,
        line,
        version_id=version,
        # The same rule as search: the latest time we recorded anything.
        last_updated=last_updated,
        show_platform_token=show_platform_token,
    )


PATIENT_SEARCH_PATTERN = r"^(.*Patient/)?[A-Za-z0-9.\-]{1,64}$"
"""What ``?patient=`` accepts: an id of FHIR's id characters
(http://hl7.org/fhir/R4/datatypes.html#id),
bare, as ``Patient/<id>`` or as an absolute URL ending so (OpenAPI documents this pattern)."""
_PATIENT_SEARCH = re.compile(PATIENT_SEARCH_PATTERN)


def patient_ref_from_search(value: str | None) -> str:
    """Return the patient's external ref from a ``patient`` search value.

    Accepts ``pt-0001``, ``Patient/pt-0001`` or an absolute URL ending in
    ``/Patient/pt-0001`` (http://hl7.org/fhir/R4/search.html#reference), the
    id made of FHIR id characters (:data:`PATIENT_SEARCH_PATTERN`). Raises
    :class:`Invalid` (field ``patient``) when missing, empty or anything else.
    """
    raw = value or ""
    if not _PATIENT_SEARCH.fullmatch(raw):
        raise Invalid(
            "Search MedicationRequest by patient: ?patient=<ref>.",
            code="invalid_search",
            errors={"patient": ["Required: a patient reference such as Patient/pt-0001."]},
        )
    return raw.rsplit("Patient/", 1)[-1]


def parse_count(
    value: str | None,
    *,
    name: str = "_count",
    default: int = DEFAULT_COUNT,
    maximum: int = MAX_COUNT,
    clamp: bool = True,
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


@cache
def _search_statement(dialect: str) -> Select[Any]:
    """The page of one patient's MedicationRequests: one row per medicine line with its
    prescription's :func:`view_select` columns, ``line_position`` and the window ``total``;
    bound parameters ``patient``, ``offset``, ``limit``. Built once per process and dialect
    (building it costs more CPU than running it), and run prepared once per connection on
    PostgreSQL (:func:`app.foundation.db.execute_prepared`)."""
    return (
        view_select(dialect)
        .add_columns(
            PrescriptionMedicine.position.label("line_position"),
            over(func.count()).label("total"),
        )
        .join(PrescriptionMedicine, PrescriptionMedicine.prescription_id == Prescription.id)
        .where(Patient.external_ref == bindparam("patient"))
        .order_by(Prescription.id, PrescriptionMedicine.position)
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
    )


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
    found: list[tuple[Loaded, LineFacts]] = []
    total = 0
    if patient_ref is None or patient == patient_ref:
        # One query: the page of lines with each prescription's view row, and the total.
        stmt = _search_statement(session.get_bind().dialect.name)
        params = {"patient": patient, "offset": offset, "limit": max(count, 1)}
        rows = execute_prepared(session.connection(), stmt, params).all()
        if rows:
            total = int(rows[0].total)
        elif offset:
            total = (
                session.scalar(
                    select(func.count())
                    .select_from(PrescriptionMedicine)
                    .join(Prescription, Prescription.id == PrescriptionMedicine.prescription_id)
                    .join(Patient, Patient.id == Prescription.patient_id)
                    .where(Patient.external_ref == patient)
                )
                or 0
            )
        for row in rows[:count]:
            loaded = Loaded.from_row(row._mapping)
            line = next(m for m in loaded.lines if m.position == row.line_position)
            found.append((loaded, line))
    entries = []
    for loaded, line in found:
        version, last_updated = loaded.version()
        resource = medication_request_data(
            loaded.prescription,
            line,
            version_id=version,
            last_updated=last_updated,
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
    if next_url and offset + len(found) < total and count:
        links.append({"relation": "next", "url": next_url})
    return Bundle.parse_obj(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": total,
            "link": links,
            "entry": entries or None,
        }
    )


def replay(rows: Iterable[Any]) -> Iterator[tuple[Any, str]]:
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


def transition_extension(row: StatusHistory | HistoryFacts) -> dict[str, Any]:
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
) -> tuple[Bundle, int]:
    """Return the ``history`` Bundle of ``MedicationRequest/<resource>``, newest version first,
    and the prescription's id (for the audit row, even when the history is empty).

    One version per status history row (http://hl7.org/fhir/R4/http.html#history):
    the resource as it stood after that transition, ``meta.versionId`` its
    1-based place in append order, ``meta.lastUpdated`` and
    ``response.lastModified`` the time we recorded it, and the
    ``status-transition`` extension with its source and both times. The first
    version reads as a create (POST, 201), later ones as updates (PUT, 200).
    Raises :class:`NotFound` like :func:`read_medication_request`.
    """
    loaded, line = _visible_line(session, resource, patient_ref=patient_ref)
    entries = []
    for version, (row, status) in enumerate(replay(loaded.history), start=1):
        snapshot = medication_request_data(
            loaded.prescription,
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
    bundle = Bundle.parse_obj(
        {
            "resourceType": "Bundle",
            "type": "history",
            "total": len(entries),
            "link": [{"relation": "self", "url": self_url}],
            "entry": entries or None,
        }
    )
    return bundle, loaded.prescription.id


def read_patient(session: Session, ref: str, *, patient_ref: str | None) -> FhirPatient:
    """Return ``Patient/<ref>``: the reference a MedicationRequest's ``subject`` points to.

    Identity only (id and our reference as identifier): no name, birth date,
    address or contact leaves through FHIR, as for the MedicationRequests.
    ``patient_ref``: when set (a patient caller) only that patient exists.
    One query. Raises :class:`NotFound` for an unknown or hidden patient.
    """
    if patient_ref is not None and ref != patient_ref:
        raise NotFound(f"Patient/{ref} does not exist.")
    found = session.scalar(select(Patient.external_ref).where(Patient.external_ref == ref))
    if found is None:
        raise NotFound(f"Patient/{ref} does not exist.")
    return FhirPatient.parse_obj(
        {
            "resourceType": "Patient",
            "id": found,
            "identifier": [{"use": "usual", "system": PATIENT_SYSTEM, "value": found}],
            "active": True,
        }
    )


def _numeric_id(kind: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) > 2**53:
        raise NotFound(f"No such {kind}.")
    return int(value)


def read_practitioner(session: Session, value: str) -> Practitioner:
    """Return ``Practitioner/<id>``: a prescriber's id and name (MedicationRequest.requester).

    Professional details, not patient data: any caller may read them. One query.
    Raises :class:`NotFound` for an unknown or malformed id.
    """
    prescriber_id = _numeric_id("Practitioner", value)
    row = session.execute(
        select(Prescriber.id, Prescriber.name).where(Prescriber.id == prescriber_id)
    ).first()
    if row is None:
        raise NotFound(f"Practitioner/{prescriber_id} does not exist.")
    return Practitioner.parse_obj(
        {
            "resourceType": "Practitioner",
            "id": str(row.id),
            "identifier": [{"use": "usual", "system": PRESCRIBER_SYSTEM, "value": str(row.id)}],
            "active": True,
            "name": [{"text": row.name}],
        }
    )


def read_organization(session: Session, value: str) -> Organization:
    """Return ``Organization/<id>``: a pharmacy (MedicationRequest.dispenseRequest.performer).

    Name, public address and the platform branch id when it has one; any
    caller may read it. One query. Raises :class:`NotFound` for an unknown or malformed id.
    """
    pharmacy_id = _numeric_id("Organization", value)
    row = session.execute(
        select(
            Pharmacy.id,
            Pharmacy.name,
            Pharmacy.branch_id,
            Pharmacy.address_line1,
            Pharmacy.city,
            Pharmacy.post_code,
        ).where(Pharmacy.id == pharmacy_id)
    ).first()
    if row is None:
        raise NotFound(f"Organization/{pharmacy_id} does not exist.")
    data: dict[str, Any] = {
        "resourceType": "Organization",
        "id": str(row.id),
        "active": True,
        # "prov": Healthcare Provider (http://hl7.org/fhir/R4/codesystem-organization-type.html).
        "type": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                        "code": "prov",
                    }
                ],
                "text": "Pharmacy",
            }
        ],
        "name": row.name,
        "address": [
            {
                "line": [row.address_line1],
                "city": row.city,
                "postalCode": row.post_code,
                "country": "GB",
            }
        ],
    }
    if row.branch_id is not None:
        data["identifier"] = [
            {"use": "secondary", "system": PHARMACY_BRANCH_SYSTEM, "value": str(row.branch_id)}
        ]
    return Organization.parse_obj(data)


CAPABILITY_DATE = "2026-12-07"
"""When the CapabilityStatement below last changed (its ``date``)."""


def capability_statement(*, base_url: str, software_version: str) -> CapabilityStatement:
    """Return the server's ``CapabilityStatement``.

    Defined at http://hl7.org/fhir/R4/capabilitystatement.html.

    What ``/fhir/R4`` supports: JSON only; read-only; ``MedicationRequest``
    read, search by ``patient`` (with ``_count`` and ``_offset``) and
    instance history; ``Patient``, ``Practitioner`` and ``Organization`` read.
    Every interaction but ``metadata`` needs a bearer JWT. ``base_url``: the
    FHIR base ending in ``/fhir/R4``.
    """
    read = [{"code": "read"}]
    return CapabilityStatement.parse_obj(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": CAPABILITY_DATE,
            "publisher": "erx-connector",
            "kind": "instance",
            "software": {"name": "erx-connector", "version": software_version},
            "implementation": {
                "description": "Read-only FHIR R4 view of e-prescriptions",
                "url": base_url,
            },
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "security": {
                        "description": "Authorization: Bearer <JWT> with role patient "
                        "(own records only), support or service. Only support and "
                        "service see the platform token.",
                    },
                    "resource": [
                        {
                            "type": "MedicationRequest",
                            "interaction": [
                                {"code": "read"},
                                {"code": "search-type"},
                                {"code": "history-instance"},
                            ],
                            "versioning": "versioned",
                            "readHistory": False,
                            "searchParam": [
                                {
                                    "name": "patient",
                                    "type": "reference",
                                    "documentation": "Required: Patient/<ref> or <ref>.",
                                },
                                {
                                    "name": "_count",
                                    "type": "number",
                                    "documentation": f"Page size, at most {MAX_COUNT}.",
                                },
                                {
                                    "name": "_offset",
                                    "type": "number",
                                    "documentation": "Matches to skip.",
                                },
                            ],
                        },
                        {"type": "Patient", "interaction": read},
                        {"type": "Practitioner", "interaction": read},
                        {"type": "Organization", "interaction": read},
                    ],
                }
            ],
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


def operation_outcome(
    status: int, code: str, message: str, errors: dict[str, Any] | None = None
) -> Outcome:
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
            "details": {
                "coding": [{"system": f"{NAMESPACE}/CodeSystem/error-code", "code": code}],
                "text": message,
            },
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
    return Outcome(
        status, OperationOutcome.parse_obj({"resourceType": "OperationOutcome", "issue": issues})
    )

"""The issue request we build, and its wire payload (contract §4).

The request types hold patient data, so their ``repr()`` never shows it:
a traceback or a debug log line cannot leak a name, date of birth or address.
:func:`build_issue_payload` checks every §4 field rule at once and reports all
problems in one :class:`~connector.errors.PayloadError` keyed by field path,
without the offending values.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from connector.errors import PayloadError

__all__ = [
    "GENDERS",
    "IssueRequest",
    "MedicineLine",
    "PatientDetails",
    "build_issue_payload",
    "normalise_phone",
]

GENDERS: frozenset[str] = frozenset({"male", "female", "other", "unknown"})
"""Values the platform accepts for ``patient.gender`` (§4)."""

ISSUE_ACTION = "issueToContact"

_PHONE_CHARS = re.compile(r"[0-9\s()+\-./]*")
_NON_DIGITS = re.compile(r"\D")
# E.164 allows at most 15 digits; anything under 8 cannot be a full number.
_PHONE_MIN_DIGITS = 8
_PHONE_MAX_DIGITS = 15
# In the UK the national trunk "0" is dropped after +44; people still write
# "+44 07700 ...", which would otherwise become an invalid 13-digit number.
_UK = "44"


@dataclass(frozen=True, repr=False)
class PatientDetails:
    """The patient, as sent in the issue payload (§4). Patients need not exist
    on the platform: these details travel with every prescription.

    Args:
        first_name, last_name: names (required).
        gender: ``male``, ``female``, ``other`` or ``unknown`` (any case).
        date_of_birth: a ``datetime.date``.
        email: email address or None/"".
        phone: phone number in any common UK/international notation, or None/"";
            see :func:`normalise_phone`.
        address_line1, address_line2, city, post_code: postal address
            (None is sent as "").
        country: country name, default ``"United Kingdom"``.

    ``repr()`` is ``PatientDetails(<redacted>)``.
    """

    first_name: str
    last_name: str
    gender: str
    date_of_birth: dt.date
    email: str | None
    phone: str | None
    address_line1: str | None
    address_line2: str | None
    city: str | None
    post_code: str | None
    country: str = "United Kingdom"

    def __repr__(self) -> str:
        return "PatientDetails(<redacted>)"


@dataclass(frozen=True, repr=False)
class MedicineLine:
    """One medicine on a prescription (§4).

    Args:
        vpid: the dm+d virtual product id (may be empty).
        description: medicine name and strength (required).
        quantity: a positive whole number, as ``int`` or a string of digits.
        directions: dosage instructions (required).

    ``repr()`` shows only the vpid: a medicine next to a reference is health data.
    """

    vpid: str | None
    description: str
    quantity: int | str
    directions: str

    def __repr__(self) -> str:
        return f"MedicineLine(vpid={self.vpid!r}, <redacted>)"


@dataclass(frozen=True, repr=False)
class IssueRequest:
    """Everything needed to issue one prescription, except the prescriber (§4).

    Args:
        clinic_id: the platform's INTERNAL clinic id as ``int`` (e.g. 994), not
            the dashboard display id (e.g. ``"201334"``) (§3).
        contact_id: the pharmacy's platform branch id (§3).
        client_ref_id: our stable reference for this prescription; the only
            protection against duplicates (§4).
        patient: the patient's details.
        medicines: one or more lines.
        notify: whether the platform notifies the pharmacy.

    ``repr()`` shows ids and counts only.
    """

    clinic_id: int
    contact_id: int
    client_ref_id: str
    patient: PatientDetails
    medicines: tuple[MedicineLine, ...]
    notify: bool = True

    def __repr__(self) -> str:
        count = len(self.medicines) if isinstance(self.medicines, tuple | list) else "?"
        return (
            f"IssueRequest(clinic_id={self.clinic_id!r}, contact_id={self.contact_id!r}, "
            f"client_ref_id={self.client_ref_id!r}, patient=<redacted>, "
            f"medicines=<{count} lines>, notify={self.notify!r})"
        )


def normalise_phone(raw: str | None, *, default_country_code: str = _UK) -> str:
    """Turn a phone number into digits with the country code and no ``+`` (§4).

    ``"07700 900123"``, ``"+44 (0)7700 900123"``, ``"0044 7700 900123"`` and
    ``"447700900123"`` all become ``"447700900123"``. A leading single ``0``
    is a national trunk prefix and is replaced by ``default_country_code``;
    a leading ``+`` or ``00`` marks an international number; bare digits are
    taken as already international.

    Args:
        raw: the number as typed, or None.
        default_country_code: country code for national numbers, digits only.

    Returns:
        The digits, or ``""`` for None or a blank string.

    Raises:
        PayloadError: ``errors={"phone": [...]}`` for letters or other stray
            characters, a misplaced ``+``, or an impossible length. The number
            itself is never included.
    """
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise PayloadError({"phone": ["must be a string"]})
    text = raw.strip()
    if not text:
        return ""
    if not _PHONE_CHARS.fullmatch(text):
        raise PayloadError(
            {"phone": ["may contain only digits, spaces, brackets, '+', '-', '.' and '/'"]}
        )
    if "+" in text[1:]:
        raise PayloadError({"phone": ["'+' may only start the number"]})
    international = text.startswith("+")
    digits = _NON_DIGITS.sub("", text.replace("(0)", ""))
    if not international:
        if digits.startswith("00"):
            digits = digits[2:]
        elif digits.startswith("0"):
            digits = default_country_code + digits[1:]
    if digits.startswith(_UK + "0"):
        digits = _UK + digits[len(_UK) + 1 :]
    if not _PHONE_MIN_DIGITS <= len(digits) <= _PHONE_MAX_DIGITS:
        raise PayloadError(
            {"phone": [f"must have {_PHONE_MIN_DIGITS} to {_PHONE_MAX_DIGITS} digits"]}
        )
    return digits


class _Errors:
    """Collects field errors so that one PayloadError reports all of them."""

    def __init__(self) -> None:
        self.items: dict[str, list[str]] = {}

    def add(self, key: str, message: str) -> None:
        self.items.setdefault(key, []).append(message)

    def text(self, key: str, value: object, *, required: bool) -> str:
        if value is None:
            if required:
                self.add(key, "is required")
            return ""
        if not isinstance(value, str):
            self.add(key, "must be a string")
            return ""
        value = value.strip()
        if required and not value:
            self.add(key, "is required")
        return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _quantity(value: object, key: str, errors: _Errors) -> str:
    if _is_int(value):
        if value > 0:
            return str(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            errors.add(key, "is required")
            return ""
        if text.isascii() and text.isdigit() and int(text) > 0:
            return str(int(text))
    elif value is None:
        errors.add(key, "is required")
        return ""
    errors.add(key, "must be a positive whole number")
    return ""


def _patient(patient: object, errors: _Errors) -> dict[str, str]:
    if not isinstance(patient, PatientDetails):
        errors.add("patient", "must be a PatientDetails")
        return {}
    gender = errors.text("patient.gender", patient.gender, required=True).lower()
    if gender and gender not in GENDERS:
        errors.add("patient.gender", "must be one of " + ", ".join(sorted(GENDERS)))
    dob = patient.date_of_birth
    birth = {"birth_day": "", "birth_month": "", "birth_year": ""}
    if isinstance(dob, dt.date):
        birth = {
            "birth_day": f"{dob.day:02d}",
            "birth_month": f"{dob.month:02d}",
            "birth_year": f"{dob.year:04d}",
        }
    else:
        errors.add("patient.date_of_birth", "must be a date")
    try:
        phone = normalise_phone(patient.phone)
    except PayloadError as exc:
        for message in exc.errors.get("phone", []):
            errors.add("patient.phone", message)
        phone = ""
    return {
        "first_name": errors.text("patient.first_name", patient.first_name, required=True),
        "last_name": errors.text("patient.last_name", patient.last_name, required=True),
        "gender": gender,
        **birth,
        "email": errors.text("patient.email", patient.email, required=False),
        "phone": phone,
        "address_ln1": errors.text("patient.address_line1", patient.address_line1, required=False),
        "address_ln2": errors.text("patient.address_line2", patient.address_line2, required=False),
        "city": errors.text("patient.city", patient.city, required=False),
        "post_code": errors.text("patient.post_code", patient.post_code, required=False),
        "country": errors.text("patient.country", patient.country, required=False)
        or "United Kingdom",
    }


def _medicines(lines: object, errors: _Errors) -> list[dict[str, str]]:
    if not isinstance(lines, tuple | list) or not lines:
        errors.add("medicines", "at least one medicine is required")
        return []
    out = []
    for index, line in enumerate(lines):
        key = f"medicines.{index}"
        if not isinstance(line, MedicineLine):
            errors.add(key, "must be a MedicineLine")
            continue
        out.append(
            {
                "vpid": errors.text(f"{key}.vpid", line.vpid, required=False),
                "description": errors.text(f"{key}.description", line.description, required=True),
                "qty": _quantity(line.quantity, f"{key}.qty", errors),
                "directions": errors.text(f"{key}.directions", line.directions, required=True),
            }
        )
    return out


def build_issue_payload(request: IssueRequest, *, secure_pin: str) -> dict[str, Any]:
    """Build the JSON body of ``POST /prescriptions`` (§4, action ``issueToContact``).

    Args:
        request: what to issue.
        secure_pin: the prescriber's signing PIN (from ``PrescriberCredentials``).

    Returns:
        A JSON-ready dict: ``action``, ``clinic_id`` (int), ``contact_id`` (int),
        ``secure_pin``, ``client_ref_id``, ``notify`` (bool), ``patient`` (DOB as
        zero-padded ``birth_day``/``birth_month``/``birth_year`` strings, phone
        as digits with country code, lower-case gender) and ``medicines``
        (``qty`` as a string of digits).

    Raises:
        PayloadError: one or more rules broken; ``errors`` maps each field key
            (``"clinic_id"``, ``"patient.gender"``, ``"medicines.0.qty"``) to
            rule descriptions. A ``str`` clinic id is refused: strings are
            dashboard display ids, the API wants the internal ``int`` (§3).
    """
    errors = _Errors()
    if not isinstance(request, IssueRequest):
        raise PayloadError({"request": ["must be an IssueRequest"]})
    if not _is_int(request.clinic_id):
        errors.add(
            "clinic_id",
            "must be the platform's internal clinic id (int), not a dashboard display id",
        )
    elif request.clinic_id <= 0:
        errors.add("clinic_id", "must be a positive integer")
    if not _is_int(request.contact_id) or request.contact_id <= 0:
        errors.add("contact_id", "must be the pharmacy's platform branch id (positive int)")
    client_ref_id = errors.text("client_ref_id", request.client_ref_id, required=True)
    if not isinstance(secure_pin, str) or not secure_pin:
        errors.add("secure_pin", "is required")
    if not isinstance(request.notify, bool):
        errors.add("notify", "must be a boolean")
    patient = _patient(request.patient, errors)
    medicines = _medicines(request.medicines, errors)
    if errors.items:
        raise PayloadError(errors.items)
    return {
        "action": ISSUE_ACTION,
        "clinic_id": request.clinic_id,
        "contact_id": request.contact_id,
        "secure_pin": secure_pin,
        "client_ref_id": client_ref_id,
        "notify": request.notify,
        "patient": patient,
        "medicines": medicines,
    }

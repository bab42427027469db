"""Field validation of ``POST /prescriptions`` bodies (contract §4).

Failures are reported the way the platform does (a Laravel-style error bag),
keyed by dotted field path: ``{"medicines.0.qty": ["The qty field is required."]}``.
"""

from __future__ import annotations

import re
from typing import Any

GENDERS = frozenset({"male", "female", "other", "unknown"})
REQUIRED_PATIENT_FIELDS = (
    "first_name",
    "last_name",
    "birth_day",
    "birth_month",
    "birth_year",
    "post_code",
)
_DIGITS = re.compile(r"[0-9]+")
_TWO_DIGITS = re.compile(r"[0-9]{2}")
_FOUR_DIGITS = re.compile(r"[0-9]{4}")

Errors = dict[str, list[str]]


def _label(path: str) -> str:
    return path.rsplit(".", 1)[-1].replace("_", " ")


def _required(path: str) -> str:
    return f"The {_label(path)} field is required."


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _add(errors: Errors, path: str, message: str) -> None:
    errors.setdefault(path, []).append(message)


def parse_int_id(value: Any) -> int | None:
    """An integer id given as a JSON number or a string of digits; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    return None


def validate_issue(payload: dict[str, Any]) -> Errors:
    """Every field error in an issue body; an empty dict means the body is well-formed.

    Checks (§4): ``action`` is ``issueToContact``; ``clinic_id`` and
    ``contact_id`` are integers; ``secure_pin`` is present; patient first/last
    name, date-of-birth parts (zero-padded ``DD``, ``MM``, ``YYYY`` strings) and
    post code are present; gender is one of male|female|other|unknown; phone, if
    given, is digits only (country code, no ``+``); ``medicines`` is a non-empty
    list whose items have ``description``, ``qty`` (a string of digits) and
    ``directions``. Authorisation, contact, PIN and controlled-drug checks come
    after, in the route.
    """
    errors: Errors = {}
    if payload.get("action") != "issueToContact":
        _add(errors, "action", "The selected action is invalid.")
    for key in ("clinic_id", "contact_id"):
        if _blank(payload.get(key)):
            _add(errors, key, _required(key))
        elif parse_int_id(payload.get(key)) is None:
            _add(errors, key, f"The {_label(key)} must be an integer.")
    if _blank(payload.get("secure_pin")):
        _add(errors, "secure_pin", _required("secure_pin"))
    ref = payload.get("client_ref_id")
    if ref is not None and not isinstance(ref, str):
        _add(errors, "client_ref_id", "The client ref id must be a string.")
    _validate_patient(payload.get("patient"), errors)
    _validate_medicines(payload.get("medicines"), errors)
    return errors


def _validate_patient(patient: Any, errors: Errors) -> None:
    if not isinstance(patient, dict):
        _add(errors, "patient", _required("patient"))
        return
    for key in REQUIRED_PATIENT_FIELDS:
        path = f"patient.{key}"
        value = patient.get(key)
        if _blank(value):
            _add(errors, path, _required(path))
        elif not isinstance(value, str):
            _add(errors, path, f"The {_label(path)} must be a string.")
    formats = {"birth_day": _TWO_DIGITS, "birth_month": _TWO_DIGITS, "birth_year": _FOUR_DIGITS}
    for key, pattern in formats.items():
        value = patient.get(key)
        if isinstance(value, str) and value.strip() and not pattern.fullmatch(value):
            _add(errors, f"patient.{key}", f"The {_label(key)} format is invalid.")
    gender = patient.get("gender")
    if _blank(gender):
        _add(errors, "patient.gender", _required("patient.gender"))
    elif gender not in GENDERS:
        _add(errors, "patient.gender", "The selected gender is invalid.")
    phone = patient.get("phone")
    if not _blank(phone) and not (isinstance(phone, str) and _DIGITS.fullmatch(phone)):
        _add(errors, "patient.phone", "The phone format is invalid.")


def _validate_medicines(medicines: Any, errors: Errors) -> None:
    if not isinstance(medicines, list) or not medicines:
        _add(errors, "medicines", _required("medicines"))
        return
    for index, item in enumerate(medicines):
        base = f"medicines.{index}"
        if not isinstance(item, dict):
            _add(errors, base, "The medicine must be an object.")
            continue
        for key in ("description", "qty", "directions"):
            value = item.get(key)
            path = f"{base}.{key}"
            if _blank(value):
                _add(errors, path, _required(path))
            elif not isinstance(value, str):
                _add(errors, path, f"The {key} must be a string.")
        qty = item.get("qty")
        if isinstance(qty, str) and qty.strip() and not _DIGITS.fullmatch(qty):
            _add(errors, f"{base}.qty", "The qty must be a string of digits.")
        vpid = item.get("vpid")
        if vpid is not None and not isinstance(vpid, str):
            _add(errors, f"{base}.vpid", "The vpid must be a string.")

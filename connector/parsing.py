"""Tolerant readers for platform success bodies (contract §1, §3, §4, §5).

Each reader accepts whatever JSON came back and either returns a typed value or
raises :class:`~connector.errors.ResponseParseError` naming the dotted path that
failed and the JSON type found there; never ``KeyError``/``TypeError``, and
never the value itself (it may be PHI or a token). Extra keys are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from connector.errors import ResponseParseError
from connector.results import (
    Clinic,
    Contact,
    ContactAddress,
    Medicine,
    PlatformPrescription,
    StatusChange,
)

__all__ = [
    "DEFAULT_PRESCRIPTION_ID_PATH",
    "ResponseParseError",
    "parse_clinic",
    "parse_contact",
    "parse_medicine",
    "parse_prescription",
    "parse_prescription_token",
    "parse_timestamp",
    "value_at",
]

DEFAULT_PRESCRIPTION_ID_PATH: tuple[str, ...] = ("data", "prescription", "id")


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _join(base: str, key: str | int) -> str:
    return f"{base}.{key}" if base else str(key)


def value_at(body: object, path: Sequence[str], *, base: str = "") -> object:
    """Walk ``path`` through nested JSON objects.

    Args:
        body: decoded JSON.
        path: keys to follow, e.g. ``("data", "prescription")``.
        base: dotted prefix used in error paths (for nested calls).

    Returns:
        The value found at the end of ``path`` (may be None only if ``path`` is empty).

    Raises:
        ResponseParseError: a step is not an object, or a key is missing or null.
    """
    current = body
    walked = base
    for key in path:
        if not isinstance(current, dict):
            raise ResponseParseError(
                f"expected an object at '{walked or '<body>'}', found {_type_name(current)}",
                path=walked or "<body>",
                code="invalid_response",
            )
        walked = _join(walked, key)
        if current.get(key) is None:
            raise ResponseParseError(
                f"missing value at '{walked}'", path=walked, code="invalid_response"
            )
        current = current[key]
    return current


def _required_str(obj: dict[str, object], key: str, base: str) -> str:
    value = obj.get(key)
    path = _join(base, key)
    if value is None:
        raise ResponseParseError(f"missing value at '{path}'", path=path, code="invalid_response")
    if not isinstance(value, str) or not value.strip():
        raise ResponseParseError(
            f"expected a non-empty string at '{path}', found {_type_name(value)}",
            path=path,
            code="invalid_response",
        )
    return value.strip()


def _optional_str(obj: dict[str, object], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _required_int(obj: dict[str, object], key: str, base: str) -> int:
    value = obj.get(key)
    path = _join(base, key)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    # Some deployments send numeric ids as strings.
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ResponseParseError(
        f"expected an integer at '{path}', found {_type_name(value)}",
        path=path,
        code="invalid_response",
    )


def _require_object(value: object, path: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ResponseParseError(
            f"expected an object at '{path}', found {_type_name(value)}",
            path=path,
            code="invalid_response",
        )
    return value


def parse_timestamp(value: object, *, path: str = "timestamp") -> datetime:
    """Parse an ISO-8601 timestamp such as ``"2026-11-20T10:15:02Z"`` (§4, §5, §7).

    Args:
        value: the JSON value; a string with ``Z``, an offset, or no zone (read as UTC).
        path: dotted path used in the error.

    Returns:
        A timezone-aware ``datetime`` in UTC.

    Raises:
        ResponseParseError: not a string, or not an ISO-8601 timestamp.
    """
    if not isinstance(value, str):
        raise ResponseParseError(
            f"expected a timestamp string at '{path}', found {_type_name(value)}",
            path=path,
            code="invalid_response",
        )
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ResponseParseError(
            f"unreadable timestamp at '{path}'", path=path, code="invalid_response"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_prescription_token(
    body: object, *, path: Sequence[str] = DEFAULT_PRESCRIPTION_ID_PATH
) -> str:
    """Extract the prescription token from an issue success body (§4).

    Args:
        body: the decoded JSON body, e.g.
            ``{"success": true, "data": {"prescription": {"id": "SRXC49F3D4F66A7", ...}}}``.
        path: keys leading to the token (``ConnectorSettings.prescription_id_path``).

    Returns:
        The token as a non-empty string (surrounding whitespace removed).

    Raises:
        ResponseParseError: any step is missing, null or not an object, or the
            token is not a non-empty string; ``path`` names where it failed.
    """
    keys = tuple(path)
    if not keys:
        raise ValueError("path must name at least one key")
    parent = value_at(body, keys[:-1])
    parent_path = ".".join(keys[:-1])
    obj = _require_object(parent, parent_path or "<body>")
    return _required_str(obj, keys[-1], parent_path)


def _parse_history(value: object, base: str) -> tuple[StatusChange, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ResponseParseError(
            f"expected an array at '{base}', found {_type_name(value)}",
            path=base,
            code="invalid_response",
        )
    changes = []
    for index, item in enumerate(value):
        item_path = _join(base, index)
        entry = _require_object(item, item_path)
        status = _required_str(entry, "status", item_path)
        at = parse_timestamp(entry.get("at"), path=_join(item_path, "at"))
        changes.append(StatusChange(status, at))
    return tuple(changes)


def parse_prescription(item: object, *, path: str = "prescription") -> PlatformPrescription:
    """Read one prescription object from a read or lookup body (§4, §5).

    Args:
        item: the prescription object itself (``data.prescription`` of a read,
            or one element of ``data.prescriptions`` of a lookup), e.g.
            ``{"id": "SRX...", "status": "signed", "client_ref_id": "rx-42",
            "created_at": "2026-11-20T10:15:02Z", "history": [{"status": "issued", "at": "..."}]}``.
        path: dotted path of ``item`` used in errors.

    Returns:
        A :class:`~connector.results.PlatformPrescription`; ``client_ref_id``
        and ``created_at`` are None when absent, ``history`` empty when absent.

    Raises:
        ResponseParseError: not an object, ``id``/``status`` missing or not a
            string, or a timestamp or history entry present but malformed.
    """
    obj = _require_object(item, path)
    created = obj.get("created_at")
    return PlatformPrescription(
        platform_token=_required_str(obj, "id", path),
        status=_required_str(obj, "status", path),
        client_ref_id=_optional_str(obj, "client_ref_id"),
        created_at=None
        if created is None
        else parse_timestamp(created, path=_join(path, "created_at")),
        history=_parse_history(obj.get("history"), _join(path, "history")),
    )


def parse_clinic(item: object, *, path: str = "clinic") -> Clinic:
    """Read one clinic (§3): ``{"id": 994, "display_id": "201334", "name": "..."}``.

    Raises:
        ResponseParseError: ``id`` not an integer, or ``name`` missing.
    """
    obj = _require_object(item, path)
    display = obj.get("display_id")
    return Clinic(
        id=_required_int(obj, "id", path),
        display_id=str(display) if isinstance(display, str | int) else "",
        name=_required_str(obj, "name", path),
    )


def parse_contact(item: object, *, path: str = "contact") -> Contact:
    """Read one pharmacy contact (§3).

    Returns:
        A :class:`~connector.results.Contact`; ``group``, ``email`` and
        ``address`` are None when absent.

    Raises:
        ResponseParseError: ``branch_id`` not an integer, or ``name`` missing.
    """
    obj = _require_object(item, path)
    raw_address = obj.get("address")
    address = None
    if isinstance(raw_address, dict):
        address = ContactAddress(
            line1=_optional_str(raw_address, "line1") or "",
            city=_optional_str(raw_address, "city") or "",
            post_code=_optional_str(raw_address, "post_code") or "",
        )
    return Contact(
        branch_id=_required_int(obj, "branch_id", path),
        name=_required_str(obj, "name", path),
        group=_optional_str(obj, "group"),
        email=_optional_str(obj, "email"),
        address=address,
    )


def parse_medicine(item: object, *, path: str = "medicine") -> Medicine:
    """Read one medicine (§3): ``{"vpid": "...", "description": "...", "controlled_schedule": null}``.

    Raises:
        ResponseParseError: ``vpid`` or ``description`` missing.
    """
    obj = _require_object(item, path)
    schedule = obj.get("controlled_schedule")
    if isinstance(schedule, bool) or not isinstance(schedule, int | str):
        schedule = None
    return Medicine(
        vpid=_required_str(obj, "vpid", path),
        description=_required_str(obj, "description", path),
        controlled_schedule=schedule,
    )

"""Tolerant readers for platform success bodies (contract §1, §3, §4, §5).

Each reader accepts whatever JSON came back and either returns a typed value or
raises :class:`~connector.errors.ResponseParseError` naming the dotted path that
failed and the JSON type found there; never ``KeyError``/``TypeError``, and
never the value itself (it may be PHI or a token). Extra keys are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

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
    "MAX_JSON_DEPTH",
    "JsonBodyError",
    "ResponseParseError",
    "parse_clinic",
    "parse_json_object",
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


# -- the one strict JSON decoder for bodies we accept (webhook events, API request bodies) --
#
# Before any field is read, a body is refused when it is not UTF-8 JSON (RFC 8259 section
# 8.1; no NaN/Infinity) or not an object (malformed_json); when an object repeats a key
# (duplicate_key: RFC 8259 section 4 leaves duplicate names to each parser, so two readers
# of one body could disagree); or when it nests deeper than MAX_JSON_DEPTH
# (too_deeply_nested).

# No body the service accepts nests deeper than 3 (a send, a void, a region update, a
# platform event with its field errors); 32 leaves room for the platform's growth while
# keeping the parser far from Python's recursion limit.
MAX_JSON_DEPTH = 32


class JsonBodyError(ValueError):
    """A body refused by :func:`parse_json_object`: ``code`` and a safe ``message`` (no body text).

    ``code`` is ``malformed_json``, ``duplicate_key`` or ``too_deeply_nested``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise JsonBodyError(
                "duplicate_key", "A key appears twice in one JSON object; send each key once."
            )
        obj[key] = value
    return obj


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are Python's extensions, not JSON (RFC 8259 section 6).
    raise JsonBodyError("malformed_json", "The body is not valid JSON.")


def _depth(value: Any) -> int:
    """Nesting depth of arrays/objects (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, level)
        if level > MAX_JSON_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """Parse ``raw`` (UTF-8 bytes or text) as one JSON object under the module's rules.

    Returns the object as a dict. Raises :class:`JsonBodyError` (``malformed_json``,
    ``duplicate_key``, ``too_deeply_nested``); never ``RecursionError``.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        body = json.loads(
            text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
    except RecursionError:
        raise JsonBodyError("too_deeply_nested", _too_deep()) from None
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, JsonBodyError):
            raise
        raise JsonBodyError("malformed_json", "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise JsonBodyError("malformed_json", "The body is not a JSON object.")
    if _depth(body) > MAX_JSON_DEPTH:
        raise JsonBodyError("too_deeply_nested", _too_deep())
    return body


def _too_deep() -> str:
    return f"The body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels."

"""The event contracts under ``contracts/events/`` and the rules that keep them stable.

A pure module (stdlib and jsonschema only) so that the publisher in ``app``
and downstream consumers such as ``notifier`` validate against the same code.

Each event type has one JSON Schema (2020-12) per major version,
``<type>.v<N>.json``. A committed version may only change compatibly: a
consumer written against it must keep accepting every message, and a message
valid under it must stay valid. :func:`compatibility_problems` compares a
schema with the snapshot (``<type>.v<N>.lock.json``) taken when the version
was published; anything it reports needs a new major version (docs/events.md).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

log = logging.getLogger("contracts.event_schemas")

CONTRACTS_DIR = Path(__file__).resolve().parent / "events"
STATUS_CHANGED = "prescription.status_changed"
STATUS_CHANGED_VERSION = 1


class ContractError(ValueError):
    """A message does not validate against its schema; ``errors`` maps JSON paths to messages."""

    def __init__(self, message: str, errors: dict[str, str]) -> None:
        super().__init__(message)
        self.errors = errors


def schema_path(event_type: str, version: int) -> Path:
    """Return ``contracts/events/<event_type>.v<version>.json``."""
    return CONTRACTS_DIR / f"{event_type}.v{version}.json"


def lock_path(event_type: str, version: int) -> Path:
    """Return the compatibility snapshot of that schema, ``...v<version>.lock.json``."""
    return CONTRACTS_DIR / f"{event_type}.v{version}.lock.json"


@cache
def load_schema(event_type: str, version: int) -> dict[str, Any]:
    """Read and check the schema for ``event_type`` ``version`` (cached per process).

    Raises ``FileNotFoundError`` for an unknown type/version and
    ``jsonschema.SchemaError`` for a schema that is not valid 2020-12.
    """
    schema = json.loads(schema_path(event_type, version).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


# jsonschema's own format checkers (``uuid`` here; ``date-time`` only when
# rfc3339-validator is installed, which it is not): the reference semantics.
FORMAT_CHECKER = Draft202012Validator.FORMAT_CHECKER


@cache
def _validator(event_type: str, version: int) -> Draft202012Validator:
    return Draft202012Validator(load_schema(event_type, version), format_checker=FORMAT_CHECKER)


class UnsupportedSchema(ValueError):
    """:func:`compile_check` met a keyword (or value) it does not implement (``keyword``)."""

    def __init__(self, keyword: str) -> None:
        super().__init__(f"compile_check does not implement {keyword!r}")
        self.keyword = keyword


# Keywords without an assertion (annotations): nothing to check.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "examples", "default"}
)
_SCALARS = (str, int, float, bool, type(None))


def _is_integer(value: Any) -> bool:
    # Draft 6+ (so 2020-12): a float with no fractional part is an integer; a bool is not.
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# The JSON types that are exactly one Python class each (after json.loads).
_PLAIN_TYPES: dict[str, type] = {
    "string": str,
    "boolean": bool,
    "null": type(None),
    "object": dict,
    "array": list,
}


def _type_check(names: list[str]) -> Callable[[Any], bool]:
    plain = tuple(_PLAIN_TYPES[n] for n in names if n in _PLAIN_TYPES)
    integer, number = "integer" in names, "number" in names
    unknown = set(names) - set(_PLAIN_TYPES) - {"integer", "number"}
    if unknown:
        raise UnsupportedSchema(f"type {sorted(unknown)}")
    if not (integer or number):
        return lambda v: isinstance(v, plain)
    numeric = _is_number if number else _is_integer
    return lambda v: isinstance(v, plain) or numeric(v)


def _all_of(checks: list[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        for one in checks:
            if not one(value):
                return False
        return True

    return check


def _properties(subs: dict[str, Callable[[Any], bool]]) -> Callable[[Any], bool]:
    items = tuple(subs.items())

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        for name, sub in items:
            if name in value and not sub(value[name]):
                return False
        return True

    return check


def _equal(value: Any, expected: Any) -> bool:
    # jsonschema's ``equal`` for a scalar ``expected``: strings compare as strings,
    # True/False are never 1/0, 1 == 1.0.
    if isinstance(value, str) or isinstance(expected, str):
        return value == expected
    if isinstance(value, bool) or isinstance(expected, bool):
        return value is expected
    return bool(value == expected) if isinstance(value, _SCALARS) else False


def compile_check(schema: dict[str, Any]) -> Callable[[Any], bool]:
    """Compile ``schema`` into a predicate: True iff the instance validates (Draft 2020-12).

    The predicate gives the same answer as ``Draft202012Validator(schema,
    format_checker=FORMAT_CHECKER).is_valid`` (``tests/unit/test_event_contract.py``
    checks this on generated messages) at a tenth of its cost, because the
    schema walk is done once here instead of once per message. It implements
    the keywords the committed contracts use: ``type``, ``const``, ``enum``
    (scalar values), ``required``, ``properties``, ``additionalProperties``
    (``false`` or ``true``), ``pattern``, ``minLength``, ``maxLength``,
    ``minimum``, ``maximum``, ``format`` (asserted through jsonschema's
    :data:`FORMAT_CHECKER`, as the reference does) and annotations. Anything
    else raises :class:`UnsupportedSchema`: callers then keep the full
    validator, so a schema can never outgrow this silently.
    """
    checks: list[Callable[[Any], bool]] = []
    for keyword, value in schema.items():
        if keyword in _ANNOTATIONS:
            continue
        if keyword == "type":
            checks.append(_type_check([value] if isinstance(value, str) else list(value)))
        elif keyword == "const" and isinstance(value, _SCALARS):
            checks.append(lambda v, c=value: _equal(v, c))
        elif keyword == "enum" and all(isinstance(e, _SCALARS) for e in value):
            if all(isinstance(e, str) for e in value):
                checks.append(
                    lambda v, options=frozenset(value): isinstance(v, str) and v in options
                )
            else:
                checks.append(lambda v, options=tuple(value): any(_equal(v, o) for o in options))
        elif keyword == "required":
            checks.append(
                lambda v, names=frozenset(value): not isinstance(v, dict) or names.issubset(v)
            )
        elif keyword == "properties":
            checks.append(_properties({name: compile_check(sub) for name, sub in value.items()}))
        elif (
            keyword == "additionalProperties"
            and value in (True, False)
            and "patternProperties" not in schema
        ):
            if value is False:
                known = frozenset(schema.get("properties", {}))
                checks.append(lambda v, known=known: not isinstance(v, dict) or known.issuperset(v))
        elif keyword == "pattern":
            search = re.compile(value).search
            checks.append(lambda v, search=search: not isinstance(v, str) or search(v) is not None)
        elif keyword == "minLength":
            checks.append(lambda v, n=value: not isinstance(v, str) or len(v) >= n)
        elif keyword == "maxLength":
            checks.append(lambda v, n=value: not isinstance(v, str) or len(v) <= n)
        elif keyword == "minimum":
            checks.append(lambda v, n=value: not _is_number(v) or v >= n)
        elif keyword == "maximum":
            checks.append(lambda v, n=value: not _is_number(v) or v <= n)
        elif keyword == "format":
            checks.append(lambda v, f=value: FORMAT_CHECKER.conforms(v, f))
        else:
            raise UnsupportedSchema(keyword)
    return _all_of(checks)


@cache
def _fast_check(event_type: str, version: int) -> Callable[[Any], bool] | None:
    try:
        return compile_check(load_schema(event_type, version))
    except UnsupportedSchema as exc:
        log.warning("%s v%d: %s; validating with jsonschema only", event_type, version, exc)
        return None


def validate_event(
    message: dict[str, Any],
    *,
    event_type: str = STATUS_CHANGED,
    version: int = STATUS_CHANGED_VERSION,
) -> None:
    """Raise :class:`ContractError` unless ``message`` validates against its schema.

    A valid message costs one call of the compiled predicate
    (:func:`compile_check`, about 10 µs); only a failing one goes through
    jsonschema (with formats asserted), which names the violations. The
    error lists every violation by JSON path (``$.prescription.route``);
    the messages name fields, never values, so they are safe to log.
    """
    fast = _fast_check(event_type, version)
    if fast is not None and fast(message):
        return
    errors = {
        "$"
        + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path
        ): err.validator
        for err in _validator(event_type, version).iter_errors(message)
    }
    if errors:
        raise ContractError(
            f"message does not match {event_type} v{version}",
            {k: f"fails {v}" for k, v in errors.items()},
        )


def _types(node: dict[str, Any]) -> list[str]:
    kind = node.get("type", [])
    return sorted([kind] if isinstance(kind, str) else kind)


def schema_snapshot(schema: dict[str, Any]) -> dict[str, Any]:
    """The parts of ``schema`` compatibility depends on, for every object node.

    Returns ``{path: {"required": [...], "additional": bool, "properties":
    {name: {"types": [...], "enum": [...]|None, "const": ...|None}}}}`` where
    ``path`` is ``$`` or ``$.prescription``; it is what the lock file stores.
    """
    snapshot: dict[str, Any] = {}

    def walk(path: str, node: dict[str, Any]) -> None:
        props = node.get("properties", {})
        snapshot[path] = {
            "required": sorted(node.get("required", [])),
            "additional": node.get("additionalProperties", True) is not False,
            "properties": {
                name: {"types": _types(sub), "enum": sub.get("enum"), "const": sub.get("const")}
                for name, sub in sorted(props.items())
            },
        }
        for name, sub in props.items():
            if "object" in _types(sub):
                walk(f"{path}.{name}", sub)

    walk("$", schema)
    return snapshot


def compatibility_problems(locked: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """What in ``schema`` breaks consumers or producers of the ``locked`` snapshot.

    Reported (each needs a new major version): a removed object or property,
    a newly required field, a field no longer required (consumers rely on it),
    a narrowed type or enum, a changed const, and a closed object opened or an
    open one closed. Adding an optional property or widening a type is allowed.
    Returns human-readable lines, empty when compatible.
    """
    current = schema_snapshot(schema)
    problems: list[str] = []
    for path, old in locked.items():
        new = current.get(path)
        if new is None:
            problems.append(f"{path}: object removed")
            continue
        for name in sorted(set(new["required"]) - set(old["required"])):
            problems.append(f"{path}.{name}: newly required")
        for name in sorted(set(old["required"]) - set(new["required"])):
            problems.append(f"{path}.{name}: no longer required")
        if old["additional"] != new["additional"]:
            problems.append(f"{path}: additionalProperties changed")
        for name, before in old["properties"].items():
            after = new["properties"].get(name)
            if after is None:
                problems.append(f"{path}.{name}: removed")
                continue
            lost = set(before["types"]) - set(after["types"])
            if lost:
                problems.append(f"{path}.{name}: type narrowed (lost {', '.join(sorted(lost))})")
            if (
                before["enum"] is not None
                and after["enum"] is not None
                and set(before["enum"]) - set(after["enum"])
            ):
                problems.append(f"{path}.{name}: enum narrowed")
            if before["enum"] is None and after["enum"] is not None:
                problems.append(f"{path}.{name}: enum added (narrowed)")
            if before["const"] != after["const"]:
                problems.append(f"{path}.{name}: const changed")
    return problems

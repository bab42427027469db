"""The event contracts under ``contracts/events/`` and the rules that keep them stable.

Each event type has one JSON Schema (2020-12) per major version,
``<type>.v<N>.json``. A committed version may only change compatibly: a
consumer written against it must keep accepting every message, and a message
valid under it must stay valid. :func:`compatibility_problems` compares a
schema with the snapshot (``<type>.v<N>.lock.json``) taken when the version
was published; anything it reports needs a new major version (docs/events.md).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from app.config import REPO_ROOT

CONTRACTS_DIR = REPO_ROOT / "contracts" / "events"
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


@cache
def _validator(event_type: str, version: int) -> Draft202012Validator:
    return Draft202012Validator(load_schema(event_type, version))


def validate_event(message: dict[str, Any], *, event_type: str = STATUS_CHANGED, version: int = STATUS_CHANGED_VERSION) -> None:
    """Raise :class:`ContractError` unless ``message`` validates against its schema.

    The error lists every violation by JSON path (``$.prescription.route``);
    the messages name fields, never values, so they are safe to log.
    """
    errors = {
        "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path): err.validator
        for err in _validator(event_type, version).iter_errors(message)
    }
    if errors:
        raise ContractError(f"message does not match {event_type} v{version}", {k: f"fails {v}" for k, v in errors.items()})


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
            if before["enum"] is not None and after["enum"] is not None and set(before["enum"]) - set(after["enum"]):
                problems.append(f"{path}.{name}: enum narrowed")
            if before["enum"] is None and after["enum"] is not None:
                problems.append(f"{path}.{name}: enum added (narrowed)")
            if before["const"] != after["const"]:
                problems.append(f"{path}.{name}: const changed")
    return problems

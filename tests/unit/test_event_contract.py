"""The v1 event contract: committed examples validate, bad ones do not, and v1 only changes compatibly."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from app.events.contract import (
    CONTRACTS_DIR,
    STATUS_CHANGED,
    ContractError,
    compatibility_problems,
    load_schema,
    lock_path,
    schema_snapshot,
    validate_event,
)

EXAMPLES = sorted((CONTRACTS_DIR / "examples").glob("*.json"))
INVALID = sorted((CONTRACTS_DIR / "invalid").glob("*.json"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_are_committed_examples_of_both_kinds() -> None:
    assert len(EXAMPLES) >= 3 and len(INVALID) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_committed_examples_validate(path: Path) -> None:
    validate_event(_load(path))


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_committed_counter_examples_are_refused(path: Path) -> None:
    with pytest.raises(ContractError):
        validate_event(_load(path))


def test_a_missing_field_is_named_by_path_without_its_value() -> None:
    message = _load(EXAMPLES[0])
    del message["prescription"]["route"]
    message["to"] = "Jane Example"  # looks like PHI: must not be echoed
    with pytest.raises(ContractError) as err:
        validate_event(message)
    assert err.value.errors == {"$.prescription": "fails required", "$.to": "fails pattern"}
    assert "Jane" not in str(err.value) + json.dumps(err.value.errors)


def test_every_committed_major_version_has_a_lock_and_still_matches_it() -> None:
    # The rule of docs/events.md: a committed vN only changes compatibly; anything
    # else is a new file vN+1 with its own lock.
    schemas = sorted(CONTRACTS_DIR.glob("*.v[0-9]*.json"))
    schemas = [p for p in schemas if not p.name.endswith(".lock.json")]
    assert schemas, "no committed schema"
    for path in schemas:
        event_type, version = path.name.removesuffix(".json").rsplit(".v", 1)
        schema = load_schema(event_type, int(version))
        locked = json.loads(lock_path(event_type, int(version)).read_text(encoding="utf-8"))
        assert compatibility_problems(locked, schema) == [], f"{path.name} changed incompatibly: needs v{int(version) + 1}"


def _v1() -> dict:
    return copy.deepcopy(load_schema(STATUS_CHANGED, 1))


def _locked() -> dict:
    return schema_snapshot(load_schema(STATUS_CHANGED, 1))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: s["properties"].pop("request_id"), "$.request_id: removed"),
        (lambda s: s["properties"]["prescription"]["properties"].pop("pharmacy_id"), "$.prescription.pharmacy_id: removed"),
        (lambda s: s["properties"]["prescription"]["required"].append("clinic_id")
         or s["properties"]["prescription"]["properties"].update(clinic_id={"type": "integer"}),
         "$.prescription.clinic_id: newly required"),
        (lambda s: s["properties"]["from"].update(type="string"), "$.from: type narrowed (lost null)"),
        (lambda s: s["properties"]["source"].update(enum=["service", "api"]), "$.source: enum narrowed"),
        (lambda s: s["properties"]["version"].update(const=2), "$.version: const changed"),
        (lambda s: s["required"].remove("request_id"), "$.request_id: no longer required"),
    ],
)
def test_incompatible_changes_are_caught(change, problem) -> None:  # type: ignore[no-untyped-def]
    schema = _v1()
    change(schema)
    assert problem in compatibility_problems(_locked(), schema)


def test_an_optional_property_or_a_wider_type_is_compatible() -> None:
    schema = _v1()
    schema["properties"]["prescription"]["properties"]["clinic_id"] = {"type": ["integer", "null"]}
    schema["properties"]["to"]["type"] = ["string", "null"]
    schema["properties"]["source"]["enum"].append("fhir")
    assert compatibility_problems(_locked(), schema) == []

"""The v1 event contract: committed examples validate, bad ones do not, and v1 only changes compatibly."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import hypothesis
import pytest
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from app.mechanisms.event_contract import (
    CONTRACTS_DIR,
    FORMAT_CHECKER,
    STATUS_CHANGED,
    ContractError,
    UnsupportedSchema,
    compatibility_problems,
    compile_check,
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
        assert compatibility_problems(locked, schema) == [], (
            f"{path.name} changed incompatibly: needs v{int(version) + 1}"
        )


def _v1() -> dict:
    return copy.deepcopy(load_schema(STATUS_CHANGED, 1))


def _locked() -> dict:
    return schema_snapshot(load_schema(STATUS_CHANGED, 1))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: s["properties"].pop("request_id"), "$.request_id: removed"),
        (
            lambda s: s["properties"]["prescription"]["properties"].pop("pharmacy_id"),
            "$.prescription.pharmacy_id: removed",
        ),
        (
            lambda s: (
                s["properties"]["prescription"]["required"].append("clinic_id")
                or s["properties"]["prescription"]["properties"].update(
                    clinic_id={"type": "integer"}
                )
            ),
            "$.prescription.clinic_id: newly required",
        ),
        (
            lambda s: s["properties"]["from"].update(type="string"),
            "$.from: type narrowed (lost null)",
        ),
        (
            lambda s: s["properties"]["source"].update(enum=["service", "api"]),
            "$.source: enum narrowed",
        ),
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


# -- the compiled check (what the publisher runs per message) is jsonschema's answer ---------


def _committed_schemas() -> list[dict]:
    paths = [
        p for p in sorted(CONTRACTS_DIR.glob("*.v[0-9]*.json")) if not p.name.endswith(".lock.json")
    ]
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def test_every_committed_schema_compiles_so_the_fast_check_is_in_use() -> None:
    for schema in _committed_schemas():
        compile_check(schema)  # raises UnsupportedSchema for a keyword it does not implement


@pytest.mark.parametrize(
    "extra",
    [
        {"oneOf": [{"type": "string"}]},
        {"$ref": "#/$defs/x"},
        {"enum": [["a"]]},
        {"patternProperties": {"^x": {}}},
        {"type": "decimal"},
    ],
)
def test_a_keyword_the_compiler_does_not_implement_is_refused_not_ignored(extra: dict) -> None:
    with pytest.raises(UnsupportedSchema):
        compile_check({"type": "object", **extra})


_V1 = load_schema(STATUS_CHANGED, 1)
_REFERENCE = Draft202012Validator(_V1, format_checker=FORMAT_CHECKER)
_FAST = compile_check(_V1)
_PROPS = _V1["properties"]
_RX = _PROPS["prescription"]["properties"]

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 10**12)
    | st.floats(allow_nan=False, width=32)
    | st.text(max_size=24),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _near(field: dict) -> st.SearchStrategy:
    """Values around what ``field`` accepts: its pattern, enum and const, their edges, and anything."""
    options = [_json, st.sampled_from([0, 1, 1.0, 2, -1, True, False, None, "", "1"])]
    if "pattern" in field:
        options.append(st.from_regex(field["pattern"], fullmatch=True))
        options.append(
            st.from_regex(field["pattern"], fullmatch=True).map(lambda v: v.upper() + "\n")
        )
    for value in field.get("enum", []) + ([field["const"]] if "const" in field else []):
        options.append(st.sampled_from([value, str(value).upper(), f" {value}", f"{value}x"]))
    if "maxLength" in field:
        n = field["maxLength"]
        options.append(st.sampled_from(["a" * n, "a" * (n + 1), "é" * n]))
    return st.one_of(options)


def _valid() -> st.SearchStrategy:
    def value(field: dict) -> st.SearchStrategy:
        if "pattern" in field:
            return st.from_regex(field["pattern"], fullmatch=True)
        if "enum" in field:
            return st.sampled_from(field["enum"])
        if "const" in field:
            return st.just(field["const"])
        kinds = [field["type"]] if isinstance(field["type"], str) else field["type"]
        return st.one_of(
            [
                {
                    "integer": st.integers(1, 10**9),
                    "null": st.none(),
                    "string": st.text(min_size=1, max_size=field.get("maxLength", 64)),
                }[k]
                for k in kinds
            ]
        )

    rx = st.fixed_dictionaries({name: value(f) for name, f in _RX.items()})
    return st.fixed_dictionaries(
        {name: (rx if name == "prescription" else value(f)) for name, f in _PROPS.items()}
    )


@st.composite
def _messages(draw: st.DrawFn) -> object:
    message = copy.deepcopy(
        draw(st.one_of(_valid(), st.sampled_from([_load(p) for p in EXAMPLES])))
    )
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["top", "prescription"]))
        target, fields = (message, _PROPS) if where == "top" else (message.get("prescription"), _RX)
        if not isinstance(target, dict):
            break
        name = draw(st.sampled_from([*fields, "patient_name"]))
        action = draw(st.sampled_from(["set", "set", "delete"]))
        if action == "delete":
            target.pop(name, None)
        else:
            target[name] = draw(_near(fields.get(name, {})))
    if draw(st.integers(0, 30)) == 0:
        message = draw(_json)  # not even an object
    return message


@hypothesis.settings(max_examples=800, derandomize=True, database=None, deadline=None)
@hypothesis.given(message=_messages())
def test_the_compiled_check_agrees_with_jsonschema(message: object) -> None:
    # The publisher validates every message with the compiled check; this is why that
    # keeps the guarantee "every published message validates against v1 (jsonschema)".
    assert _FAST(message) == _REFERENCE.is_valid(message)


def test_the_generated_messages_are_not_all_of_one_kind() -> None:
    # The agreement above means something only if both answers occur often.
    outcomes = []

    @hypothesis.settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @hypothesis.given(message=_messages())
    def sample(message: object) -> None:
        outcomes.append(_REFERENCE.is_valid(message))

    sample()
    assert 0.15 < sum(outcomes) / len(outcomes) < 0.85

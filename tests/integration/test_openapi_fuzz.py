"""Schemathesis against ``/api/v1/openapi.json`` (Tests): the API keeps its contract.

The app is served in-process (WSGI) on the real test database with the seeded
data, once per role (patient ``pt-0001``, support, service), each with a valid
token, with positive (valid) and negative (invalid) inputs. Schemathesis'
default checks apply to every response: no 5xx, the status code is documented,
the body matches the documented schema, the content type and headers are as
documented, and invalid input is refused with a 4xx.

Bounded and deterministic for CI: a few examples per operation, derandomized
(fixed seed), no example database. Besides random ids, the prescription
endpoints are also driven with seeded ids: 1 (pt-0001's own) and 2 (another
patient's). The webhook receiver is documented but not fuzzed here: it
authenticates with an HMAC over the raw body, not a token
(tests/unit/test_webhook_receiver.py covers it).

Schemathesis' own pytest plugin (``schema.parametrize``) is not used: its lazy
fixture loader sets ``Node._nodeid``, which pytest 9 no longer has. Its Python
API (``as_strategy`` + ``call_and_validate``) runs the same checks.

Nothing counts as clean unless it ran: every operation of the document is driven
(the webhook receiver is the one named exception), a check failure is reported as a
failure, and anything else schemathesis or hypothesis raises (a crash while generating,
such as the "AST constructor recursion depth mismatch" seen from hypothesis on Python
3.11) is reported as an internal error, which fails the test too. "Unsatisfiable" is
accepted only in negative mode for an operation with no input at all.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from app.interfaces.openapi import DOCUMENT_PATH, build_spec
from tests.conftest import bearer

MAX_EXAMPLES = 10
DOCUMENT = build_spec()
SUBJECTS = {"patient": "pt-0001", "support": "support-tests", "service": "svc-tests"}
SEEDED_IDS = (
    1,
    2,
)  # pt-0001's prescription, another patient's (scripts/seed/002_test_prescriptions.sql)
WEBHOOK = "/webhooks/platform"
# Unknown query parameters are ignored by design (app/interfaces/directory_schemas.py: cache-busters),
# and the token is ours, valid for the role: schemathesis generates neither. A send of a
# schema-valid body may still be refused with 422 by the pre-send checks (unknown pharmacy,
# another region's, a controlled drug: app/services/prescriptions.py), as documented; a
# search whose q folds to nothing (only symbols) is refused with 422, as documented: no
# regular expression says "folds to nothing".
CONFIG = """
[generation]
allow-extra-parameters = false
with-security-parameters = false

[[operations]]
include-operation-id = "sendPrescription"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-operation-id = "searchPharmacies"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "422"]
# Exactly one of ?reference= and ?platform_token= (OpenAPI 3.0 cannot say so): neither is 422.
[[operations]]
include-operation-id = "lookupPrescription"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "422"]
"""
SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


def _run(operation: Any, headers: dict[str, str], mode: GenerationMode, **fixed: Any) -> None:
    @SETTINGS
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def check(case: Any) -> None:
        case.call_and_validate(headers=headers)

    check()


def _has_input(operation: Any) -> bool:
    """True when the documented operation takes any parameter or body."""
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody"))


def fuzz_problems(operation: Any, mode: GenerationMode, run: Any, **fixed: Any) -> list[str]:
    """Run ``run(**fixed)`` (one hypothesis run of ``operation``) and return what went wrong.

    Empty when the run finished with every check passing. A check failure (schemathesis'
    ``Failure``/``FailureGroup``, an ``AssertionError``) is ``"failure"``; anything else is
    ``"internal error"``, never counted clean. ``Unsatisfiable`` is clean only in negative
    mode for an operation without input (nothing to make invalid).
    """
    label = f"{operation.label} {fixed or ''}"
    try:
        run(**fixed)
    except hypothesis.errors.Unsatisfiable as exc:
        if mode is GenerationMode.NEGATIVE and not _has_input(operation):
            return []
        return [f"internal error: {label}: could not generate ({exc})"]
    except (AssertionError, BaseExceptionGroup) as exc:
        return [f"failure: {label}: {exc}"]
    except Exception as exc:  # noqa: BLE001 - a crash must fail the test, never pass as clean
        return [f"internal error: {label}: {type(exc).__name__}: {exc}"]
    return []


@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"]
)
@pytest.mark.parametrize("role", sorted(SUBJECTS))
def test_api_keeps_its_documented_contract(app, role: str, mode: GenerationMode) -> None:  # type: ignore[no-untyped-def]
    schema = schemathesis.openapi.from_wsgi(
        DOCUMENT_PATH, app, config=SchemathesisConfig.from_str(CONFIG)
    )
    headers = bearer(app, role=role, subject=SUBJECTS[role])
    failures: list[str] = []
    driven: set[str] = set()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "no operation in the document"
    for operation in operations:
        if operation.path == WEBHOOK:
            continue  # HMAC-authenticated, not a bearer token: tests/unit/test_webhook_receiver.py
        runs: list[dict[str, Any]] = [{}]
        if "{prescription_id}" in operation.path and mode is GenerationMode.POSITIVE:
            runs += [{"path_parameters": {"prescription_id": pid}} for pid in SEEDED_IDS]
        for fixed in runs:
            failures += fuzz_problems(
                operation, mode, lambda op=operation, **f: _run(op, headers, mode, **f), **fixed
            )
        driven.add(operation.label)
    documented = {
        f"{method.upper()} {path}"
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in ("get", "put", "post", "patch", "delete")
    }
    # Not driven, by name: the webhook (above) and the document itself, which schemathesis
    # leaves out of the operations it loads from that document. Any other gap fails here.
    assert documented - driven == {f"POST {WEBHOOK}", f"GET {DOCUMENT_PATH}"}, documented - driven
    assert not failures, "\n\n".join(failures)


class _FakeOperation:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.label = "GET /fake"
        self.definition = type("Definition", (), {"raw": raw})()


@pytest.mark.parametrize(
    ("raised", "mode", "raw", "expected"),
    [
        (
            SystemError("AST constructor recursion depth mismatch"),
            GenerationMode.POSITIVE,
            {},
            "internal error",
        ),
        (RecursionError("deep"), GenerationMode.NEGATIVE, {}, "internal error"),
        (
            hypothesis.errors.Unsatisfiable("x"),
            GenerationMode.NEGATIVE,
            {"parameters": [{"name": "q"}]},
            "internal error",
        ),
        (hypothesis.errors.Unsatisfiable("x"), GenerationMode.POSITIVE, {}, "internal error"),
        (AssertionError("ST202"), GenerationMode.POSITIVE, {}, "failure"),
        (hypothesis.errors.Unsatisfiable("x"), GenerationMode.NEGATIVE, {}, None),
        (None, GenerationMode.POSITIVE, {}, None),
    ],
    ids=[
        "ast-crash",
        "recursion",
        "unsatisfiable-with-input",
        "unsatisfiable-positive",
        "check-failure",
        "nothing-to-break",
        "clean",
    ],
)
def test_an_internal_error_is_never_counted_clean(raised, mode, raw, expected) -> None:  # type: ignore[no-untyped-def]
    def run() -> None:
        if raised is not None:
            raise raised

    problems = fuzz_problems(_FakeOperation(raw), mode, run)

    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith(expected), problems

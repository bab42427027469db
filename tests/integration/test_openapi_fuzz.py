"""Schemathesis against ``/api/v1/openapi.json`` (issue 8, Tests): the API keeps its contract.

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
"""

from __future__ import annotations

from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from app.openapi import DOCUMENT_PATH
from tests.conftest import bearer

MAX_EXAMPLES = 10
SUBJECTS = {"patient": "pt-0001", "support": "support-tests", "service": "svc-tests"}
SEEDED_IDS = (1, 2)  # pt-0001's prescription, another patient's (scripts/seed/002_test_prescriptions.sql)
WEBHOOK = "/webhooks/platform"
# Unknown query parameters are ignored by design (app/directory_schemas.py: cache-busters),
# and the token is ours, valid for the role: schemathesis generates neither. A send of a
# schema-valid body may still be refused with 422 by the pre-send checks (unknown pharmacy,
# another region's, a controlled drug: app/services/prescriptions.py), as documented.
CONFIG = """
[generation]
allow-extra-parameters = false
with-security-parameters = false

[[operations]]
include-operation-id = "sendPrescription"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

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


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("role", sorted(SUBJECTS))
def test_api_keeps_its_documented_contract(app, role: str, mode: GenerationMode) -> None:  # type: ignore[no-untyped-def]
    schema = schemathesis.openapi.from_wsgi(DOCUMENT_PATH, app, config=SchemathesisConfig.from_str(CONFIG))
    headers = bearer(app, role=role, subject=SUBJECTS[role])
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "no operation in the document"
    for operation in operations:
        if operation.path == WEBHOOK:
            continue
        runs: list[dict[str, Any]] = [{}]
        if "{prescription_id}" in operation.path and mode is GenerationMode.POSITIVE:
            runs += [{"path_parameters": {"prescription_id": pid}} for pid in SEEDED_IDS]
        for fixed in runs:
            try:
                _run(operation, headers, mode, **fixed)
            except hypothesis.errors.Unsatisfiable:
                # Negative mode on an operation with no input (GET /regions): nothing to break.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
                failures.append(f"{operation.label} {fixed or ''}: {exc}")
    assert not failures, "\n\n".join(failures)

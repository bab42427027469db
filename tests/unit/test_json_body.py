"""One JSON loader for every body (connector.parsing.parse_json_object): duplicate keys,
non-objects, nesting.

Every API refusal happens before any schema runs, with the one error shape; the webhook
receiver decodes the platform's bodies with the same function (its dead letters are in
tests/unit/test_webhook_receiver.py).
"""

from __future__ import annotations

import json

import pytest

from connector.parsing import MAX_JSON_DEPTH, JsonBodyError, parse_json_object
from tests.conftest import bearer

SEND = "/api/v1/prescriptions/1/send"
ME = "/api/v1/me"
VOID = "/api/v1/prescriptions/1/void"


def _nested(depth: int) -> str:
    return '{"reason": ' + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}"


@pytest.mark.parametrize(
    ("path", "role", "method", "body"),
    [
        (SEND, "patient", "post", '{"pharmacy_id": 999999, "pharmacy_id": 1}'),
        (ME, "patient", "patch", '{"region": "B", "region": "A"}'),
        (VOID, "support", "post", '{"reason": "typo", "reason": "other"}'),
        (SEND, "patient", "post", '{"pharmacy_id": 1, "x": {"a": 1, "a": 2}}'),
    ],
    ids=["send", "patch-me", "void", "nested-object"],
)
def test_duplicate_keys_are_refused_400_before_any_schema(
    app, client, path, role, method, body
) -> None:  # type: ignore[no-untyped-def]
    headers = bearer(app, role=role, subject="pt-0001" if role == "patient" else "support-1")

    response = getattr(client, method)(
        path, headers=headers, data=body, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.get_json() == {
        "code": "duplicate_key",
        "message": "A key appears twice in one JSON object; send each key once.",
        "errors": {},
    }


@pytest.mark.parametrize("body", ["[]", '"text"', "1", "null", '[{"pharmacy_id": 1}]'])
def test_a_body_that_is_not_an_object_is_refused_400(app, client, body) -> None:  # type: ignore[no-untyped-def]
    response = client.patch(
        ME, headers=bearer(app, role="patient"), data=body, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.get_json()["code"] == "malformed_json"


def test_nesting_deeper_than_the_limit_is_refused_400(app, client) -> None:  # type: ignore[no-untyped-def]
    headers = bearer(app, role="support", subject="support-1")

    deep = client.post(
        VOID, headers=headers, data=_nested(MAX_JSON_DEPTH + 1), content_type="application/json"
    )
    very_deep = client.post(
        VOID, headers=headers, data=_nested(100_000), content_type="application/json"
    )
    at_limit = client.post(
        VOID, headers=headers, data=_nested(MAX_JSON_DEPTH), content_type="application/json"
    )

    assert deep.status_code == 400 and deep.get_json()["code"] == "too_deeply_nested"
    assert very_deep.status_code == 400 and very_deep.get_json()["code"] == "too_deeply_nested"
    # Within the limit the schema runs and refuses the non-text reason, field by field.
    assert at_limit.status_code == 422 and "reason" in at_limit.get_json()["errors"]


def test_parse_json_object_is_the_same_rule_for_raw_bytes() -> None:
    assert parse_json_object(b'{"a": {"b": [1, 2]}}') == {"a": {"b": [1, 2]}}
    for raw, code in (
        (b'{"a": 1, "a": 2}', "duplicate_key"),
        (b"[1]", "malformed_json"),
        (b"\xff{}", "malformed_json"),
        (b"{", "malformed_json"),
        (b'{"a": NaN}', "malformed_json"),
        (_nested(MAX_JSON_DEPTH + 1).encode(), "too_deeply_nested"),
    ):
        with pytest.raises(JsonBodyError) as caught:
            parse_json_object(raw)
        assert caught.value.code == code, raw
    assert json.loads('{"a": 1, "a": 2}') == {"a": 2}  # what the standard parser alone would do

"""The input boundary (app/interfaces/text_input.py, app/interfaces/json_body.py): no text answers a 5xx.

Every endpoint of the Flask ``url_map`` and every operation of ``docs/openapi.json`` is
driven with hypothesis-generated text holding control characters (C0, DEL, C1, NUL), lone
surrogates and long strings, in each place text enters: path parameters, query parameters
(the documented ones plus the FHIR search's), JSON body fields, the stored headers
(``Idempotency-Key``, ``X-Request-Id``) and the token's ``sub`` claim. On PostgreSQL a NUL
byte used to reach psycopg2 (``ValueError``) and answer 500; every answer must now be below
500, and a refused value answers 422 naming the field (401 for a token claim).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import hypothesis
import jwt
import pytest
from hypothesis import strategies as st

from app import create_app
from app.foundation.config import REPO_ROOT
from tests.conftest import bearer, make_settings

OPENAPI = json.loads(Path(REPO_ROOT, "docs", "openapi.json").read_text(encoding="utf-8"))
# Query parameters tried on every endpoint besides the documented ones: the FHIR search's
# and the directory's (an endpoint that does not read one must still not fail on it).
EXTRA_QUERY = ("q", "region", "page", "per_page", "patient", "_count", "_offset")
STORED_HEADERS = ("Idempotency-Key", "X-Request-Id")
METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")
SKIPPED_ENDPOINTS = {"static"}  # files from disk: no text reaches a query or a log

_HOSTILE_CHARS = st.one_of(
    st.characters(codec=None, categories=["Cc", "Cs"]),  # controls, lone surrogates
    st.sampled_from(["\x00", "\x7f", "\x85", "\x9f", "\ud800", "\udfff", "\t", "\n"]),
    st.characters(categories=["Lu", "Ll", "Nd", "Po", "Zs"]),
)
HOSTILE_TEXT = st.one_of(
    st.text(_HOSTILE_CHARS, min_size=1, max_size=40),
    # Long strings: past every documented length, with a NUL inside.
    st.integers(min_value=200, max_value=5000).map(lambda n: "a" * n + "\x00" + "b" * 10),
)
# Header values travel as latin-1 and may not hold line breaks (the client refuses them).
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0, max_codepoint=0xFF, exclude_characters="\r\n"), min_size=1
)
SETTINGS = hypothesis.settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


def _openapi_path(rule: str) -> str:
    """``/a/<int:x>/b`` -> ``/a/{x}/b`` (the OpenAPI spelling)."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def _operations() -> list[tuple[str, str, str]]:
    """(method, rule, endpoint) for every route of the app, and every documented operation."""
    app = create_app(make_settings("sqlite://"))
    found: set[tuple[str, str, str]] = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIPPED_ENDPOINTS:
            continue
        for method in sorted(set(rule.methods or ()) & set(METHODS)):
            found.add((method, rule.rule, rule.endpoint))
    documented = {_openapi_path(rule) for _, rule, _ in found}
    for path, operations in OPENAPI["paths"].items():
        for method in operations:
            if method.upper() in METHODS:
                # A documented operation with no route would be a hole in the contract.
                assert path in documented, f"{method.upper()} {path} is documented but not routed"
    return sorted(found)


OPERATIONS = _operations()


def _documented(method: str, rule: str) -> dict[str, Any]:
    return OPENAPI["paths"].get(_openapi_path(rule), {}).get(method.lower(), {})


def _query_names(method: str, rule: str) -> list[str]:
    operation = _documented(method, rule)
    names = [p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"]
    return sorted(set(names) | set(EXTRA_QUERY))


def _body_names(method: str, rule: str) -> list[str]:
    operation = _documented(method, rule)
    schema = (
        operation.get("requestBody", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema", {})
    )
    if "$ref" in schema:
        schema = OPENAPI["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return sorted(schema.get("properties", {})) or ["reason", "pharmacy_id", "region"]


def _path(rule: str, draw_text: Any, draw_int: Any) -> str:
    def fill(match: re.Match[str]) -> str:
        converter = match.group(1) or "string"
        if converter.startswith("int"):
            return str(draw_int())
        return quote(draw_text(), safe="", errors="surrogatepass")

    return re.sub(r"<(?:([^:>]+):)?[^>]+>", fill, rule)


@pytest.mark.parametrize(
    ("method", "rule", "endpoint"), OPERATIONS, ids=[f"{m} {r}" for m, r, _ in OPERATIONS]
)
def test_no_hostile_text_answers_a_5xx(app, method: str, rule: str, endpoint: str) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    settings = app.extensions["erx"].settings
    tokens = {
        role: bearer(app, role=role, subject=sub)["Authorization"]
        for role, sub in (("patient", "pt-0001"), ("support", "support-1"), ("service", "svc-1"))
    }
    query_names, body_names = _query_names(method, rule), _body_names(method, rule)

    @SETTINGS
    @hypothesis.given(data=st.data())
    def check(data: st.DataObject) -> None:
        text = lambda: data.draw(HOSTILE_TEXT)  # noqa: E731 - a short local drawer
        path = _path(rule, text, lambda: data.draw(st.sampled_from([1, 2, 0, 2**63, 10**30])))
        where = data.draw(st.sampled_from(["path", "query", "body", "header", "token"]))
        query = {
            name: text() for name in data.draw(st.lists(st.sampled_from(query_names), max_size=3))
        }
        if where != "query":
            query = {}
        token = tokens[data.draw(st.sampled_from(sorted(tokens)))]
        if where == "token":
            claims = jwt.decode(token.split()[1], options={"verify_signature": False})
            claims["sub"] = text()
            token = "Bearer " + jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
        headers = {"Authorization": token}
        if where == "header":
            headers[data.draw(st.sampled_from(STORED_HEADERS))] = data.draw(HEADER_TEXT)
        body = None
        if method in ("POST", "PATCH", "PUT"):
            fields = data.draw(st.lists(st.sampled_from(body_names), min_size=1, max_size=3))
            body = json.dumps({name: text() if where == "body" else "x" for name in fields})
        response = client.open(
            path,
            method=method,
            query_string=urlencode(query, errors="surrogatepass"),
            headers=headers,
            data=body,
            content_type="application/json" if body is not None else None,
        )
        assert response.status_code < 500, (
            method,
            path,
            where,
            response.status_code,
            response.get_data()[:300],
        )

    check()


@pytest.mark.parametrize("bad", ["\x00", "\x1f", "\x7f", "\x85", "\ud800", "a\nb"])
def test_control_characters_are_refused_with_422_naming_the_field(app, client, bad: str) -> None:  # type: ignore[no-untyped-def]
    patient = bearer(app, role="patient", subject="pt-0001")
    support = bearer(app, role="support", subject="support-1")
    query = urlencode({"q": "boots" + bad}, errors="surrogatepass")

    search = client.get(f"/api/v1/pharmacies?{query}", headers=patient)
    region = client.patch(
        "/api/v1/me",
        headers=patient,
        data=json.dumps({"region": "A" + bad}),
        content_type="application/json",
    )
    send = client.post(
        "/api/v1/prescriptions/1/send",
        headers={**patient, "Idempotency-Key": "k\x00" + bad[-1:]},
        json={"pharmacy_id": 1},
    )

    checked = [(region, "region"), (send, "Idempotency-Key")]
    if bad != "\ud800":  # a URL cannot carry a lone surrogate: its UTF-8 bytes decode to U+FFFD
        checked.append((search, "q"))
    for response, field in checked:
        assert response.status_code == 422, (field, response.get_json())
        body = response.get_json()
        assert body["code"] == "validation_error"
        assert field in body["errors"], body
    if bad != "a\nb":  # a void reason is free text: line breaks are fine there
        void = client.post(
            "/api/v1/prescriptions/1/void",
            headers=support,
            data=json.dumps({"reason": "typo" + bad}),
            content_type="application/json",
        )
        assert void.status_code == 422
        assert "reason" in void.get_json()["errors"]


def test_a_nul_in_the_path_is_422_json_not_a_500(app, client) -> None:  # type: ignore[no-untyped-def]
    headers = bearer(app, role="support", subject="support-1")

    response = client.get("/fhir/R4/MedicationRequest/1-1%00", headers=headers)

    assert response.status_code == 422
    assert response.is_json


def test_a_token_claim_with_a_nul_is_401_invalid_token(app, client) -> None:  # type: ignore[no-untyped-def]
    settings = app.extensions["erx"].settings
    token = bearer(app, role="patient", subject="pt-0001")["Authorization"].split()[1]
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode({**claims, "sub": "pt-0001\x00"}, settings.jwt_secret, algorithm="HS256")

    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {forged}"})

    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_token"


def test_every_text_field_of_every_request_schema_uses_the_one_rule() -> None:
    import inspect

    from marshmallow import Schema, fields

    from app.interfaces import directory_schemas, schemas
    from app.interfaces.text_input import Text

    request_schemas = [
        cls
        for module in (schemas, directory_schemas)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Schema)
        and cls.__module__ == module.__name__
        and cls.__name__.endswith(("RequestSchema", "QuerySchema", "UpdateSchema"))
    ]
    assert len(request_schemas) >= 5
    for cls in request_schemas:
        for name, field in cls().fields.items():
            if isinstance(field, fields.String):
                assert isinstance(field, Text), f"{cls.__name__}.{name} is a plain String"

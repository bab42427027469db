"""The page routes: security headers, short page tokens, the subject check, the icon."""

from __future__ import annotations

import re

import jwt
import pytest

from app import create_app
from app.interfaces.pages import PAGE_TOKEN_TTL_S, page_subject


def _page_token(html: str) -> str:
    match = re.search(r'<meta name="erx-token" content="([^"]*)">', html)
    assert match is not None
    return match.group(1)


@pytest.mark.parametrize("path", ["/", "/support", "/static/patient.js", "/favicon.ico"])
def test_pages_and_their_files_answer_with_security_headers(client, path):
    resp = client.get(path)
    assert resp.status_code == 200
    csp = resp.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["script-src"] == "'self'"  # no inline script, no eval
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"


def test_page_templates_carry_no_inline_script_or_style(client):
    for path in ("/", "/support"):
        html = client.get(path).get_data(as_text=True)
        assert re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html) is None, path
        assert "<style" not in html and " style=" not in html and " on" + "click=" not in html


def test_page_tokens_live_at_most_15_minutes(client, settings):
    for path in ("/?patient=pt-0002", "/support"):
        token = _page_token(client.get(path).get_data(as_text=True))
        claims = jwt.decode(
            token, settings.jwt_secret, algorithms=["HS256"], audience=settings.jwt_audience
        )
        assert claims["exp"] - claims["iat"] == PAGE_TOKEN_TTL_S == 900


def test_page_token_endpoint_mints_a_fresh_short_token(client, settings):
    resp = client.get("/page-token?role=patient&patient=pt-0002")
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = resp.get_json()
    assert body["expires_in"] == 900
    claims = jwt.decode(
        body["token"], settings.jwt_secret, algorithms=["HS256"], audience=settings.jwt_audience
    )
    assert (claims["sub"], claims["role"]) == ("pt-0002", "patient")
    support = client.get("/page-token?role=support").get_json()
    assert jwt.decode(support["token"], options={"verify_signature": False})["role"] == "support"
    refused = client.get("/page-token?role=service")
    assert refused.status_code == 422
    assert set(refused.get_json()) >= {"code", "message", "errors"}


def test_production_mints_no_page_token(settings, seeded):
    app = create_app(settings.with_overrides(env="production", jwt_secret="p" * 32), db=seeded)
    client = app.test_client()
    assert client.get("/page-token").status_code == 404
    assert _page_token(client.get("/").get_data(as_text=True)) == ""


@pytest.mark.parametrize(
    ("raw", "subject"),
    [
        ("pt-0002", "pt-0002"),
        ("pt-0002\n", "pt-0001"),  # a trailing newline is no match
        ("pt 0002", "pt-0001"),
        ("x" * 65, "pt-0001"),
        (None, "pt-0001"),
    ],
)
def test_page_subject_is_a_full_match(raw, subject):
    assert page_subject(raw) == subject


def test_a_subject_with_a_newline_is_refused_not_minted(client):
    # The one input boundary refuses control characters in any query value before the page.
    resp = client.get("/?patient=pt-0002%0A")
    assert resp.status_code == 422
    assert resp.get_json()["errors"].keys() == {"patient"}


def test_the_page_subject_check_is_a_full_match():
    from app.interfaces.pages import DEFAULT_PATIENT, page_subject

    assert page_subject("pt-0002\n") == DEFAULT_PATIENT
    assert page_subject("pt-0002") == "pt-0002"


def test_favicon_is_a_small_icon(client):
    resp = client.get("/favicon.ico")
    assert resp.status_code == 200
    assert resp.data[:4] == b"\x00\x00\x01\x00"
    assert len(resp.data) < 10_000

"""Mapping HTTP responses to typed errors (contract §1c, §2)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import requests

from connector.errors import (
    AuthError,
    ConnectorError,
    PlatformRejected,
    PlatformUnavailable,
    RateLimited,
    ResponseParseError,
    classify_response,
    parse_retry_after,
)


def error_from_response(resp: requests.Response) -> ConnectorError | None:
    """The error half of :func:`classify_response` (what most cases check)."""
    return classify_response(resp)[1]


def make_response(
    status: int,
    body: object = None,
    *,
    raw: bytes | None = None,
    headers: dict | None = None,
    method: str = "POST",
) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = raw if raw is not None else json.dumps(body).encode()
    resp.headers.update(headers or {})
    resp.request = requests.Request(method, "https://platform.test/api/prescriptions").prepare()
    return resp


def test_success_true_is_the_only_success() -> None:
    assert error_from_response(make_response(200, {"success": True, "data": {}})) is None


@pytest.mark.parametrize("flag", [False, None, "true", 1, "yes"])
def test_success_not_exactly_true_is_a_rejection(flag: object) -> None:
    error = error_from_response(make_response(200, {"success": flag, "message": "nope"}))

    assert isinstance(error, PlatformRejected)
    assert error.retryable is False


def test_unauthorized_clinic_rejection_carries_the_platform_message() -> None:
    msg = "You trying to issue prescription to unauthorized clinic."
    error = error_from_response(
        make_response(200, {"success": False, "message": msg}, headers={"X-Request-Id": "req-9"})
    )

    assert isinstance(error, PlatformRejected)
    assert error.message == msg
    assert error.http_status == 200
    assert error.request_id == "req-9"
    assert error.outcome_unknown is False


def test_validation_rejection_carries_field_errors() -> None:
    body = {
        "success": False,
        "message": "The given data was invalid.",
        "errors": {"medicines.0.qty": ["The qty field is required."]},
    }

    error = error_from_response(make_response(200, body))

    assert isinstance(error, PlatformRejected)
    assert error.errors == {"medicines.0.qty": ["The qty field is required."]}
    assert "medicines.0.qty" in str(error)


def test_controlled_drug_rejection_keeps_the_code() -> None:
    body = {"success": False, "code": "controlled_drug", "message": "Schedule 2 and 3 ..."}

    error = error_from_response(make_response(200, body))

    assert isinstance(error, PlatformRejected)
    assert error.code == "controlled_drug"


def test_session_expired_is_an_auth_error_at_the_session_step() -> None:
    body = {"success": False, "code": "session_expired", "message": "Session expired"}

    error = error_from_response(make_response(200, body))

    assert isinstance(error, AuthError)
    assert (error.step, error.code) == ("session", "session_expired")


def test_401_is_an_expired_access_token() -> None:
    error = error_from_response(
        make_response(401, {"success": False, "code": "access_token_expired"})
    )

    assert isinstance(error, AuthError)
    assert (error.step, error.code, error.http_status) == (
        "access_token",
        "access_token_expired",
        401,
    )


def test_401_without_body_still_means_access_token() -> None:
    error = error_from_response(make_response(401, raw=b""))

    assert isinstance(error, AuthError)
    assert error.code == "access_token_expired"


def test_429_with_retry_after_seconds() -> None:
    error = error_from_response(make_response(429, raw=b"", headers={"Retry-After": "17"}))

    assert isinstance(error, RateLimited)
    assert error.retry_after_s == 17
    assert error.retryable is True
    assert error.outcome_unknown is False


def test_429_without_retry_after() -> None:
    error = error_from_response(make_response(429, raw=b"slow down"))

    assert isinstance(error, RateLimited)
    assert error.retry_after_s is None


def test_retry_after_http_date() -> None:
    now = dt.datetime(2026, 10, 21, 7, 27, 30, tzinfo=dt.UTC)

    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", now=now) == 30
    assert parse_retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon", now=now) is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_on_post_is_unavailable_with_unknown_outcome(status: int) -> None:
    error = error_from_response(make_response(status, raw=b"<html>oops</html>"))

    assert isinstance(error, PlatformUnavailable)
    assert error.retryable is True
    assert error.outcome_unknown is True


def test_5xx_on_get_has_no_unknown_outcome() -> None:
    error = error_from_response(make_response(500, raw=b"", method="GET"))

    assert isinstance(error, PlatformUnavailable)
    assert error.outcome_unknown is False


def test_other_4xx_is_a_plain_connector_error() -> None:
    error = error_from_response(make_response(404, {"success": False, "code": "not_found"}))

    assert type(error) is ConnectorError
    assert (error.http_status, error.code, error.retryable) == (404, "not_found", False)


@pytest.mark.parametrize("raw", [b"<html>ok</html>", b"", b"[1, 2]", b'"ok"', b"\xff\xfe"])
def test_200_that_is_not_a_json_object_is_a_parse_error(raw: bytes) -> None:
    error = error_from_response(make_response(200, raw=raw))

    assert isinstance(error, ResponseParseError)
    assert error.outcome_unknown is True  # a POST may have been processed


def test_error_text_never_contains_the_body() -> None:
    body = {"success": False, "errors": {"patient.email": ["jane.doe@example.test is invalid"]}}

    error = error_from_response(make_response(200, body))

    assert "jane.doe" not in str(error)
    assert "jane.doe" not in repr(error)

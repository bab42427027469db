"""ConnectorClient against a fake platform (contract §1-§5): headers, retries, errors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import socket

import pytest
import requests
import responses
from connector_fakes import BASE, RX_URL, FakePlatform, make_prescriber, success_issue_body
from responses import matchers
from urllib3.exceptions import ProtocolError

from connector import (
    ConnectorClient,
    ConnectorSettings,
    IssueRequest,
    PrescriberCredentials,
)
from connector.errors import (
    AuthError,
    PayloadError,
    PlatformRejected,
    PlatformUnavailable,
    RateLimited,
    ResponseParseError,
    TransportError,
)
from connector.results import Clinic, Contact, ContactAddress, Medicine
from connector.transport import Transport


def rx_posts(rsps: responses.RequestsMock) -> list[requests.PreparedRequest]:
    return [c.request for c in rsps.calls if c.request.method == "POST" and c.request.url == RX_URL]


def test_issue_returns_the_nested_token(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    platform.rsps.post(RX_URL, json=success_issue_body(), headers={"X-Request-Id": "req-1"})

    issued = client.issue(prescriber, issue_request)

    assert issued.platform_token == "SRXC49F3D4F66A7"
    assert issued.status == "issued"
    assert issued.client_ref_id == "rx-000042"
    assert issued.created_at == dt.datetime(2026, 11, 20, 10, 15, 2, tzinfo=dt.UTC)
    assert issued.request_id == "req-1"
    sent = json.loads(rx_posts(platform.rsps)[0].body)
    assert sent["action"] == "issueToContact"
    assert sent["secure_pin"] == prescriber.secure_pin
    assert sent["clinic_id"] == 994


def test_both_tokens_and_timeouts_on_every_call(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    rsps = platform.rsps
    rsps.post(RX_URL, json=success_issue_body())
    rsps.get(RX_URL, json={"success": True, "data": {"prescriptions": []}})
    rsps.get(
        f"{RX_URL}/SRX1",
        json={"success": True, "data": {"prescription": {"id": "SRX1", "status": "issued"}}},
    )
    rsps.get(f"{BASE}/clinics", json={"success": True, "data": {"clinics": []}})

    client.issue(prescriber, issue_request)
    client.find_by_client_ref(prescriber, "rx-000042")
    client.get_prescription(prescriber, "SRX1")
    client.list_clinics(prescriber)

    api_calls = [
        c for c in rsps.calls if "/oauth/" not in c.request.url and "/login" not in c.request.url
    ]
    assert len(api_calls) == 4
    for call in api_calls:
        assert call.request.headers["Authorization"] == "Bearer at-0"
        assert call.request.headers["X-Session-Token"].startswith("st-dr.jones-")
        assert call.request.req_kwargs["timeout"] == (3.05, 10.0)
    assert platform.token_calls == 1
    assert platform.login_count(prescriber) == 1


def test_401_reauthenticates_and_retries_once(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    rsps = platform.rsps
    rsps.post(RX_URL, status=401, json={"success": False, "code": "access_token_expired"})
    rsps.post(RX_URL, json=success_issue_body())

    issued = client.issue(prescriber, issue_request)

    posts = rx_posts(rsps)
    assert issued.platform_token == "SRXC49F3D4F66A7"
    assert len(posts) == 2
    assert posts[0].headers["Authorization"] == "Bearer at-0"
    assert posts[1].headers["Authorization"] == f"Bearer {client.tokens.access_token()}"
    assert posts[1].headers["Authorization"] != posts[0].headers["Authorization"]
    assert platform.token_calls == 2


def test_second_401_is_an_auth_error_not_a_loop(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    platform.rsps.post(RX_URL, status=401, json={"success": False, "code": "access_token_expired"})

    with pytest.raises(AuthError) as caught:
        client.issue(prescriber, issue_request)

    assert caught.value.step == "access_token"
    assert len(rx_posts(platform.rsps)) == 2
    assert platform.token_calls == 2


def test_session_expired_logs_in_again_and_retries_once(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    rsps = platform.rsps
    rsps.post(
        RX_URL, json={"success": False, "code": "session_expired", "message": "Session expired"}
    )
    rsps.post(RX_URL, json=success_issue_body())

    issued = client.issue(prescriber, issue_request)

    posts = rx_posts(rsps)
    assert issued.platform_token == "SRXC49F3D4F66A7"
    assert len(posts) == 2
    assert posts[0].headers["X-Session-Token"] != posts[1].headers["X-Session-Token"]
    assert platform.login_count(prescriber) == 2
    assert platform.token_calls == 1


def test_repeated_session_expired_is_an_auth_error(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    platform.rsps.post(RX_URL, json={"success": False, "code": "session_expired"})

    with pytest.raises(AuthError) as caught:
        client.issue(prescriber, issue_request)

    assert (caught.value.step, caught.value.code) == ("session", "session_expired")
    assert len(rx_posts(platform.rsps)) == 2


def test_failed_login_fails_the_issue_fast(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    platform.bad_passwords.add(prescriber.password)

    for _ in range(3):
        with pytest.raises(AuthError) as caught:
            client.issue(prescriber, issue_request)
        assert caught.value.step == "login"
        assert caught.value.outcome_unknown is False

    assert platform.login_count(prescriber) == 1
    assert rx_posts(platform.rsps) == []


def test_each_prescriber_issues_with_their_own_session(
    client: ConnectorClient, platform: FakePlatform, issue_request: IssueRequest
) -> None:
    jones, patel = make_prescriber("5531", "dr.jones"), make_prescriber("7720", "dr.patel")
    platform.rsps.post(RX_URL, json=success_issue_body())

    client.issue(jones, issue_request)
    client.issue(patel, issue_request)

    first, second = rx_posts(platform.rsps)
    assert platform.issued_sessions[first.headers["X-Session-Token"]] == jones.email
    assert platform.issued_sessions[second.headers["X-Session-Token"]] == patel.email


def test_unauthorized_clinic_is_rejected_with_the_platform_message(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    msg = "You trying to issue prescription to unauthorized clinic."
    platform.rsps.post(RX_URL, json={"success": False, "message": msg})

    with pytest.raises(PlatformRejected) as caught:
        client.issue(prescriber, issue_request)

    assert caught.value.message == msg
    assert caught.value.outcome_unknown is False
    assert len(rx_posts(platform.rsps)) == 1


def test_display_id_is_caught_before_anything_is_sent(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    with pytest.raises(PayloadError):
        client.issue(prescriber, dataclasses.replace(issue_request, clinic_id="201334"))

    assert len(platform.rsps.calls) == 0


def test_validation_error_is_rejected_with_field_errors(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    platform.rsps.post(
        RX_URL,
        json={
            "success": False,
            "message": "The given data was invalid.",
            "errors": {"medicines.0.qty": ["The qty field is required."]},
        },
    )

    with pytest.raises(PlatformRejected) as caught:
        client.issue(prescriber, issue_request)

    assert caught.value.errors == {"medicines.0.qty": ["The qty field is required."]}


@pytest.mark.parametrize(
    "data",
    [None, {}, {"prescription": None}, {"prescription": {"id": None}}, {"prescription": {"id": 7}}],
)
def test_success_without_readable_token_is_a_parse_error_with_unknown_outcome(
    client: ConnectorClient,
    platform: FakePlatform,
    prescriber,
    issue_request: IssueRequest,
    data: object,
) -> None:
    platform.rsps.post(RX_URL, json={"success": True, "data": data})

    with pytest.raises(ResponseParseError) as caught:
        client.issue(prescriber, issue_request)

    assert caught.value.outcome_unknown is True  # it probably exists: look it up
    assert len(rx_posts(platform.rsps)) == 1


def test_non_json_200_is_a_parse_error(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    platform.rsps.post(RX_URL, body="<html>Service OK</html>", content_type="text/html")

    with pytest.raises(ResponseParseError) as caught:
        client.issue(prescriber, issue_request)

    assert caught.value.outcome_unknown is True


def test_429_is_rate_limited_with_retry_after_and_not_resent(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    platform.rsps.post(RX_URL, status=429, headers={"Retry-After": "30"})

    with pytest.raises(RateLimited) as caught:
        client.issue(prescriber, issue_request)

    assert caught.value.retry_after_s == 30
    assert caught.value.outcome_unknown is False
    assert len(rx_posts(platform.rsps)) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_unavailable_and_the_issue_is_not_resent(
    client: ConnectorClient,
    platform: FakePlatform,
    prescriber,
    issue_request: IssueRequest,
    status: int,
) -> None:
    platform.rsps.post(RX_URL, status=status, body="upstream error")

    with pytest.raises(PlatformUnavailable) as caught:
        client.issue(prescriber, issue_request)

    assert caught.value.http_status == status
    assert caught.value.outcome_unknown is True
    assert len(rx_posts(platform.rsps)) == 1


def test_read_timeout_has_unknown_outcome_and_is_not_resent(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    platform.rsps.post(RX_URL, body=requests.exceptions.ReadTimeout("read timed out"))

    with pytest.raises(TransportError) as caught:
        client.issue(prescriber, issue_request)

    assert caught.value.outcome_unknown is True
    assert caught.value.retryable is True
    assert len(rx_posts(platform.rsps)) == 1


def test_connection_reset_after_sending_has_unknown_outcome(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    reset = requests.exceptions.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    )
    platform.rsps.post(RX_URL, body=reset)

    with pytest.raises(TransportError) as caught:
        client.issue(prescriber, issue_request)

    assert caught.value.outcome_unknown is True
    assert len(rx_posts(platform.rsps)) == 1


def test_connect_timeout_means_not_sent(
    client: ConnectorClient, platform: FakePlatform, prescriber, issue_request: IssueRequest
) -> None:
    platform.rsps.post(RX_URL, body=requests.exceptions.ConnectTimeout("connect timed out"))

    with pytest.raises(TransportError) as caught:
        client.issue(prescriber, issue_request)

    assert caught.value.outcome_unknown is False
    assert caught.value.code == "connect_timeout"


def test_refused_connection_means_not_sent() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = ConnectorSettings(f"http://127.0.0.1:{port}", "c", "s", connect_timeout_s=1)

    with pytest.raises(TransportError) as caught:
        Transport(settings).request("GET", "/clinics")

    assert caught.value.outcome_unknown is False
    assert caught.value.code == "connection_failed"


def test_auth_failure_during_issue_is_never_an_unknown_outcome(
    client: ConnectorClient, rsps: responses.RequestsMock, prescriber, issue_request: IssueRequest
) -> None:
    rsps.post(f"{BASE}/oauth/token", body=requests.exceptions.ReadTimeout("slow"))

    with pytest.raises(TransportError) as caught:
        client.issue(prescriber, issue_request)

    assert caught.value.outcome_unknown is False  # the prescription was never sent
    assert rx_posts(rsps) == []


def test_get_is_not_retried_on_500_either(
    client: ConnectorClient, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    platform.rsps.get(f"{RX_URL}/SRX1", status=500)

    with pytest.raises(PlatformUnavailable) as caught:
        client.get_prescription(prescriber, "SRX1")

    assert caught.value.outcome_unknown is False
    assert len([c for c in platform.rsps.calls if c.request.url.endswith("/SRX1")]) == 1


def test_find_by_client_ref_queries_and_keeps_only_our_reference(
    client: ConnectorClient, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    platform.rsps.get(
        RX_URL,
        match=[matchers.query_param_matcher({"client_ref_id": "rx-000042"})],
        json={
            "success": True,
            "data": {
                "prescriptions": [
                    {"id": "SRX1", "status": "signed", "client_ref_id": "rx-000042"},
                    {"id": "SRX2", "status": "issued", "client_ref_id": "rx-999999"},
                ]
            },
        },
    )

    found = client.find_by_client_ref(prescriber, "rx-000042")

    assert [(p.platform_token, p.status) for p in found] == [("SRX1", "signed")]


def test_find_by_client_ref_nothing_found(
    client: ConnectorClient, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    platform.rsps.get(RX_URL, json={"success": True, "data": {"prescriptions": []}})

    assert client.find_by_client_ref(prescriber, "rx-1") == ()


def test_get_prescription_reads_history(
    client: ConnectorClient, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    platform.rsps.get(
        f"{RX_URL}/SRX%2F1",
        json={
            "success": True,
            "data": {
                "prescription": {
                    "id": "SRX/1",
                    "status": "signed",
                    "history": [
                        {"status": "issued", "at": "2026-11-20T10:15:02Z"},
                        {"status": "signed", "at": "2026-11-20T10:15:08Z"},
                    ],
                }
            },
        },
    )

    rx = client.get_prescription(prescriber, "SRX/1")  # the token is escaped in the path

    assert rx.status == "signed"
    assert [s for s, _ in rx.history] == ["issued", "signed"]


def test_void_after_dispensing_is_an_invalid_transition(
    client: ConnectorClient, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    platform.rsps.post(
        f"{RX_URL}/SRX1/void",
        match=[matchers.json_params_matcher({"reason": "duplicate"})],
        json={"success": False, "code": "invalid_transition", "message": "Cannot void"},
    )

    with pytest.raises(PlatformRejected) as caught:
        client.void(prescriber, "SRX1", reason="duplicate")

    assert caught.value.code == "invalid_transition"


def test_void_success(
    client: ConnectorClient, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    platform.rsps.post(
        f"{RX_URL}/SRX1/void",
        json={"success": True, "data": {"prescription": {"id": "SRX1", "status": "voided"}}},
    )

    assert client.void(prescriber, "SRX1", reason="duplicate").status == "voided"


def test_lookups_return_small_typed_results(
    client: ConnectorClient, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    rsps = platform.rsps
    rsps.get(
        f"{BASE}/clinics",
        json={
            "success": True,
            "data": {"clinics": [{"id": 994, "display_id": "201334", "name": "Harley St"}]},
        },
    )
    rsps.get(
        f"{BASE}/contacts",
        match=[matchers.query_param_matcher({"type": "pharmacy", "q": "leeds"})],
        json={
            "success": True,
            "data": {
                "contacts": [
                    {
                        "branch_id": 17,
                        "name": "Leeds Pharmacy",
                        "group": "All Other Pharmacies",
                        "email": "leeds@pharmacy.test",
                        "address": {"line1": "1 Briggate", "city": "Leeds", "post_code": "LS1 6HD"},
                    }
                ]
            },
        },
    )
    rsps.get(
        f"{BASE}/medicines",
        match=[matchers.query_param_matcher({"search": "sema"})],
        json={
            "success": True,
            "data": {
                "medicines": [
                    {"vpid": "391", "description": "Semaglutide", "controlled_schedule": None}
                ]
            },
        },
    )

    assert client.list_clinics(prescriber) == (
        Clinic(id=994, display_id="201334", name="Harley St"),
    )
    assert client.search_contacts(prescriber, "leeds") == (
        Contact(
            branch_id=17,
            name="Leeds Pharmacy",
            group="All Other Pharmacies",
            email="leeds@pharmacy.test",
            address=ContactAddress("1 Briggate", "Leeds", "LS1 6HD"),
        ),
    )
    assert client.search_medicines(prescriber, "sema") == (Medicine("391", "Semaglutide", None),)


def test_lookup_with_wrong_shape_is_a_parse_error(
    client: ConnectorClient, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    platform.rsps.get(f"{BASE}/clinics", json={"success": True, "data": {"clinics": {"id": 994}}})

    with pytest.raises(ResponseParseError) as caught:
        client.list_clinics(prescriber)

    assert caught.value.path == "data.clinics"

"""The platform API through the Flask test client (contract §1-§6)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient

from sandbox import SandboxState
from sandbox.clock import FakeClock

Issue = Callable[..., dict[str, Any]]
Payload = Callable[..., dict[str, Any]]


def test_token_login_issue_read_lookup(
    client: FlaskClient, auth: dict[str, str], issue_payload: Payload
) -> None:
    response = client.post("/prescriptions", json=issue_payload(), headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is True
    assert body["message"] == "Prescription issued"
    rx = body["data"]["prescription"]
    assert re.fullmatch(r"SRX[0-9A-F]{12}", rx["id"])
    assert rx["status"] == "issued"
    assert rx["client_ref_id"] == "rx-000042"
    assert rx["created_at"] == "2025-11-20T10:35:02Z"

    read = client.get(f"/prescriptions/{rx['id']}", headers=auth).get_json()
    assert read == {
        "success": True,
        "data": {
            "prescription": {
                "id": rx["id"],
                "status": "issued",
                "client_ref_id": "rx-000042",
                "created_at": "2025-11-20T10:35:02Z",
                "history": [{"status": "issued", "at": "2025-11-20T10:35:02Z"}],
            }
        },
    }
    found = client.get("/prescriptions?client_ref_id=rx-000042", headers=auth).get_json()
    assert found["success"] is True
    assert found["data"]["prescriptions"] == [read["data"]["prescription"]]
    empty = client.get("/prescriptions?client_ref_id=nope", headers=auth).get_json()
    assert empty == {"success": True, "data": {"prescriptions": []}}


def test_token_response_shape_and_bad_client(client: FlaskClient) -> None:
    good = client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "erx-sandbox-client",
            "client_secret": "erx-sandbox-secret",
            "scope": "prescriptions",
        },
    ).get_json()
    assert set(good) == {"access_token", "token_type", "expires_in", "scope"}
    assert good["token_type"] == "Bearer"
    assert good["expires_in"] == 3600
    assert good["scope"] == "prescriptions"

    bad = client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "erx-sandbox-client",
            "client_secret": "wrong",
        },
    )
    assert bad.status_code == 401
    assert bad.get_json()["error"] == "invalid_client"


def test_omit_expires_in(client: FlaskClient, state: SandboxState) -> None:
    state.controls.update({"omit_expires_in": True})
    body = client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "erx-sandbox-client",
            "client_secret": "erx-sandbox-secret",
        },
    ).get_json()
    assert "expires_in" not in body
    assert body["access_token"]


def test_login_failures(client: FlaskClient, new_access_token: Callable[[], str]) -> None:
    token = new_access_token()
    wrong = client.post(
        "/prescriber/login",
        json={"email": "dr.jones@example.test", "password": "nope"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert wrong.status_code == 200
    assert wrong.get_json() == {"success": False, "message": "Invalid credentials"}

    no_token = client.post(
        "/prescriber/login", json={"email": "dr.jones@example.test", "password": "x"}
    )
    assert no_token.status_code == 401
    assert no_token.get_json() == {"success": False, "code": "access_token_expired"}


def test_login_shape_and_new_login_keeps_old_session(
    client: FlaskClient, new_access_token: Callable[[], str], new_session: Callable[..., str]
) -> None:
    token = new_access_token()
    response = client.post(
        "/prescriber/login",
        json={"email": "dr.patel@example.test", "password": "sandbox-patel-pass"},
        headers={"Authorization": f"Bearer {token}"},
    ).get_json()
    data = response["data"]
    assert data["expires_in"] == 1800
    assert data["prescriber"] == {"id": 5532, "clinic_ids": [994]}

    first = new_session(token)
    second = new_session(token)
    assert first != second
    for session in (first, second):
        clinics = client.get(
            "/clinics", headers={"Authorization": f"Bearer {token}", "X-Session-Token": session}
        ).get_json()
        assert clinics == {
            "success": True,
            "data": {
                "clinics": [
                    {"id": 994, "display_id": "201334", "name": "Harley Street Weight Clinic"}
                ]
            },
        }


def test_expired_access_token_is_401(
    client: FlaskClient, auth: dict[str, str], clock: FakeClock
) -> None:
    clock.advance(3600)
    response = client.get("/clinics", headers=auth)
    assert response.status_code == 401
    assert response.get_json() == {"success": False, "code": "access_token_expired"}
    garbage = client.get("/clinics", headers={**auth, "Authorization": "Bearer garbage"})
    assert garbage.status_code == 401


def test_expired_session_is_http_200(
    client: FlaskClient,
    state: SandboxState,
    clock: FakeClock,
    new_access_token: Callable[[], str],
    new_session: Callable[..., str],
) -> None:
    state.controls.update({"session_ttl_s": 60})
    token = new_access_token()
    session = new_session(token)
    headers = {"Authorization": f"Bearer {token}", "X-Session-Token": session}
    assert client.get("/clinics", headers=headers).get_json()["success"] is True
    clock.advance(60)
    response = client.get("/clinics", headers=headers)
    assert response.status_code == 200
    assert response.get_json() == {
        "success": False,
        "code": "session_expired",
        "message": "Session expired",
    }
    missing = client.get("/clinics", headers={"Authorization": f"Bearer {token}"})
    assert missing.status_code == 200
    assert missing.get_json()["code"] == "session_expired"


def test_display_id_is_an_unauthorized_clinic(
    client: FlaskClient, auth: dict[str, str], issue_payload: Payload, state: SandboxState
) -> None:
    for clinic_id in (201334, "201334", 995):
        response = client.post(
            "/prescriptions", json=issue_payload(clinic_id=clinic_id), headers=auth
        )
        assert response.status_code == 200
        assert response.get_json() == {
            "success": False,
            "message": "You trying to issue prescription to unauthorized clinic.",
        }
    assert state.stats.snapshot()["prescriptions_issued"] == 0


def test_unknown_contact_and_wrong_pin(
    client: FlaskClient, auth: dict[str, str], issue_payload: Payload
) -> None:
    unknown = client.post("/prescriptions", json=issue_payload(contact_id=99999), headers=auth)
    assert unknown.get_json() == {"success": False, "message": "Contact not found."}
    wrong_pin = client.post("/prescriptions", json=issue_payload(secure_pin="000000"), headers=auth)
    assert wrong_pin.get_json() == {"success": False, "message": "Invalid secure PIN."}


def test_validation_error_shape(
    client: FlaskClient, auth: dict[str, str], issue_payload: Payload
) -> None:
    payload = issue_payload()
    payload["patient"].update(first_name=" ", gender="woman", phone="+447700900123")
    del payload["patient"]["birth_year"]
    payload["medicines"] = [
        {"vpid": "319984000", "description": "Orlistat 120mg capsules", "directions": "x"},
        {"description": "Metformin 500mg tablets", "qty": 4, "directions": "x"},
        {"description": "Metformin 500mg tablets", "qty": "four", "directions": ""},
    ]
    response = client.post("/prescriptions", json=payload, headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is False
    assert body["message"] == "The given data was invalid."
    errors = body["errors"]
    assert errors["medicines.0.qty"] == ["The qty field is required."]
    assert errors["patient.first_name"] == ["The first name field is required."]
    assert errors["patient.birth_year"] == ["The birth year field is required."]
    assert errors["patient.gender"] == ["The selected gender is invalid."]
    assert errors["patient.phone"] == ["The phone format is invalid."]
    assert "medicines.1.qty" in errors
    assert "medicines.2.qty" in errors
    assert errors["medicines.2.directions"] == ["The directions field is required."]

    empty = client.post("/prescriptions", json=issue_payload(medicines=[]), headers=auth)
    assert empty.get_json()["errors"] == {"medicines": ["The medicines field is required."]}
    nothing = client.post("/prescriptions", json={}, headers=auth).get_json()
    assert {"action", "clinic_id", "contact_id", "secure_pin", "patient", "medicines"} <= set(
        nothing["errors"]
    )


def test_controlled_drugs_are_refused_and_unknown_vpids_accepted(
    client: FlaskClient, auth: dict[str, str], issue_payload: Payload
) -> None:
    for vpid in ("322503009", "321217004"):
        medicines = [{"vpid": vpid, "description": "x", "qty": "1", "directions": "y"}]
        body = client.post(
            "/prescriptions", json=issue_payload(medicines=medicines), headers=auth
        ).get_json()
        assert body == {
            "success": False,
            "code": "controlled_drug",
            "message": "Schedule 2 and 3 controlled drugs cannot be issued electronically.",
        }
    schedule_4 = [{"vpid": "321211002", "description": "Diazepam", "qty": "1", "directions": "y"}]
    unknown = [{"vpid": "999", "description": "Something new", "qty": "1", "directions": "y"}]
    for medicines in (schedule_4, unknown):
        body = client.post(
            "/prescriptions", json=issue_payload(medicines=medicines), headers=auth
        ).get_json()
        assert body["success"] is True


def test_no_idempotency_same_client_ref_makes_new_prescriptions(
    client: FlaskClient, auth: dict[str, str], issue: Issue, state: SandboxState
) -> None:
    first = issue(client_ref_id="rx-dup")
    second = issue(client_ref_id="rx-dup")
    assert first["id"] != second["id"]
    found = client.get("/prescriptions?client_ref_id=rx-dup", headers=auth).get_json()
    assert [p["id"] for p in found["data"]["prescriptions"]] == [first["id"], second["id"]]
    stats = state.stats_json()
    assert stats["issued_by_client_ref"] == {"rx-dup": 2}
    assert stats["webhooks"]["enqueued"] == 0  # issuing itself emits no event


def test_lookups(client: FlaskClient, auth: dict[str, str]) -> None:
    contacts = client.get("/contacts?type=pharmacy", headers=auth).get_json()["data"]["contacts"]
    assert len(contacts) == 40
    assert sorted(c["branch_id"] for c in contacts) == [17, *range(101, 140)]
    boots = [c for c in contacts if c["group"] == "Boots"]
    assert sorted(c["branch_id"] for c in boots) == list(range(130, 138))
    assert all(c["name"].startswith("Boots ") for c in boots)
    assert {c["group"] for c in contacts} == {"Boots", "All Other Pharmacies"}
    first = next(c for c in contacts if c["branch_id"] == 101)
    assert first["email"] == "branch101@pharmacy.example.test"
    assert set(first["address"]) == {"line1", "city", "post_code"}

    manchester = client.get("/contacts?type=pharmacy&q=manchester", headers=auth).get_json()
    assert {c["branch_id"] for c in manchester["data"]["contacts"]} == {127, 130}

    meds = client.get("/medicines?search=semaglutide", headers=auth).get_json()["data"]["medicines"]
    assert [m["vpid"] for m in meds] == ["39929811000001101", "39929911000001106"]
    assert meds[0]["controlled_schedule"] is None
    morphine = client.get("/medicines?search=morphine", headers=auth).get_json()
    assert morphine["data"]["medicines"][0]["controlled_schedule"] == "2"
    assert len(client.get("/medicines", headers=auth).get_json()["data"]["medicines"]) == 20


def test_void_then_invalid_transition(
    client: FlaskClient, auth: dict[str, str], issue: Issue
) -> None:
    rx = issue()
    voided = client.post(f"/prescriptions/{rx['id']}/void", json={"reason": "x"}, headers=auth)
    body = voided.get_json()
    assert body["success"] is True
    assert body["data"]["prescription"]["status"] == "voided"
    assert [h["status"] for h in body["data"]["prescription"]["history"]] == ["issued", "voided"]
    again = client.post(f"/prescriptions/{rx['id']}/void", json={}, headers=auth)
    assert again.status_code == 200
    assert again.get_json()["success"] is False
    assert again.get_json()["code"] == "invalid_transition"


def test_unknown_prescription(client: FlaskClient, auth: dict[str, str]) -> None:
    body = client.get("/prescriptions/SRX000000000000", headers=auth).get_json()
    assert body["success"] is False
    assert body["code"] == "not_found"


def test_pharmacy_page_and_dispense_from_issued(
    client: FlaskClient, issue: Issue, state: SandboxState, sender: Any
) -> None:
    rx = issue()
    page = client.get(f"/pharmacy/prescriptions/{rx['id']}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert rx["id"] in html and "issued" in html and "Semaglutide" in html
    assert "447700900123" not in html and "1984" not in html

    dispensed = client.post(f"/pharmacy/prescriptions/{rx['id']}/dispense", json={}).get_json()
    assert dispensed["success"] is True
    history = [h["status"] for h in dispensed["data"]["prescription"]["history"]]
    assert history == ["issued", "signed", "dispensed"]
    assert state.stats_json()["webhooks"]["enqueued"] == 2

    again = client.post(f"/pharmacy/prescriptions/{rx['id']}/dispense", json={})
    assert again.status_code == 409
    assert again.get_json()["code"] == "invalid_transition"
    assert client.get("/pharmacy/prescriptions/SRXNOPE").status_code == 404

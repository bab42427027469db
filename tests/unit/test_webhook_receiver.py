"""``POST /webhooks/platform`` against the real test database (contract §7).

Every refusal must write nothing; every acknowledgement must follow a
committed inbox row; a redelivery must be acknowledged without a second row.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from app import create_app
from app.foundation.db import Database, utcnow
from app.foundation.models import Prescription, StatusHistory, WebhookInbox
from tests.conftest import make_settings
from tests.support import FakeClock
from webhooks.processing import InboxProcessor
from webhooks.signature import compute_signature, sign, verify

PATH = "/webhooks/platform"
SECRET = "whsec_sandbox_test_secret"  # the development default in app.foundation.config
NOW = 1_763_634_902
TOKEN = "SRXTEST0000001"
REFERENCE = "rx-000001"  # patient pt-0001, Region B (scripts/seed)
UNREACHABLE_DB = "postgresql+psycopg2://postgres@127.0.0.1:1/nodb"


def event_body(
    event_id: str = "evt_recv_0001",
    *,
    status: str = "signed",
    previous: str | None = "issued",
    token: str = TOKEN,
    event_type: str = "prescription.status_updated",
    occurred_at: str = "2026-11-20T10:15:08Z",
    **extra: Any,
) -> bytes:
    body = {
        "id": event_id,
        "type": event_type,
        "created": "2026-11-20T10:15:09Z",
        "data": {
            "prescription": {
                "id": token,
                "client_ref_id": REFERENCE,
                "status": status,
                "previous_status": previous,
                "occurred_at": occurred_at,
            }
        },
        **extra,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def deliver(
    client, body: bytes, *, secrets=(SECRET,), t: int = NOW, header: str | None = None, **kw
):  # type: ignore[no-untyped-def]
    """POST ``body`` as raw bytes, signed with the real signing function unless ``header``."""
    signature = header if header is not None else sign(body, list(secrets), timestamp=t)
    headers = {"X-Signature": signature, **kw.pop("headers", {})}
    kw.setdefault("content_type", "application/json")
    return client.post(PATH, data=body, headers=headers, **kw)


def inbox(db: Database) -> list[WebhookInbox]:
    with db.session() as session:
        return list(session.scalars(select(WebhookInbox).order_by(WebhookInbox.id)))


def history_count(db: Database, prescription_id: int | None = None) -> int:
    query = select(func.count()).select_from(StatusHistory)
    if prescription_id is not None:
        query = query.where(StatusHistory.prescription_id == prescription_id)
    with db.session() as session:
        return session.scalar(query) or 0


def issue(db: Database, reference: str = REFERENCE, token: str = TOKEN) -> int:
    """Put a seeded Region B prescription into ``issued`` with a known platform token."""
    with db.session() as session:
        rx = session.scalars(select(Prescription).where(Prescription.reference == reference)).one()
        assert rx.patient.region_code == "B"
        rx.platform_token, rx.status = token, "issued"
        return rx.id


@pytest.fixture
def clock(app) -> FakeClock:  # type: ignore[no-untyped-def]
    fake = FakeClock()
    fake.set_unix(NOW)
    app.extensions["erx"].unix_time = fake.unix_time
    return fake


def make_app(db_url: str, database: Database, clock_now: float = NOW, **overrides: Any):  # type: ignore[no-untyped-def]
    application = create_app(make_settings(db_url, **overrides), db=database)
    application.config["TESTING"] = True
    application.extensions["erx"].unix_time = lambda: float(clock_now)
    return application


def assert_refused(response, reason: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 401, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == "invalid_signature"
    assert body["reason"] == reason
    assert body["errors"] == {"X-Signature": [reason]}
    assert isinstance(body["message"], str) and body["message"]


# --- acknowledged and stored ----------------------------------------------------------


def test_valid_event_answers_200_and_stores_one_pending_row(client, clock, seeded) -> None:  # type: ignore[no-untyped-def]
    body = event_body("evt_valid_1")
    before = utcnow()
    response = deliver(client, body)
    after = utcnow()

    assert response.status_code == 200
    assert response.get_json() == {"received": True, "event_id": "evt_valid_1", "duplicate": False}
    rows = inbox(seeded)
    assert len(rows) == 1
    row = rows[0]
    assert row.event_id == "evt_valid_1"
    assert row.event_type == "prescription.status_updated"
    assert row.platform_token == TOKEN
    assert row.state == "pending"
    assert row.attempts == 0
    assert row.processed_at is None
    assert row.body == body  # the raw bytes, exactly as signed
    assert before <= row.received_at <= after
    assert row.next_attempt_at <= after  # due at once


def test_a_stored_event_can_be_reverified_later_against_its_signature(
    client, clock, seeded
) -> None:  # type: ignore[no-untyped-def]
    # Not UTF-8 after the JSON: stored as bytes, nothing replaced, so the HMAC still matches.
    body = event_body("evt_reverify") + b" \xff"
    assert deliver(client, body).status_code == 200

    (row,) = inbox(seeded)
    assert row.body == body
    assert row.signature == sign(body, [SECRET], timestamp=NOW)
    # Weeks later, with that day's secrets and a tolerance covering its age:
    assert (
        verify(row.body, row.signature, [SECRET], tolerance_s=10**9, unix_time=NOW + 30 * 86400)
        == NOW
    )


def test_redelivery_of_same_event_id_is_200_duplicate_and_still_one_row(
    client, clock, seeded
) -> None:  # type: ignore[no-untyped-def]
    body = event_body("evt_dup_1")
    first = deliver(client, body)
    # The platform retries later with a fresh t and signature.
    clock.set_unix(NOW + 60)
    second = deliver(client, body, t=NOW + 60)
    third = deliver(client, body)

    assert first.status_code == 200 and first.get_json()["duplicate"] is False
    for again in (second, third):
        assert again.status_code == 200
        assert again.get_json() == {"received": True, "event_id": "evt_dup_1", "duplicate": True}
    rows = inbox(seeded)
    assert [r.event_id for r in rows] == ["evt_dup_1"]
    assert rows[0].body == body


def test_raw_bytes_are_verified_whatever_the_content_type(client, clock, seeded) -> None:  # type: ignore[no-untyped-def]
    for n, content_type in enumerate(("application/x-www-form-urlencoded", "text/plain")):
        response = deliver(client, event_body(f"evt_ctype_{n}"), content_type=content_type)
        assert response.status_code == 200, content_type
    assert [r.state for r in inbox(seeded)] == ["pending", "pending"]


# --- refused: 401, nothing written ---------------------------------------------------


def _v1(body: bytes, t: int = NOW, secret: str = SECRET) -> str:
    return compute_signature(secret, t, body)


BODY = event_body("evt_refused")
REFUSALS: dict[str, tuple[str | None, str]] = {
    "no_header": (None, "missing_header"),
    "empty_header": ("", "missing_header"),
    "garbage": ("nonsense", "malformed_header"),
    "empty_part": (f"t={NOW},,v1={_v1(BODY)}", "malformed_header"),
    "unknown_scheme_only": (f"t={NOW},v0={_v1(BODY)}", "malformed_header"),
    "signed_t": (f"t=+{NOW},v1={_v1(BODY)}", "malformed_header"),
    "decimal_t": (f"t=1.5,v1={_v1(BODY)}", "malformed_header"),
    "duplicate_t": (f"t={NOW},t={NOW},v1={_v1(BODY)}", "malformed_header"),
    "uppercase_v1": (f"t={NOW},v1={_v1(BODY).upper()}", "malformed_header"),
    "short_v1": (f"t={NOW},v1={_v1(BODY)[:-1]}", "malformed_header"),
    "no_t": (f"v1={_v1(BODY)}", "malformed_header"),
    "no_v1": (f"t={NOW}", "malformed_header"),
    "stale_old": (f"t={NOW - 301},v1={_v1(BODY, NOW - 301)}", "stale_timestamp"),
    "stale_future": (f"t={NOW + 301},v1={_v1(BODY, NOW + 301)}", "stale_timestamp"),
    "wrong_secret": (f"t={NOW},v1={_v1(BODY, secret='whsec_wrong')}", "no_match"),
    "several_v1_none_match": (f"t={NOW},v1={'0' * 64},v1={'1' * 64}", "no_match"),
}


@pytest.mark.parametrize(("header", "reason"), list(REFUSALS.values()), ids=list(REFUSALS))
def test_every_signature_failure_is_401_with_reason_and_writes_nothing(
    client, clock, seeded, header: str | None, reason: str
) -> None:  # type: ignore[no-untyped-def]
    headers = {} if header is None else {"X-Signature": header}
    response = client.post(PATH, data=BODY, headers=headers, content_type="application/json")
    assert_refused(response, reason)
    assert inbox(seeded) == []


def test_fullwidth_digits_in_t_over_http_are_malformed(client, clock, seeded) -> None:  # type: ignore[no-untyped-def]
    header = f"t=１７６３６３４９０２,v1={_v1(BODY)}"
    assert_refused(deliver(client, BODY, header=header), "malformed_header")
    assert inbox(seeded) == []


def test_sixteen_kib_header_is_401_not_500(client, clock, seeded) -> None:  # type: ignore[no-untyped-def]
    header = f"t={NOW},v1={_v1(BODY)}," + "v0=" + "a" * (16 * 1024)
    response = deliver(client, BODY, header=header)
    assert_refused(response, "malformed_header")
    assert inbox(seeded) == []


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: json.dumps(json.loads(b)).encode(),  # same JSON, different spacing
        lambda b: b.replace(b'"signed"', b'"voided"'),  # a status rewritten
        lambda b: b + b" ",  # one trailing byte
    ],
    ids=["reserialised", "status_rewritten", "trailing_space"],
)
def test_tampered_body_is_401_and_nothing_stored(client, clock, seeded, tamper) -> None:  # type: ignore[no-untyped-def]
    original = event_body("evt_tampered")
    tampered = tamper(original)
    assert tampered != original
    response = deliver(client, tampered, header=sign(original, [SECRET], timestamp=NOW))
    assert_refused(response, "no_match")
    assert inbox(seeded) == []


# --- tolerance, both directions, via the injected clock -------------------------------


@pytest.mark.parametrize(
    ("clock_offset", "accepted"),
    [(300, True), (301, False), (-300, True), (-301, False), (0, True)],
    ids=["old_edge", "too_old", "future_edge", "too_far_future", "now"],
)
def test_timestamp_tolerance_in_both_directions(
    client, clock, seeded, clock_offset: int, accepted: bool
) -> None:  # type: ignore[no-untyped-def]
    clock.set_unix(NOW + clock_offset)  # our clock moves; the platform signed at NOW
    response = deliver(client, event_body("evt_tolerance"))
    if accepted:
        assert response.status_code == 200
        assert len(inbox(seeded)) == 1
    else:
        assert_refused(response, "stale_timestamp")
        assert inbox(seeded) == []


# --- secret rotation ------------------------------------------------------------------


def test_secret_rotation_old_accepted_while_listed_then_refused(db_url, seeded) -> None:  # type: ignore[no-untyped-def]
    during = make_app(db_url, seeded, webhook_secrets=("whsec_new", "whsec_old")).test_client()
    assert deliver(during, event_body("evt_rot_old"), secrets=("whsec_old",)).status_code == 200
    assert deliver(during, event_body("evt_rot_new"), secrets=("whsec_new",)).status_code == 200
    both = deliver(during, event_body("evt_rot_both"), secrets=("whsec_new", "whsec_old"))
    assert both.status_code == 200

    after = make_app(db_url, seeded, webhook_secrets=("whsec_new",)).test_client()
    assert_refused(
        deliver(after, event_body("evt_rot_old_late"), secrets=("whsec_old",)), "no_match"
    )
    assert deliver(after, event_body("evt_rot_new_2"), secrets=("whsec_new",)).status_code == 200
    assert (
        deliver(after, event_body("evt_rot_both_2"), secrets=("whsec_new", "whsec_old")).status_code
        == 200
    )

    assert sorted(r.event_id for r in inbox(seeded)) == sorted(
        ["evt_rot_old", "evt_rot_new", "evt_rot_both", "evt_rot_new_2", "evt_rot_both_2"]
    )


# --- body size --------------------------------------------------------------------------


def _padded_event(event_id: str, size: int) -> bytes:
    """A valid status event of exactly ``size`` bytes (padding in an extra field)."""
    bare = event_body(event_id, pad="")
    body = event_body(event_id, pad="x" * (size - len(bare)))
    assert len(body) == size
    return body


def test_body_over_a_small_limit_is_413_and_nothing_stored(db_url, seeded) -> None:  # type: ignore[no-untyped-def]
    client = make_app(db_url, seeded, webhook_max_body_bytes=1024).test_client()
    over = _padded_event("evt_big", 1025)
    response = deliver(client, over)
    assert response.status_code == 413
    assert response.get_json()["code"] == "payload_too_large"
    assert inbox(seeded) == []
    # At the limit exactly, it is accepted.
    assert deliver(client, _padded_event("evt_limit", 1024)).status_code == 200
    assert [r.event_id for r in inbox(seeded)] == ["evt_limit"]


def test_body_over_the_default_256_kib_limit_is_413(client, clock, seeded, settings) -> None:  # type: ignore[no-untyped-def]
    assert settings.webhook_max_body_bytes == 256 * 1024
    response = deliver(client, _padded_event("evt_default_big", 256 * 1024 + 1))
    assert response.status_code == 413
    assert response.get_json()["code"] == "payload_too_large"
    assert inbox(seeded) == []
    assert deliver(client, _padded_event("evt_default_limit", 256 * 1024)).status_code == 200
    assert [r.event_id for r in inbox(seeded)] == ["evt_default_limit"]


def test_chunked_body_without_content_length_over_the_limit_is_413(db_url, seeded) -> None:  # type: ignore[no-untyped-def]
    client = make_app(db_url, seeded, webhook_max_body_bytes=1024).test_client()
    body = _padded_event("evt_chunked", 4096)
    response = client.post(
        PATH,
        input_stream=io.BytesIO(body),
        headers={
            "X-Signature": sign(body, [SECRET], timestamp=NOW),
            "Transfer-Encoding": "chunked",
        },
        environ_overrides={"wsgi.input_terminated": True},
        content_type="application/json",
    )
    assert response.status_code == 413
    assert inbox(seeded) == []


# --- verified but not a status event: stored, never refused ---------------------------


def test_signed_non_json_body_is_200_and_stored_dead(client, clock, seeded) -> None:  # type: ignore[no-untyped-def]
    body = b"this is not json {"
    response = deliver(client, body)
    assert response.status_code == 200
    assert response.get_json()["duplicate"] is False
    rows = inbox(seeded)
    assert len(rows) == 1
    assert rows[0].state == "dead"
    assert rows[0].last_error == "the signed body is not one UTF-8 JSON object"
    assert rows[0].event_id.startswith("sha256:")
    # Redelivery of the same unreadable bytes de-duplicates too.
    again = deliver(client, body)
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert len(inbox(seeded)) == 1


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\x80\x81\xfe not utf-8", "is not one UTF-8 JSON object"),
        (b'["a", "list"]', "is not one UTF-8 JSON object"),
        # Two readers of one body must not disagree on which event it is.
        (b'{"id": "evt_1", "id": "evt_2", "type": "prescription.status_updated"}', "repeats a key"),
        (b'{"id": "evt_1", "data": ' + b'{"a": ' * 40 + b"1" + b"}" * 41, "deeper than 32 levels"),
        (b'{"type": "prescription.status_updated"}', "has no event id"),
        (b'{"id": 42}', "has no event id"),
        (b'{"id": ""}', "has no event id"),
        (b'{"id": "' + b"e" * 101 + b'"}', "has no event id"),
    ],
    ids=[
        "not_utf8",
        "json_list",
        "duplicate_key",
        "too_deep",
        "no_id",
        "numeric_id",
        "empty_id",
        "id_too_long",
    ],
)
def test_signed_unreadable_bodies_are_200_and_stored_dead(
    client, clock, seeded, body: bytes, error: str
) -> None:  # type: ignore[no-untyped-def]
    response = deliver(client, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    rows = inbox(seeded)
    # The dead letter says why in a sentence an operator reads in `webhooks list --dead`.
    assert [r.state for r in rows] == ["dead"] and error in rows[0].last_error


def test_signed_body_with_a_nul_byte_is_200_and_stored_dead_not_500(client, clock, seeded) -> None:  # type: ignore[no-untyped-def]
    # A raw NUL is never valid JSON; PostgreSQL text columns cannot hold it either.
    response = deliver(client, b"\x00\x01 binary garbage")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [(r.state, r.last_error) for r in inbox(seeded)] == [
        ("dead", "the signed body is not one UTF-8 JSON object")
    ]


def test_signed_event_whose_id_holds_an_escaped_nul_is_stored_not_500(
    client, clock, seeded
) -> None:  # type: ignore[no-untyped-def]
    body = event_body("evt_nul_\u0000_id")  # json.dumps escapes the NUL as \\u0000
    assert b"\\u0000" in body and json.loads(body)["id"] == "evt_nul_\x00_id"
    response = deliver(client, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert len(inbox(seeded)) == 1


def test_signed_deeply_nested_json_is_200_and_stored_dead_not_500(client, clock, seeded) -> None:  # type: ignore[no-untyped-def]
    body = b"[" * 50_000 + b"]" * 50_000  # valid JSON, within 256 KiB
    response = deliver(client, body)
    assert response.status_code == 200, response.status_code
    assert [r.state for r in inbox(seeded)] == ["dead"]


def test_signed_event_of_unknown_type_is_200_stored_ignored(client, clock, seeded) -> None:  # type: ignore[no-untyped-def]
    body = event_body("evt_other_type", event_type="prescription.note_added")
    response = deliver(client, body)
    assert response.status_code == 200
    rows = inbox(seeded)
    assert [(r.event_id, r.event_type, r.state, r.last_error) for r in rows] == [
        (
            "evt_other_type",
            "prescription.note_added",
            "ignored",
            "event type 'prescription.note_added' is not one this service handles "
            "(only prescription.status_updated)",
        )
    ]
    assert rows[0].processed_at is not None
    # The worker has nothing to do with it.
    processor = InboxProcessor(
        seeded, worker_id="w-ignored", now=lambda: utcnow() + timedelta(seconds=5)
    )
    assert processor.run_batch() == 0
    assert inbox(seeded)[0].state == "ignored"


# --- database down: 503, never 2xx ----------------------------------------------------


def test_database_down_answers_503_never_2xx(db_url) -> None:  # type: ignore[no-untyped-def]
    down = Database(UNREACHABLE_DB)
    try:
        application = create_app(make_settings(db_url), db=down)
        application.config["TESTING"] = True
        application.extensions["erx"].unix_time = lambda: float(NOW)
        client = application.test_client()
        body = event_body("evt_db_down")
        for _ in range(2):  # the platform retries; still never acknowledged
            response = deliver(client, body)
            assert response.status_code == 503
            assert not 200 <= response.status_code < 300
            payload = response.get_json()
            assert payload["code"] == "inbox_unavailable"
            assert set(payload) >= {"code", "message", "errors"}
        # Unreadable but signed bodies are not acknowledged either: nothing could be stored.
        assert deliver(client, b"not json").status_code == 503
        # A bad signature is still refused as such (no database needed to refuse).
        assert_refused(deliver(client, body, secrets=("whsec_wrong",)), "no_match")
    finally:
        down.dispose()


# --- concurrency --------------------------------------------------------------------


def test_twenty_parallel_deliveries_of_one_event_store_one_row_and_one_history(
    app, clock, seeded
) -> None:  # type: ignore[no-untyped-def]
    prescription_id = issue(seeded)
    body = event_body("evt_parallel")
    header = sign(body, [SECRET], timestamp=NOW)
    n = 20
    barrier = threading.Barrier(n)
    results: list[tuple[int, Any]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            own_client = app.test_client()
            barrier.wait(timeout=30)
            response = own_client.post(
                PATH, data=body, headers={"X-Signature": header}, content_type="application/json"
            )
            with lock:
                results.append((response.status_code, response.get_json()))
        except BaseException as exc:  # noqa: BLE001 - reported below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(results) == n
    assert all(200 <= status < 300 for status, _ in results), [s for s, _ in results]
    assert sum(1 for _, payload in results if payload["duplicate"] is False) == 1
    rows = inbox(seeded)
    assert [(r.event_id, r.state) for r in rows] == [("evt_parallel", "pending")]

    processor = InboxProcessor(
        seeded,
        worker_id="w-parallel",
        now=lambda: utcnow() + timedelta(seconds=5),
        rand=lambda: 0.5,
    )
    assert processor.run_batch() == 1
    assert processor.run_batch() == 0
    assert history_count(seeded, prescription_id) == 1
    assert [r.state for r in inbox(seeded)] == ["processed"]


# --- logs ---------------------------------------------------------------------------


def test_logs_never_contain_the_body(app, client, clock, seeded, caplog) -> None:  # type: ignore[no-untyped-def]
    issue(seeded)
    marker = "PHI-Amelia-Hughes-07700-900123"
    caplog.set_level(logging.DEBUG)
    bodies = [
        event_body("evt_log_ok", patient_note=marker),
        event_body("evt_log_other", event_type="prescription.note_added", patient_note=marker),
        event_body("evt_log_unknown_token", token="SRXUNKNOWN", patient_note=marker),
        event_body("evt_log_bad_status", status="teleported", patient_note=marker),
        f"not json {marker}".encode(),
    ]
    for body in bodies:
        assert deliver(client, body).status_code == 200
        assert deliver(client, body).status_code == 200  # duplicate path
    assert deliver(client, bodies[0], secrets=("whsec_wrong",)).status_code == 401
    assert deliver(client, bodies[0], t=NOW - 1000).status_code == 401
    assert deliver(client, bodies[0], header="garbage").status_code == 401
    InboxProcessor(
        seeded, worker_id="w-log", now=lambda: utcnow() + timedelta(seconds=5), rand=lambda: 0.5
    ).run_batch()

    assert caplog.records, "the receiver logs its decisions"
    assert any("invalid" in r.getMessage() or "refused" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        text = record.getMessage() + repr(record.args)
        assert marker not in text, record.name
        assert "Amelia" not in text
    assert marker not in caplog.text


# --- the receipt's single-statement write ----------------------------------------------


def test_receipt_statement_is_committed_on_return_and_pooled_connections_stay_transactional(
    db_url, seeded
) -> None:  # type: ignore[no-untyped-def]
    """The INSERT commits on its own (one round trip on PostgreSQL); the connection goes back to
    the pool in ordinary transactional mode, even after a failed statement, so other code on it
    still gets BEGIN/ROLLBACK (an autocommit leak would make ORM sessions non-atomic)."""
    from sqlalchemy import text

    from app.foundation.db import single_statement

    db = Database(db_url)  # used one checkout at a time: its pool holds one connection
    try:
        with single_statement(db.engine) as conn:
            conn.execute(
                text(
                    "INSERT INTO webhook_inbox (event_id, body, state, attempts, next_attempt_at, received_at,"
                    " awaiting_prescription) VALUES ('evt_single', :b, 'dead', 0, :t, :t, false)"
                ),
                {"b": b"x", "t": utcnow()},
            )
            if db.is_postgres:  # visible to another connection before the block ends: committed
                assert [r.event_id for r in inbox(seeded) if r.event_id == "evt_single"] == [
                    "evt_single"
                ]
        with pytest.raises(Exception), single_statement(db.engine) as conn:  # noqa: B017, PT011
            conn.execute(text("SELECT * FROM no_such_table"))
        with db.engine.connect() as conn:
            if db.is_postgres:
                assert conn.connection.dbapi_connection.autocommit is False  # type: ignore[union-attr]
            conn.execute(text("DELETE FROM webhook_inbox WHERE event_id = 'evt_single'"))
            conn.rollback()  # a transaction to roll back: the delete must not have committed
        assert [r.event_id for r in inbox(seeded) if r.event_id == "evt_single"] == ["evt_single"]
    finally:
        db.dispose()

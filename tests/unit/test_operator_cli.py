"""Operator commands that list things: one JSON document per ``--json``, logins not ids,
and connection failures that name host and port but never credentials."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from app import create_app
from app.foundation.connection_names import url_location
from app.foundation.models import DispatchOutbox, Prescriber, Prescription, WebhookInbox
from app.mechanisms.amqp import unreachable
from scripts.stack import free_port
from tests.conftest import make_settings

JONES = "dr.jones@example.test"
PATEL = "dr.patel@example.test"
NOW = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)


def run(runner, *args: str):  # type: ignore[no-untyped-def]
    result = runner.invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_prescribers_list_names_logins_clinic_and_credential_state(runner, seeded):
    assert "credentials=missing" in run(runner, "prescribers", "list")
    store = runner.invoke(
        args=["prescribers", "set-credentials", JONES],
        env={"ERX_PRESCRIBER_PASSWORD": "pw", "ERX_PRESCRIBER_PIN": "1234"},
    )
    assert store.exit_code == 0 and f"credentials stored for prescriber {JONES}" in store.output
    rows = json.loads(run(runner, "prescribers", "list", "--json"))
    by_login = {row["login"]: row for row in rows}
    assert by_login[JONES]["credentials"] == "stored"
    assert by_login[PATEL]["credentials"] == "missing"
    assert by_login[JONES]["name"] == "Dr Rhiannon Jones"
    assert by_login[JONES]["clinic"] == "Harley Street Weight Clinic"
    with seeded.session() as s:
        s.execute(
            update(Prescriber).where(Prescriber.email == JONES).values(credentials_refused_at=NOW)
        )
    assert {
        r["login"]: r["credentials"]
        for r in json.loads(run(runner, "prescribers", "list", "--json"))
    }[JONES] == "blocked"
    text = run(runner, "prescribers", "list")
    assert f"login={JONES}" in text and "credentials=blocked" in text
    assert "pw" not in text.split() and "1234" not in text


@pytest.mark.parametrize(
    "command",
    [
        ("outbox", "list-dead"),
        ("outbox", "list-blocked"),
        ("webhooks", "list"),
        ("webhooks", "list", "--dead"),
    ],
)
def test_every_json_listing_is_one_document_even_when_empty(runner, seeded, command):
    assert json.loads(run(runner, *command, "--json")) == []


def test_outbox_list_dead_json_is_one_array(runner, seeded):
    with seeded.session() as s:
        ids = s.scalars(select(Prescription.id).order_by(Prescription.id).limit(2)).all()
        for pid in ids:
            s.add(
                DispatchOutbox(
                    prescription_id=pid,
                    flow="erx",
                    state="dead",
                    attempts=3,
                    next_attempt_at=NOW,
                    outcome_unknown=False,
                    last_error="platform_unavailable",
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
    rows = json.loads(run(runner, "outbox", "list-dead", "--json"))
    assert [row["prescription_id"] for row in rows] == ids
    assert rows[0]["last_error"] == "platform_unavailable"


CAUSE = "event names platform token SRX1 that matches no prescription"


def test_webhooks_list_shows_the_inbox_and_dead_events_without_bodies(runner, seeded):
    with seeded.session() as s:
        for n, state in enumerate(("processed", "dead", "pending")):
            s.add(
                WebhookInbox(
                    event_id=f"evt-{n}",
                    event_type="prescription.signed",
                    platform_token=f"SRX{n}",
                    body=b'{"patient": "Amelia Hughes"}',
                    signature="t=1,v1=x",
                    state=state,
                    attempts=n,
                    next_attempt_at=NOW,
                    received_at=NOW,
                    last_error=CAUSE if state == "dead" else None,
                )
            )
    everything = json.loads(run(runner, "webhooks", "list", "--json"))
    assert [row["event_id"] for row in everything] == ["evt-2", "evt-1", "evt-0"]  # newest first
    dead = json.loads(run(runner, "webhooks", "list", "--dead", "--json"))
    assert [(row["event_id"], row["state"], row["last_error"]) for row in dead] == [
        ("evt-1", "dead", CAUSE)
    ]
    text = run(runner, "webhooks", "list")
    (line,) = [line for line in text.splitlines() if "event_id=evt-1" in line]
    assert "state=dead" in line and f"last_error={CAUSE}" in line  # the whole sentence, one line
    assert "Amelia" not in text and "v1=x" not in text
    assert run(runner, "webhooks", "list", "--dead", "--limit", "1").count("event_id=") == 1


def test_an_unreachable_database_is_named_by_host_and_port_never_credentials(tmp_path):
    port = free_port()
    url = f"postgresql+psycopg2://erx:s3cret-pw@127.0.0.1:{port}/erx?connect_timeout=2"
    app = create_app(make_settings(url, mail_dir=str(tmp_path / "mail")))
    result = app.test_cli_runner().invoke(args=["prescribers", "list"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert lines == [
        f"Error: cannot reach the database at 127.0.0.1:{port} (DATABASE_URL): OperationalError"
    ]
    assert "s3cret" not in result.output and "erx:" not in result.output


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("postgresql+psycopg2://erx:secret@db.internal:6432/erx?password=x", "db.internal:6432"),
        ("postgresql://erx:secret@db.internal/erx", "db.internal:5432"),
        ("sqlite:///erx.sqlite3", "sqlite file erx.sqlite3"),
        ("sqlite:////var/lib/erx.sqlite3", "sqlite file /var/lib/erx.sqlite3"),
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "127.0.0.1:5672"),
        ("amqps://u:p@[::1]/vhost", "[::1]:5671"),
        ("postgresql://u:p@host:notaport/x", "an unparsable URL"),
    ],
)
def test_url_location_keeps_host_and_port_only(url, where):
    assert url_location(url) == where
    assert "secret" not in url_location(url)


def test_broker_message_names_the_error_and_where():
    message = unreachable("amqp://guest:guest@127.0.0.1:5672/%2F", ConnectionRefusedError())
    assert message == "RabbitMQ unreachable at 127.0.0.1:5672 (ConnectionRefusedError)"

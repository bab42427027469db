"""``make demo``: one Region B prescription travels to the platform sandbox and back, one Region A
prescription goes to its pharmacy as a PDF by email.

Migrates and seeds the database (``DATABASE_URL``, or the embedded SQLite file
under ``instance/``), starts the sandbox (auto mode: it signs and dispenses),
the service under gunicorn and one worker. Then it acts as the patient app
does, with a development token per patient (``flask tokens mint``): it
searches a pharmacy (``GET /api/v1/pharmacies``) and sends (``POST
.../send``) one draft of a Region B patient and one of a Region A patient,
waits, prints both timelines (``dispensed``; ``emailed``), stops everything
and exits 0 (1 if either did not arrive in time). The Region A email is
written by the development mail backend under ``MAIL_DIR`` (SMTP in
production). The event publisher and the reference notification
consumer (``python -m notifier run``) run too (RabbitMQ at ``AMQP_URL``, on
exchange and queue names unique to this run, deleted at the end); the demo
prints the events the consumer received for each prescription (none, with a
note, when no broker answers).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import requests
from sqlalchemy import func, make_url, select

from scripts.stack import BIN, REPO_ROOT, Stack, base_env, free_port
from scripts.timeline import logs_line, timeline_lines

TIMEOUT_S = 90


def pick_draft(region: str) -> tuple[int, str, str]:
    """Return (prescription id, reference, patient external ref) of the first draft of a ``region`` patient."""
    from app.foundation.config import load_settings
    from app.foundation.db import Database
    from app.foundation.models import Patient, Prescription

    db = Database(load_settings().database_url)
    try:
        with db.session() as session:
            row = session.execute(
                select(Prescription.id, Prescription.reference, Patient.external_ref)
                .join(Patient, Patient.id == Prescription.patient_id)
                .where(Patient.region_code == region, Prescription.status == "draft")
                .order_by(Prescription.id)
            ).first()
            if row is None:
                raise SystemExit(
                    f"no draft Region {region} prescription left: delete instance/erx.sqlite3 or re-seed"
                )
            return row.id, row.reference, row.external_ref
    finally:
        db.dispose()


def send_as_patient(stack: Stack, region: str, query: str) -> tuple[int, str] | None:
    """As the patient app: search ``query`` in ``region``, send the first draft there; returns (id, reference)."""
    pid, ref, patient_ref = pick_draft(region)
    patient = stack.bearer(role="patient", subject=patient_ref)
    hits = requests.get(
        f"{stack.service_url}/api/v1/pharmacies",
        params={"region": region, "q": query, "per_page": 1},
        headers=patient,
        timeout=10,
    ).json()["items"]
    if not hits:
        print(f"== no Region {region} pharmacy matches {query!r}")
        return None
    pharmacy = hits[0]
    resp = requests.post(
        f"{stack.service_url}/api/v1/prescriptions/{pid}/send",
        json={"pharmacy_id": pharmacy["id"]},
        headers={**patient, "Idempotency-Key": f"demo-{ref}"},
        timeout=10,
    )
    print(
        f"== Region {region}: patient {patient_ref} searched {query!r}, chose {pharmacy['name']} "
        f"({pharmacy['address']}); POST /api/v1/prescriptions/{pid}/send -> {resp.status_code}"
    )
    return (pid, ref) if resp.status_code == 202 else None


def wait_for(
    stack: Stack, pid: int, finals: tuple[str, ...], *, auth: dict[str, str], deadline: float
) -> dict:
    """Poll the status resource with ``auth`` until it reaches one of ``finals`` or ``deadline``."""
    view: dict = {}
    while time.monotonic() < deadline:
        view = requests.get(
            f"{stack.service_url}/api/v1/prescriptions/{pid}", headers=auth, timeout=10
        ).json()
        if view["status"] in finals:
            break
        time.sleep(0.5)
    return view


def start_events(stack: Stack) -> None:
    """Start ``events publish``, then ``python -m notifier run``, on names unique to this run.

    The publisher goes first, as an operator following the README would start
    it: it declares the notifier's queue before it publishes, so nothing is
    lost while the notifier starts.
    """
    suffix = uuid.uuid4().hex[:8]
    stack.env.update(
        EVENTS_EXCHANGE=f"erx.events.demo-{suffix}",
        EVENTS_DLX=f"erx.events.dlq.demo-{suffix}",
        NOTIFY_QUEUE=f"erx.notify.demo-{suffix}",
    )
    stack._spawn("publisher", [str(BIN / "flask"), "--app", "app", "events", "publish"])
    stack._spawn("notifier", [str(BIN / "python"), "-m", "notifier", "run"])
    print("== event publisher and reference notification consumer (python -m notifier) started")


def _flask(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``flask --app app ARGS`` with the stack's environment (the CLI, as an operator would)."""
    return subprocess.run(
        [str(BIN / "flask"), "--app", "app", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _received(stack: Stack, prescription_id: int) -> list[dict]:
    """What the notifier handled for ``prescription_id`` (``python -m notifier received``)."""
    args = [
        str(BIN / "python"),
        "-m",
        "notifier",
        "received",
        "--prescription",
        str(prescription_id),
        "--json",
    ]
    done = subprocess.run(
        args, env=stack.env, capture_output=True, text=True, timeout=60, check=False, cwd=REPO_ROOT
    )
    return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else []


NOTIFIED_STATUSES = ("signed", "dispensed", "rejected", "emailed")
"""The statuses a patient is told of: what the notifier binds (contracts/event_topology.py)."""


def print_notifications(stack: Stack, prescription_id: int) -> None:
    """Print the events published for ``prescription_id`` and what the reference consumer received (ids only)."""
    from app.foundation.config import load_settings
    from app.foundation.db import Database
    from app.foundation.models import EventOutbox

    db = Database(load_settings().database_url)
    try:
        deadline = time.monotonic() + 15
        while True:
            rows = _received(stack, prescription_id)
            with db.session() as session:
                published = session.scalar(
                    select(func.count())
                    .select_from(EventOutbox)
                    .where(
                        EventOutbox.prescription_id == prescription_id,
                        EventOutbox.state == "published",
                    )
                )
                # The routing key ends in the new status: prescription.status_changed.<region>.<to>.
                keys = session.scalars(
                    select(EventOutbox.routing_key).where(
                        EventOutbox.prescription_id == prescription_id
                    )
                )
                expected = {key.rsplit(".", 1)[-1] for key in keys} & set(NOTIFIED_STATUSES)
            if {r["to"] for r in rows} >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        db.dispose()
    print(f"\n== events: {published} published; the reference notification consumer received")
    for row in rows:
        print(f"   {row['message_id']}  -> {row['to']:<10} patient {row['outcome']}")
    if not rows and not expected:
        print(f"   nothing: it is told only of {', '.join(NOTIFIED_STATUSES)}")
    elif not rows:
        print("   none (is RabbitMQ running at AMQP_URL? `rabbitmq-server -detached`)")


def drop_event_names(stack: Stack) -> None:
    """Delete this run's exchanges and queues (``flask events teardown``).

    A broker that is down has nothing to delete.
    """
    if "NOTIFY_QUEUE" in stack.env:
        _flask(stack, "events", "teardown")


def main() -> int:
    started = time.monotonic()
    web_port = free_port()
    stack = Stack(env=base_env())
    try:
        url = stack.env.get("DATABASE_URL")
        where = (
            make_url(url).render_as_string(hide_password=True)
            if url
            else "the embedded SQLite database"
        )
        print("== migrating and seeding", where)
        stack.prepare_database()
        stack.start_sandbox(webhook_port=web_port, extra=["--auto", "--auto-delay", "0.5"])
        print(f"== sandbox at {stack.sandbox_url} (auto mode)")
        stack.start_service(port=web_port)
        print(f"== service at {stack.service_url} (gunicorn)")
        stack.start_worker()
        print("== worker started")
        start_events(stack)

        sent_b = send_as_patient(stack, "B", "W1U")  # a postcode prefix: Marylebone Pharmacy
        sent_a = send_as_patient(stack, "A", "Belfast")
        if sent_b is None or sent_a is None:
            return 1

        service = stack.bearer(role="service")  # server to server: sees the platform token
        deadline = time.monotonic() + TIMEOUT_S
        ok = True
        for (pid, ref), wanted in ((sent_b, "dispensed"), (sent_a, "emailed")):
            view = wait_for(
                stack,
                pid,
                (wanted, "rejected", "dead", "email_in_doubt"),
                auth=service,
                deadline=deadline,
            )
            where = (
                f"platform token {view.get('platform_token') or '-'}"
                if wanted == "dispensed"
                else "PDF by email"
            )
            print(f"\n== Region {view.get('region')}: timeline of {ref} ({where})")
            print("\n".join(timeline_lines(view.get("history", []))))
            print(f"   final status: {view.get('status')}")
            ok = ok and view.get("status") == wanted
            print_notifications(stack, pid)
        mail_dir = stack.env.get("MAIL_DIR", "instance/mail")
        print(
            f"\n== the Region A email (with its PDF) is under {mail_dir}/ (development mail backend)"
        )
        print(f"== done in {time.monotonic() - started:.1f} s")
        return 0 if ok else 1
    finally:
        names = list(stack.procs)
        stack.stop()
        drop_event_names(stack)
        print("== stopped sandbox, service and worker")
        if names:
            print(logs_line(stack.log_dir, names, root=REPO_ROOT))


if __name__ == "__main__":
    sys.exit(main())

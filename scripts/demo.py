"""``make demo``: one seeded Region B prescription travels to the platform sandbox and back.

Migrates and seeds the database (``DATABASE_URL``, or the embedded SQLite file
under ``instance/``), starts the sandbox (auto mode: it signs and dispenses),
the service under gunicorn and one worker, sends one draft Region B
prescription to a seeded pharmacy, waits for the webhooks, prints the
timeline, stops everything and exits 0 (1 if the prescription did not arrive
at ``dispensed`` in time). The event publisher and the reference notification
consumer run too (RabbitMQ at ``AMQP_URL``, on exchange and queue names unique
to this run, deleted at the end); the demo prints the events the consumer
received for its prescription (none, with a note, when no broker answers).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import requests
from sqlalchemy import func, make_url, select

from scripts.stack import BIN, REPO_ROOT, Stack, base_env, free_port
from scripts.timeline import logs_line, timeline_lines

TIMEOUT_S = 90


def pick_prescription() -> tuple[int, str, int, str]:
    """Return (prescription id, reference, pharmacy id, pharmacy name) for the demo."""
    from app.config import load_settings
    from app.db import Database
    from app.models import Patient, Pharmacy, Prescription

    db = Database(load_settings().database_url)
    try:
        with db.session() as session:
            prescription = session.scalars(
                select(Prescription)
                .join(Patient, Patient.id == Prescription.patient_id)
                .where(Patient.region_code == "B", Prescription.status == "draft")
                .order_by(Prescription.id)
            ).first()
            pharmacy = session.scalars(
                select(Pharmacy).where(Pharmacy.region_code == "B", Pharmacy.branch_id.is_not(None))
                .order_by(Pharmacy.branch_id)
            ).first()
            if prescription is None or pharmacy is None:
                raise SystemExit("no draft Region B prescription left: delete instance/erx.sqlite3 or re-seed")
            return prescription.id, prescription.reference, pharmacy.id, pharmacy.name
    finally:
        db.dispose()


def start_events(stack: Stack) -> None:
    """Start ``events publish`` and ``notify`` on names unique to this run (a shared broker stays clean)."""
    suffix = uuid.uuid4().hex[:8]
    stack.env.update(EVENTS_EXCHANGE=f"erx.events.demo-{suffix}", EVENTS_DLX=f"erx.events.dlq.demo-{suffix}",
                     NOTIFY_QUEUE=f"erx.notify.demo-{suffix}")
    stack._spawn("notify", [str(BIN / "flask"), "--app", "app", "notify"])
    stack._spawn("publisher", [str(BIN / "flask"), "--app", "app", "events", "publish"])
    # Messages are only kept for queues that exist: wait until the consumer declared its queue.
    ready = _flask(stack, "notify", "wait-ready", "--timeout", "20")
    if ready.returncode == 0:
        print("== event publisher and reference notification consumer started")
    else:
        print(f"== no events in this demo: {ready.stderr.strip().splitlines()[-1] if ready.stderr.strip() else 'notify not ready'}")


def _flask(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``flask --app app ARGS`` with the stack's environment (the CLI, as an operator would)."""
    return subprocess.run([str(BIN / "flask"), "--app", "app", *args], env=stack.env, capture_output=True,
                          text=True, timeout=60, check=False)


def print_notifications(prescription_id: int) -> None:
    """Print what the reference consumer received for ``prescription_id`` (ids and statuses only)."""
    from app.config import load_settings
    from app.db import Database
    from app.models import EventOutbox, NotifyInbox

    db = Database(load_settings().database_url)
    try:
        deadline = time.monotonic() + 15
        while True:
            with db.session() as session:
                rows = session.execute(
                    select(NotifyInbox.message_id, NotifyInbox.to_status, NotifyInbox.outcome)
                    .join(EventOutbox, EventOutbox.event_id == NotifyInbox.message_id)
                    .where(EventOutbox.prescription_id == prescription_id).order_by(NotifyInbox.id)
                ).all()
                published = session.scalar(
                    select(func.count()).select_from(EventOutbox)
                    .where(EventOutbox.prescription_id == prescription_id, EventOutbox.state == "published"))
            if {r.to_status for r in rows} >= {"signed", "dispensed"} or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        db.dispose()
    print(f"\n== events: {published} published; the reference notification consumer received")
    for row in rows:
        print(f"   {row.message_id}  -> {row.to_status:<10} patient {row.outcome}")
    if not rows:
        print("   none (is RabbitMQ running at AMQP_URL? `rabbitmq-server -detached`)")


def drop_event_names(stack: Stack) -> None:
    """Delete this run's exchanges and queues (``flask events teardown``); a broker that is down has nothing to delete."""
    if "NOTIFY_QUEUE" in stack.env:
        _flask(stack, "events", "teardown")


def main() -> int:
    started = time.monotonic()
    web_port = free_port()
    stack = Stack(env=base_env())
    try:
        url = stack.env.get("DATABASE_URL")
        where = make_url(url).render_as_string(hide_password=True) if url else "the embedded SQLite database"
        print("== migrating and seeding", where)
        stack.prepare_database()
        stack.start_sandbox(webhook_port=web_port, extra=["--auto", "--auto-delay", "0.5"])
        print(f"== sandbox at {stack.sandbox_url} (auto mode)")
        stack.start_service(port=web_port)
        print(f"== service at {stack.service_url} (gunicorn)")
        stack.start_worker()
        print("== worker started")
        start_events(stack)

        pid, ref, pharmacy_id, pharmacy = pick_prescription()
        auth = stack.bearer(role="service")  # server to server: sees the platform token
        resp = requests.post(
            f"{stack.service_url}/api/v1/prescriptions/{pid}/send",
            json={"pharmacy_id": pharmacy_id}, headers={**auth, "Idempotency-Key": f"demo-{ref}"}, timeout=10,
        )
        print(f"== POST /api/v1/prescriptions/{pid}/send -> {resp.status_code} {resp.json()}")
        print(f"   prescription {ref} to pharmacy {pharmacy_id} ({pharmacy})")
        if resp.status_code != 202:
            return 1

        view: dict = {}
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            view = requests.get(f"{stack.service_url}/api/v1/prescriptions/{pid}", headers=auth, timeout=10).json()
            if view["status"] in ("dispensed", "rejected", "dead"):
                break
            time.sleep(0.5)
        print(f"\n== timeline of {ref} (platform token {view.get('platform_token') or '-'})")
        print("\n".join(timeline_lines(view.get("history", []))))
        print_notifications(pid)
        print(f"\n== final status: {view.get('status')}  ({time.monotonic() - started:.1f} s)")
        return 0 if view.get("status") == "dispensed" else 1
    finally:
        names = list(stack.procs)
        stack.stop()
        drop_event_names(stack)
        print("== stopped sandbox, service and worker")
        if names:
            print(logs_line(stack.log_dir, names, root=REPO_ROOT))


if __name__ == "__main__":
    sys.exit(main())

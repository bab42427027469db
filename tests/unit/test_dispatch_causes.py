"""Dead letters and blocked sends say why, in the sentence an operator acts on.

The cause is stored as the outbox row's ``last_error`` and shown by ``outbox list-dead`` /
``outbox list-blocked`` and the API's dispatch state; metrics carry a reason code (a small
fixed set), never the sentence. Configuration faults (credentials, a clinic with no API
clinic id mapped) are not retried as transient. Against the fake platform (``responses``)
and the real database, as ``test_dispatch``.
"""

from __future__ import annotations

import json

from cryptography.fernet import Fernet
from prometheus_client import REGISTRY
from sqlalchemy import update

from app.foundation.db import utcnow
from app.foundation.models import Clinic, Prescriber
from app.services.clinics import verify_clinics
from tests.support import PRESCRIBER_SECRETS
from tests.unit import test_dispatch
from tests.unit.test_blocked_credentials import JONES, references, store
from tests.unit.test_dispatch import outbox_of, prescription, queue, view

rsps, platform, erx, clock, make_dispatcher = (
    test_dispatch.rsps,
    test_dispatch.platform,
    test_dispatch.erx,
    test_dispatch.clock,
    test_dispatch.make_dispatcher,
)


def stopped(reason: str, outcome: str = "blocked_credentials") -> float:
    labels = {"route": "erx", "outcome": outcome, "reason": reason}
    return REGISTRY.get_sample_value("erx_sends_stopped_total", labels) or 0.0


def listed(runner, command: str) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    result = runner.invoke(args=["outbox", command, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # one JSON document


def test_undecryptable_credentials_block_at_once_with_the_cause_and_resume_when_replaced(  # type: ignore[no-untyped-def]
    client, runner, seeded, with_credentials, platform, make_dispatcher
) -> None:
    # Encrypted with a key that is not in ERX_ENCRYPTION_KEYS (a key rotated out too early).
    stray = Fernet(Fernet.generate_key())
    with seeded.session() as s:
        s.execute(
            update(Prescriber)
            .where(Prescriber.email == JONES)
            .values(password_enc=stray.encrypt(b"x").decode(), pin_enc=stray.encrypt(b"1").decode())
        )
    pid = queue(client, seeded, references(seeded, JONES, 1)[0])
    before = stopped("credentials_undecryptable")

    assert make_dispatcher().run_batch() == 1

    cause = (
        f"the credentials of prescriber {JONES} do not decrypt with any key in ERX_ENCRYPTION_KEYS"
    )
    row = outbox_of(seeded, pid)
    # Not retried as transient: parked at once, no attempt counted, nothing sent.
    assert (row.state, row.attempts, row.last_error) == ("blocked_credentials", 0, cause)
    assert platform.posts == [] and platform.logins.get(JONES, 0) == 0
    assert view(client, pid)["dispatch"]["last_error"] == cause
    blocked = listed(runner, "list-blocked")
    assert [(i["prescription_id"], i["last_error"]) for i in blocked] == [(pid, cause)]
    assert stopped("credentials_undecryptable") == before + 1

    store(runner, JONES, PRESCRIBER_SECRETS[JONES][0])
    assert make_dispatcher().run_batch() == 1
    assert prescription(seeded, pid).status == "issued"


def test_missing_credentials_block_with_the_command_that_fixes_them(  # type: ignore[no-untyped-def]
    client, runner, seeded, with_credentials, platform, make_dispatcher
) -> None:
    pid = queue(client, seeded, references(seeded, JONES, 1)[0])  # the send checks they exist
    with seeded.session() as s:  # removed while the send waits in the queue
        s.execute(
            update(Prescriber)
            .where(Prescriber.email == JONES)
            .values(password_enc=None, pin_enc=None)
        )

    make_dispatcher().run_batch()

    row = outbox_of(seeded, pid)
    assert row.state == "blocked_credentials"
    assert row.last_error == (
        f"prescriber {JONES} has no platform credentials; run `prescribers set-credentials`"
    )


def test_a_refused_login_blocks_with_a_sentence_not_a_code(  # type: ignore[no-untyped-def]
    client, runner, seeded, with_credentials, platform, make_dispatcher
) -> None:
    store(runner, JONES, "wrong-password")
    pid = queue(client, seeded, references(seeded, JONES, 1)[0])
    before = stopped("login_failed")

    make_dispatcher().run_batch()

    cause = (
        f"the platform refused the login of prescriber {JONES} (login_failed); "
        "run `prescribers set-credentials`"
    )
    assert outbox_of(seeded, pid).last_error == cause
    assert [i["last_error"] for i in listed(runner, "list-blocked")] == [cause]
    assert stopped("login_failed") == before + 1


def test_a_dead_letter_carries_the_platform_failure_and_the_metric_its_code(  # type: ignore[no-untyped-def]
    client, runner, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:
    pid = queue(client, seeded, "rx-000002")
    platform.post_script = [(503, {"X-Request-Id": "req-9"}, {"success": False})] * 2
    dispatcher = make_dispatcher(dispatch_max_attempts=2, breaker_fail_max=100)
    for _ in range(2):
        dispatcher.run_batch()
        clock.advance(60)

    row = outbox_of(seeded, pid)
    assert row.state == "dead"
    # The connector's own safe text: status, code and the platform's request id, not a class name.
    assert "http_status=503" in row.last_error and "request_id=req-9" in row.last_error
    assert [i["last_error"] for i in listed(runner, "list-dead")] == [row.last_error]
    assert view(client, pid)["dispatch"]["last_error"] == row.last_error
    reasons = {
        s.labels["reason"]
        for m in REGISTRY.collect()
        if m.name == "erx_sends_stopped"
        for s in m.samples
        if s.labels.get("outcome") == "dead"
    }
    assert reasons and all(" " not in r for r in reasons)  # codes, never sentences


def test_a_clinic_with_no_api_clinic_id_is_a_dead_letter_at_once_never_a_send(  # type: ignore[no-untyped-def]
    client, runner, seeded, with_credentials, platform, erx, make_dispatcher
) -> None:
    with seeded.session() as s:  # a clinic known by its display id only
        s.execute(update(Clinic).where(Clinic.display_id == "201334").values(platform_id=None))
    pid = queue(client, seeded, references(seeded, JONES, 1)[0])
    before = stopped("clinic_unmapped", outcome="dead")

    assert make_dispatcher().run_batch() == 1

    cause = (
        "clinic 201334 has no API clinic id mapped: run `flask --app app clinics verify`, "
        "then `flask --app app outbox requeue` the send"
    )
    row = outbox_of(seeded, pid)
    # Not sent for the platform to refuse, not retried as transient: dead at once, no attempt.
    assert (row.state, row.attempts, row.last_error) == ("dead", 0, cause)
    assert platform.posts == [] and platform.logins.get(JONES, 0) == 0
    assert prescription(seeded, pid).status == "dead"  # not "rejected": the data is ours to fix
    assert view(client, pid)["dispatch"]["last_error"] == cause
    dead = listed(runner, "list-dead")
    assert [(i["prescription_id"], i["last_error"]) for i in dead] == [(pid, cause)]
    assert stopped("clinic_unmapped", outcome="dead") == before + 1

    # The fix the sentence names: verify maps the clinic from the platform, then requeue.
    dispatcher = make_dispatcher()
    checks = verify_clinics(seeded, erx, dispatcher.cipher, JONES, base_url="fake", now=utcnow())
    assert [(c.display_id, c.platform_id, c.ok, c.mapped) for c in checks] == [
        ("201334", 994, True, True)
    ]
    requeued = runner.invoke(args=["outbox", "requeue", str(row.id)])
    assert requeued.exit_code == 0, requeued.output
    assert dispatcher.run_batch() == 1
    assert prescription(seeded, pid).status == "issued"
    assert [p["clinic_id"] for p in platform.posts] == [994]

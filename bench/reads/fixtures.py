"""The data the read benchmark reads: 24 patients with 50 prescriptions each, all with timelines.

Built with the project's SQL seed scripts (``scripts/seed/001_reference.sql`` through
``Stack.prepare_database``, then ``002_test_prescriptions.sql`` with its count raised to
``PRESCRIPTIONS``: prescription n belongs to patient pt-((n-1) % 24 + 1), so every patient
has 50), then made to look like prescriptions that went all the way: status ``dispensed``
at a Region B pharmacy with a platform token (``SRXR<id>``), a ``done`` dispatch outbox row
and five history rows (queued, issued, signed, printed, dispensed; the last three from
webhooks with event ids). Set-based and idempotent: a second call changes nothing.
The growth seeder (``bench.growth``) loads the same fixtures before its bulk rows, so that
the small and the grown database answer the same requests about the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, text

from bench.database import bulk_seed_sql, run_sql

PRESCRIPTIONS = 1200  # 50 per patient (24 patients in the reference seed)
PATIENT = "pt-0001"  # Region B in the reference seed
TOKEN_PREFIX = "SRXR"
_N = "CAST(substr(reference, 4) AS INTEGER)"  # n of reference rx-00000n

_TIMELINE_SQL = f"""
UPDATE prescriptions SET status = 'dispensed',
  pharmacy_id = (SELECT min(id) FROM pharmacies WHERE branch_id IS NOT NULL),
  platform_token = '{TOKEN_PREFIX}' || CAST(id AS VARCHAR(20)),
  created_at = now() - make_interval(hours => {PRESCRIPTIONS} - {_N}),
  updated_at = now() - make_interval(hours => {PRESCRIPTIONS} - {_N} - 5),
  last_event_at = now() - make_interval(hours => {PRESCRIPTIONS} - {_N} - 5)
WHERE reference LIKE 'rx-%' AND status = 'draft' AND platform_token IS NULL
  AND CAST(substr(reference, 4) AS INTEGER) <= {PRESCRIPTIONS};

INSERT INTO dispatch_outbox (prescription_id, flow, state, attempts, next_attempt_at,
                             outcome_unknown, created_at, updated_at)
SELECT p.id, 'erx', 'done', 1, p.created_at, false, p.created_at, p.created_at + interval '1 second'
FROM prescriptions p WHERE p.platform_token LIKE '{TOKEN_PREFIX}%'
ORDER BY p.id
ON CONFLICT DO NOTHING;

INSERT INTO prescription_status_history (prescription_id, from_status, to_status, occurred_at,
                                         received_at, source, event_id)
SELECT p.id, s.from_status, s.to_status, p.created_at + make_interval(hours => s.k),
       p.created_at + make_interval(hours => s.k, secs => 1), s.source,
       CASE WHEN s.source = 'webhook' THEN 'evt_reads_' || p.id || '_' || s.to_status END
FROM prescriptions p
CROSS JOIN (VALUES (0, 'draft', 'queued', 'api'), (1, 'queued', 'issued', 'service'),
                   (2, 'issued', 'signed', 'webhook'), (3, 'signed', 'printed', 'webhook'),
                   (4, 'printed', 'dispensed', 'webhook')) AS s(k, from_status, to_status, source)
WHERE p.platform_token LIKE '{TOKEN_PREFIX}%'
  AND NOT EXISTS (SELECT 1 FROM prescription_status_history h WHERE h.prescription_id = p.id)
ORDER BY p.id, s.k;
"""


@dataclass(frozen=True)
class ReadFixtures:
    """What the requests name: ``patient`` (external ref) and its prescription ids, oldest first."""

    patient: str
    prescription_ids: tuple[int, ...]


def load(engine: Engine) -> ReadFixtures:
    """Seed the fixtures into an already migrated and seeded (reference data) PostgreSQL database.

    Returns the patient and its prescription ids. Raises RuntimeError when the patient ends
    up with fewer than 50 prescriptions (the list of 50 would measure a shorter list).
    """
    run_sql(engine, bulk_seed_sql(PRESCRIPTIONS))
    run_sql(engine, _TIMELINE_SQL)
    with engine.connect() as conn:
        ids = [
            int(r[0])
            for r in conn.execute(
                text(
                    "SELECT p.id FROM prescriptions p JOIN patients pt ON pt.id = p.patient_id"
                    " WHERE pt.external_ref = :ref AND p.platform_token LIKE :tok ORDER BY p.id"
                ),
                {"ref": PATIENT, "tok": TOKEN_PREFIX + "%"},
            )
        ]
    if len(ids) < 50:
        raise RuntimeError(
            f"{PATIENT} has {len(ids)} seeded prescriptions with a timeline, 50 needed"
        )
    return ReadFixtures(PATIENT, tuple(ids))

"""Storms: many prescriptions walked through random lifecycles at once.

Used with ``webhook_hold`` + release to flood a receiver with duplicated,
shuffled, out-of-order events. Each transition enqueues one webhook event.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from sandbox import directory, lifecycle
from sandbox.store import MedicineLine, Prescription, Store
from sandbox.webhooks import OTHER_EVENT_TYPES

_OUTCOMES = ("dispensed", "expired", "voided", "open")
_OUTCOME_WEIGHTS = (60, 12, 13, 15)


def random_path(rng: random.Random) -> list[str]:
    """A random §6 path after ``issued``.

    Ends dispensed (always via signed, maybe printed), expired or voided (from
    issued, signed or printed), or stays open at signed or printed.
    """
    outcome = rng.choices(_OUTCOMES, weights=_OUTCOME_WEIGHTS)[0]
    path: list[str] = []
    if outcome in ("dispensed", "open") or rng.random() < 0.85:
        path.append(lifecycle.SIGNED)
        if rng.random() < 0.4:
            path.append(lifecycle.PRINTED)
    if outcome != "open":
        path.append(outcome)
    return path


NoiseEmitter = Callable[[Prescription, str], object]
"""``emit(prescription, event_type)``: enqueue one event of another type."""


def run_storm(
    store: Store,
    *,
    count: int,
    now: float,
    rng: random.Random,
    noise_events: int = 0,
    emit_noise: NoiseEmitter | None = None,
) -> list[Prescription]:
    """Create ``count`` prescriptions (``client_ref_id`` ``storm-000001``, ...) and walk each.

    After its transitions, each prescription also gets ``noise_events`` events
    of other types (``OTHER_EVENT_TYPES``) through ``emit_noise``. Each prescription is created
    ``len(path)`` seconds before ``now`` and makes
    one transition per second, ending at ``now``, so histories are ordered in
    time. Numbering continues across storms until ``/sandbox/reset``. Returns the
    prescriptions in their final state.
    """
    prescriber = directory.PRESCRIBERS[0]
    usable = [m for m in directory.MEDICINES if m.controlled_schedule is None]
    results: list[Prescription] = []
    for _ in range(count):
        number = store.next_storm_number()
        path = random_path(rng)
        created_at = now - len(path)
        medicine = rng.choice(usable)
        rx = store.create(
            client_ref_id=f"storm-{number:06d}",
            prescriber_id=prescriber.id,
            clinic_id=prescriber.clinic_ids[0],
            contact_id=rng.choice(directory.PHARMACIES).branch_id,
            medicines=[
                MedicineLine(
                    vpid=medicine.vpid,
                    description=medicine.description,
                    qty="1",
                    directions="As directed",
                )
            ],
            patient_name="Storm Patient",
            now=created_at,
        )
        for step, status in enumerate(path, start=1):
            rx = store.transition(rx.id, status, now=created_at + step).prescription
        if emit_noise is not None:
            for _ in range(noise_events):
                emit_noise(rx, rng.choice(OTHER_EVENT_TYPES))
        results.append(rx)
    return results

"""The sandbox's in-memory state: access tokens, sessions and prescriptions.

One lock guards everything. Prescriptions are immutable snapshots replaced on
every transition, so callers may keep and read what the store returns.
Every transition (contract §6) is recorded in the prescription's history and
handed to the registered listeners (the webhook emitter), in order, under the
lock, so a prescription's events are enqueued in the order they happened.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox import lifecycle
from sandbox.clock import iso_utc
from sandbox.identifiers import new_opaque_token, new_prescription_id


@dataclass(frozen=True)
class HistoryEntry:
    """One status a prescription reached, at Unix seconds ``at``."""

    status: str
    at: float

    def to_json(self) -> dict[str, str]:
        return {"status": self.status, "at": iso_utc(self.at)}


@dataclass(frozen=True)
class MedicineLine:
    """One medicine as issued (contract §4)."""

    vpid: str | None
    description: str
    qty: str
    directions: str


@dataclass(frozen=True)
class Prescription:
    """A prescription as the platform holds it.

    ``patient_name`` is kept only for the pharmacy page; no other patient
    details (date of birth, phone, address) are retained.
    """

    id: str
    client_ref_id: str | None
    prescriber_id: int
    clinic_id: int
    contact_id: int
    status: str
    created_at: float
    history: tuple[HistoryEntry, ...]
    medicines: tuple[MedicineLine, ...]
    patient_name: str

    def summary_json(self) -> dict[str, Any]:
        """The shape returned on issue (§4): id, status, client_ref_id, created_at."""
        return {
            "id": self.id,
            "status": self.status,
            "client_ref_id": self.client_ref_id,
            "created_at": iso_utc(self.created_at),
        }

    def to_json(self) -> dict[str, Any]:
        """The shape returned on read and lookup (§4, §5): the summary plus history."""
        body = self.summary_json()
        body["history"] = [entry.to_json() for entry in self.history]
        return body


@dataclass(frozen=True)
class Transition:
    """A status change that happened: the prescription after it, and from where."""

    prescription: Prescription
    previous_status: str
    status: str
    at: float


TransitionListener = Callable[[Transition], None]


class UnknownPrescription(KeyError):
    """No prescription has this token."""


class InvalidTransition(Exception):
    """§6 does not allow this move; ``current`` is the prescription's status."""

    def __init__(self, prescription_id: str, current: str, target: str) -> None:
        super().__init__(f"{prescription_id}: {current} -> {target} is not allowed")
        self.prescription_id = prescription_id
        self.current = current
        self.target = target


class Store:
    """Thread-safe state of one sandbox. Times are Unix seconds passed in by callers."""

    def __init__(self, *, rng: random.Random) -> None:
        self._rng = rng
        self._lock = threading.RLock()
        self._listeners: list[TransitionListener] = []
        self.reset()

    def add_listener(self, listener: TransitionListener) -> None:
        """Call ``listener(transition)`` after every transition (under the store lock)."""
        self._listeners.append(listener)

    def reset(self) -> None:
        """Forget every token, session and prescription."""
        with self._lock:
            self._access_tokens: dict[str, float] = {}
            self._sessions: dict[str, tuple[int, float]] = {}
            self._prescriptions: dict[str, Prescription] = {}
            self._by_client_ref: dict[str, list[str]] = {}
            self._storm_counter = 0

    # -- authentication (§1) -------------------------------------------------

    def issue_access_token(self, *, now: float, ttl_s: float) -> str:
        """A new access token valid until ``now + ttl_s``."""
        token = new_opaque_token()
        with self._lock:
            self._access_tokens[token] = now + ttl_s
        return token

    def access_token_valid(self, token: str | None, *, now: float) -> bool:
        """True when ``token`` was issued here and has not expired at ``now``."""
        if not token:
            return False
        with self._lock:
            expires_at = self._access_tokens.get(token)
            if expires_at is None:
                return False
            if now >= expires_at:
                del self._access_tokens[token]
                return False
            return True

    def open_session(self, prescriber_id: int, *, now: float, ttl_s: float) -> str:
        """A new session token for the prescriber; earlier sessions stay valid (§1b)."""
        token = new_opaque_token()
        with self._lock:
            self._sessions[token] = (prescriber_id, now + ttl_s)
        return token

    def session_prescriber_id(self, token: str | None, *, now: float) -> int | None:
        """The prescriber id behind a live session token, or None (unknown or expired)."""
        if not token:
            return None
        with self._lock:
            entry = self._sessions.get(token)
            if entry is None:
                return None
            prescriber_id, expires_at = entry
            if now >= expires_at:
                del self._sessions[token]
                return None
            return prescriber_id

    # -- prescriptions (§4-§6) -----------------------------------------------

    def create(
        self,
        *,
        client_ref_id: str | None,
        prescriber_id: int,
        clinic_id: int,
        contact_id: int,
        medicines: Sequence[MedicineLine],
        patient_name: str,
        now: float,
    ) -> Prescription:
        """Create a new prescription in status ``issued`` with a fresh token.

        There is no idempotency: a repeated ``client_ref_id`` makes another one (§4).
        Creation is not a transition, so no listener is called.
        """
        with self._lock:
            rx_id = new_prescription_id(self._rng)
            while rx_id in self._prescriptions:
                rx_id = new_prescription_id(self._rng)
            rx = Prescription(
                id=rx_id,
                client_ref_id=client_ref_id,
                prescriber_id=prescriber_id,
                clinic_id=clinic_id,
                contact_id=contact_id,
                status=lifecycle.ISSUED,
                created_at=now,
                history=(HistoryEntry(lifecycle.ISSUED, now),),
                medicines=tuple(medicines),
                patient_name=patient_name,
            )
            self._prescriptions[rx_id] = rx
            if client_ref_id is not None:
                self._by_client_ref.setdefault(client_ref_id, []).append(rx_id)
            return rx

    def get(self, prescription_id: str) -> Prescription | None:
        """The prescription with this token, or None."""
        with self._lock:
            return self._prescriptions.get(prescription_id)

    def find_by_client_ref(self, client_ref_id: str) -> list[Prescription]:
        """Every prescription issued with this reference, oldest first."""
        with self._lock:
            ids = self._by_client_ref.get(client_ref_id, [])
            return [self._prescriptions[i] for i in ids]

    def transition(self, prescription_id: str, target: str, *, now: float) -> Transition:
        """Move a prescription to ``target`` at ``now`` if §6 allows it.

        Records a history entry and notifies listeners. Raises
        ``UnknownPrescription`` or ``InvalidTransition``.
        """
        with self._lock:
            rx = self._prescriptions.get(prescription_id)
            if rx is None:
                raise UnknownPrescription(prescription_id)
            if not lifecycle.can_transition(rx.status, target):
                raise InvalidTransition(prescription_id, rx.status, target)
            moved = dataclasses.replace(
                rx, status=target, history=(*rx.history, HistoryEntry(target, now))
            )
            self._prescriptions[prescription_id] = moved
            change = Transition(
                prescription=moved, previous_status=rx.status, status=target, at=now
            )
            for listener in self._listeners:
                listener(change)
            return change

    def next_storm_number(self) -> int:
        """1, 2, 3, ... for storm client references (restarts after ``reset``)."""
        with self._lock:
            self._storm_counter += 1
            return self._storm_counter

    def prescription_count(self) -> int:
        with self._lock:
            return len(self._prescriptions)

"""Region B's route: issue on the e-prescription platform, exactly once (contract §1, §2, §4).

:func:`erx_job` snapshots what the send needs inside the claim's transaction;
:class:`ErxRoute` makes the call with no transaction open, behind the circuit
breaker: after an unknown outcome it looks the ``client_ref_id`` up first and
adopts a token it finds, else it issues once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pybreaker

from app import metrics
from app.config import Settings
from app.crypto import CredentialCipher, CredentialError
from app.models import Prescription
from app.services.credentials import MissingCredentials, prescriber_credentials
from app.services.dispatch.issue_request import issue_request
from app.services.dispatch.outcome import Attempt, Outcome
from connector import ConnectorClient, IssueRequest, PrescriberCredentials, build_issue_payload
from connector.errors import (
    AuthError,
    ConnectorError,
    PayloadError,
    PlatformRejected,
    PlatformUnavailable,
    RateLimited,
    TransportError,
)

log = logging.getLogger("app.dispatch")

T = TypeVar("T")


class _BreakerGauge(pybreaker.CircuitBreakerListener):
    """Mirrors the breaker's state into ``erx_circuit_breaker_open`` (1 open, else 0)."""

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: object, new_state: object) -> None:
        metrics.CIRCUIT_BREAKER_OPEN.set(1 if getattr(new_state, "name", None) == pybreaker.STATE_OPEN else 0)


def _trips_breaker(exc: BaseException) -> bool:
    """Only platform-health failures count towards opening the circuit."""
    return isinstance(exc, (TransportError, PlatformUnavailable, RateLimited))


def make_breaker(settings: Settings) -> pybreaker.CircuitBreaker:
    """Return the per-process circuit breaker around the platform.

    Opens after ``breaker_fail_max`` consecutive transport/5xx/429 failures;
    lets a trial call through after ``breaker_reset_s`` seconds (half-open).
    Its state is exported as ``erx_circuit_breaker_open`` (``app.metrics``).
    """
    metrics.CIRCUIT_BREAKER_OPEN.set(0)
    return pybreaker.CircuitBreaker(
        fail_max=settings.breaker_fail_max,
        reset_timeout=settings.breaker_reset_s,
        exclude=[lambda exc: not _trips_breaker(exc)],
        # Keep the real error on the tripping call: it may have reached the platform.
        throw_new_error_on_trip=False,
        name="erx-platform",
        listeners=[_BreakerGauge()],
    )


class ConcurrentBreaker:
    """Lets several send threads call through one :class:`pybreaker.CircuitBreaker` at once.

    ``pybreaker.CircuitBreaker.call`` (1.4.1) holds the breaker's lock for the
    whole guarded call, so threads sharing it would send one at a time. Here
    the lock is held only to decide whether a call may go (closed; open and its
    ``reset_timeout`` elapsed: half-open, one trial call at a time) and to
    record its result with pybreaker's own state objects (failure counting,
    opening, closing, listeners), so the state machine and its metrics stay
    pybreaker's. Raises :class:`pybreaker.CircuitBreakerError` when the call
    may not go; otherwise whatever ``func`` raises, or returns its result.
    """

    def __init__(self, breaker: pybreaker.CircuitBreaker) -> None:
        self.breaker = breaker
        self._trial_in_flight = False
        self._trial_guard = threading.Lock()

    def call(self, func: Callable[..., T], *args: object) -> T:
        """Run ``func(*args)`` if the breaker lets it through; see the class docs."""
        breaker = self.breaker
        trial = False
        with breaker._lock:  # noqa: SLF001 - the breaker's own lock guards its state
            state = breaker.current_state
            if state == pybreaker.STATE_OPEN:
                opened_at = breaker._state_storage.opened_at  # noqa: SLF001
                if opened_at and datetime.now(UTC) < opened_at + timedelta(seconds=breaker.reset_timeout):
                    raise pybreaker.CircuitBreakerError("Timeout not elapsed yet, circuit breaker still open")
                breaker.half_open()
                state = pybreaker.STATE_HALF_OPEN
            if state == pybreaker.STATE_HALF_OPEN:
                with self._trial_guard:
                    if self._trial_in_flight:
                        raise pybreaker.CircuitBreakerError("a trial call is in flight, circuit breaker half-open")
                    self._trial_in_flight = trial = True
            for listener in breaker.listeners:
                listener.before_call(breaker, func, *args)
        try:
            result = func(*args)
        except BaseException as exc:
            with breaker._lock:  # noqa: SLF001
                self._end_trial(trial)
                # Counts a platform-health failure (may open the circuit) and re-raises exc.
                breaker.state._handle_error(exc)  # noqa: SLF001
            raise
        with breaker._lock:  # noqa: SLF001
            self._end_trial(trial)
            breaker.state._handle_success()  # noqa: SLF001
        return result

    def _end_trial(self, trial: bool) -> None:
        if trial:
            with self._trial_guard:
                self._trial_in_flight = False


@dataclass(frozen=True)
class ErxJob:
    """A snapshot of one e-prescription send, taken inside the claim's transaction.

    ``lookup_first``: an earlier attempt's outcome is unknown, so the platform
    is asked for ``reference`` before anything is sent.
    """

    outbox_id: int
    prescription_id: int
    reference: str
    credentials: PrescriberCredentials
    request: IssueRequest
    lookup_first: bool


def erx_job(
    outbox_id: int, prescription: Prescription, cipher: CredentialCipher, *, lookup_first: bool
) -> ErxJob | Attempt:
    """Snapshot the send of ``prescription`` (relations loaded), or say why it can't be sent.

    Returns an :class:`ErxJob`, or an :class:`Attempt`: RETRY_UNSENT when the
    prescriber's credentials are missing or undecryptable, INVALID when the
    data could never be accepted (built once here, so it is refused now
    without a call instead of retried until dead).
    """
    try:
        credentials = prescriber_credentials(prescription.prescriber, cipher)
    except (MissingCredentials, CredentialError) as exc:
        return Attempt(Outcome.RETRY_UNSENT, error=exc)
    try:
        request = issue_request(prescription)
        build_issue_payload(request, secure_pin=credentials.secure_pin)
    except PayloadError as exc:
        return Attempt(Outcome.INVALID, message=str(exc), errors=dict(exc.errors or {}))
    return ErxJob(
        outbox_id=outbox_id,
        prescription_id=prescription.id,
        reference=prescription.reference,
        credentials=credentials,
        request=request,
        lookup_first=lookup_first,
    )


class ErxRoute:
    """Sends :class:`ErxJob` s through ``client`` behind ``breaker``; never raises for platform errors.

    Thread-safe: the send threads of one Dispatcher share one route, its
    client (thread-safe token cache) and its breaker (:class:`ConcurrentBreaker`).
    """

    def __init__(self, client: ConnectorClient, breaker: pybreaker.CircuitBreaker) -> None:
        self.client = client
        self.breaker = breaker
        self._gate = ConcurrentBreaker(breaker)  # several send threads at once (WORKER_SEND_THREADS)

    def send(self, job: ErxJob) -> Attempt:
        """Look up (if ``job.lookup_first``) then issue; returns the attempt's result.

        ISSUED/ADOPTED with the token; REJECTED with the platform's message and
        field errors (HTTP 200 ``success:false``); CIRCUIT_OPEN;
        CREDENTIALS_REFUSED when the platform refused the prescriber's login
        (``login_failed``: retrying could lock the account); RETRY_UNSENT
        when the error says nothing reached the platform, else RETRY_UNKNOWN.
        """
        try:
            return self._gate.call(self._lookup_then_issue, job)
        except pybreaker.CircuitBreakerError as exc:
            return Attempt(Outcome.CIRCUIT_OPEN, error=exc)
        except PlatformRejected as exc:
            return Attempt(Outcome.REJECTED, message=exc.message, errors=dict(exc.errors or {}))
        except AuthError as exc:
            if exc.step == "login":
                return Attempt(Outcome.CREDENTIALS_REFUSED, error=exc)
            kind = Outcome.RETRY_UNKNOWN if exc.outcome_unknown else Outcome.RETRY_UNSENT
            return Attempt(kind, error=exc)
        except ConnectorError as exc:
            kind = Outcome.RETRY_UNKNOWN if exc.outcome_unknown else Outcome.RETRY_UNSENT
            return Attempt(kind, error=exc)

    def _lookup_then_issue(self, job: ErxJob) -> Attempt:
        if job.lookup_first:
            try:
                found = self.client.find_by_client_ref(job.credentials, job.reference)
            except PlatformRejected as exc:
                # The lookup itself was refused: we still don't know, so we may not send.
                raise ConnectorError(
                    "lookup by client_ref_id was refused",
                    code=exc.code or "lookup_refused",
                    retryable=True,
                    outcome_unknown=True,
                ) from None
            if found:
                if len(found) > 1:
                    log.error(
                        "platform holds %d prescriptions for client_ref_id=%s; adopting the first",
                        len(found),
                        job.reference,
                    )
                log.info("adopted existing token: client_ref_id=%s", job.reference)
                return Attempt(Outcome.ADOPTED, platform_token=found[0].platform_token)
        issued = self.client.issue(job.credentials, job.request)
        return Attempt(Outcome.ISSUED, platform_token=issued.platform_token)

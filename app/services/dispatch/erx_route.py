"""Region B's route: issue on the e-prescription platform, exactly once (contract §1, §2, §4).

:func:`erx_job` snapshots what the send needs inside the claim's transaction;
:class:`ErxRoute` makes the call with no transaction open, behind the circuit
breaker: after an unknown outcome it looks the ``client_ref_id`` up first and
adopts a token it finds, else it issues once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.foundation.config import Settings
from app.foundation.crypto import CredentialCipher, CredentialError
from app.foundation.models import Prescription
from app.mechanisms import metrics
from app.mechanisms.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpen
from app.services.clinics import UnmappedClinic
from app.services.credentials import (
    MissingCredentials,
    prescriber_credentials,
    unusable_credentials_cause,
)
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


def _breaker_gauge(old: BreakerState, new: BreakerState) -> None:
    """Mirrors the breaker's state into ``erx_circuit_breaker_open`` (1 open, else 0)."""
    metrics.CIRCUIT_BREAKER_OPEN.set(1 if new is BreakerState.OPEN else 0)


def _trips_breaker(exc: BaseException) -> bool:
    """Only platform-health failures count towards opening the circuit."""
    return isinstance(exc, (TransportError, PlatformUnavailable, RateLimited))


def make_breaker(
    settings: Settings, *, clock: Callable[[], float] = time.monotonic
) -> CircuitBreaker:
    """Return the per-process circuit breaker around the platform, shared by the send threads.

    Opens after ``breaker_fail_max`` consecutive transport/5xx/429 failures;
    lets one trial call through after ``breaker_reset_s`` seconds (half-open)
    on ``clock`` (monotonic seconds). Its state is exported as
    ``erx_circuit_breaker_open`` (``app.mechanisms.metrics``).
    """
    metrics.CIRCUIT_BREAKER_OPEN.set(0)
    return CircuitBreaker(
        fail_max=settings.breaker_fail_max,
        reset_timeout_s=settings.breaker_reset_s,
        counts=_trips_breaker,
        clock=clock,
        listeners=[_breaker_gauge],
    )


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

    Returns an :class:`ErxJob`, or an :class:`Attempt`: CREDENTIALS_UNUSABLE
    (with its one-line cause) when the prescriber's credentials are missing or
    undecryptable, a configuration fault no retry can fix, MISCONFIGURED (with
    its one-line cause) when the clinic has no API clinic id mapped, INVALID when the
    data could never be accepted (built once here, so it is refused now
    without a call instead of retried until dead).
    """
    try:
        credentials = prescriber_credentials(prescription.prescriber, cipher)
    except (MissingCredentials, CredentialError) as exc:
        missing = isinstance(exc, MissingCredentials)
        reason = "credentials_missing" if missing else "credentials_undecryptable"
        return Attempt(
            Outcome.CREDENTIALS_UNUSABLE,
            message=unusable_credentials_cause(prescription.prescriber.email, exc),
            reason=reason,
        )
    try:
        request = issue_request(prescription)
        build_issue_payload(request, secure_pin=credentials.secure_pin)
    except UnmappedClinic as exc:
        # Not the platform's to refuse: nothing is sent, the operator maps the clinic.
        return Attempt(Outcome.MISCONFIGURED, message=str(exc), reason="clinic_unmapped")
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
    """Sends :class:`ErxJob` s through ``client`` behind ``breaker``; never raises platform errors.

    Thread-safe: the send threads of one Dispatcher share one route, its
    client (thread-safe token cache) and its breaker
    (:class:`app.mechanisms.circuit_breaker.CircuitBreaker`, which lets them call at once).
    """

    def __init__(self, client: ConnectorClient, breaker: CircuitBreaker) -> None:
        self.client = client
        self.breaker = breaker

    def send(self, job: ErxJob) -> Attempt:
        """Look up (if ``job.lookup_first``) then issue; returns the attempt's result.

        ISSUED/ADOPTED with the token; REJECTED with the platform's message and
        field errors (HTTP 200 ``success:false``); CIRCUIT_OPEN;
        CREDENTIALS_REFUSED when the platform refused the prescriber's login
        (``login_failed``: retrying could lock the account); RETRY_UNSENT
        when the error says nothing reached the platform, else RETRY_UNKNOWN.
        """
        try:
            return self.breaker.call(self._lookup_then_issue, job)
        except CircuitOpen as exc:
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

"""The platform client: authenticated calls, issue, lookups, read and void (contract §1-§5).

Retry policy, in one place (:meth:`ConnectorClient._call`):

* A 401 (access token expired) or a 200 ``session_expired`` is retried exactly
  once after refreshing that token: the platform refused those requests before
  doing anything, so resending cannot duplicate a prescription.
* Nothing else is retried here. An issue in particular is never resent after a
  timeout, reset or 5xx: there is no idempotency key and a token cannot be
  re-sent (§4). The error says ``outcome_unknown``; the caller looks the
  ``client_ref_id`` up with :meth:`ConnectorClient.find_by_client_ref` and
  decides, with :class:`app.mechanisms.retry.RetryPolicy` on the service's side for the wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import requests

from connector.auth import TokenCache
from connector.errors import AuthError, ConnectorError, ResponseParseError, classify_response
from connector.observe import Observer
from connector.parsing import (
    parse_clinic,
    parse_contact,
    parse_medicine,
    parse_prescription,
    parse_prescription_token,
    parse_timestamp,
    value_at,
)
from connector.payloads import IssueRequest, build_issue_payload
from connector.results import Clinic, Contact, IssuedPrescription, Medicine, PlatformPrescription
from connector.settings import ConnectorSettings, PrescriberCredentials
from connector.transport import Transport

__all__ = ["ConnectorClient"]

logger = logging.getLogger("connector")


class ConnectorClient:
    """Client for the e-prescription platform (contract §1-§5). Thread-safe.

    Args:
        settings: where the platform is and how it speaks.

    Keyword-only:
        session: a ``requests.Session`` to reuse for every call (keep-alive);
            a new one if None, closed by :meth:`close`.
        monotonic: monotonic seconds for token expiry; tests pass a fake.
        token_cache: a shared :class:`~connector.auth.TokenCache`; one is built
            on this client's session if None.
        observer: told about every platform call, token refresh and login
            (:class:`~connector.observe.Observer`, e.g. to count them as
            metrics); a no-op if None.

    Every call sends ``Authorization: Bearer <access token>`` and the session
    header (``X-Session-Token``) with explicit ``(connect, read)`` timeouts.
    """

    def __init__(
        self,
        settings: ConnectorSettings,
        *,
        session: requests.Session | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        token_cache: TokenCache | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._settings = settings
        self._transport = Transport(settings, session=session, observer=observer)
        self.tokens: TokenCache = token_cache or TokenCache(
            settings, transport=self._transport, monotonic=monotonic, observer=observer
        )

    def __repr__(self) -> str:
        return f"ConnectorClient(base_url={self._settings.base_url!r})"

    def __enter__(self) -> ConnectorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        self._transport.close()

    # ---- the one place that sends authenticated calls ----------------------

    def _call(
        self,
        prescriber: PrescriberCredentials,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        endpoint: str = "other",
    ) -> tuple[dict[str, Any], str | None]:
        settings = self._settings
        for attempt in (1, 2):
            try:
                # Session first: a login may refresh the access token, and the
                # call must then carry the fresh one.
                session_token = self.tokens.session_token(prescriber)
                access_token = self.tokens.access_token()
            except ConnectorError as exc:
                # Failing to authenticate means this call was never sent.
                exc.outcome_unknown = False
                raise
            resp = self._transport.request(
                method,
                path,
                headers={
                    "Authorization": f"Bearer {access_token}",
                    settings.session_header: session_token,
                },
                json=json,
                params=params,
                endpoint=endpoint,
            )
            body, error = classify_response(resp, request_id_header=settings.request_id_header)
            if error is None:
                if body is None:  # classify_response returns a body or an error; never neither
                    raise ResponseParseError(
                        "platform success without a body", path="<body>", code="invalid_response"
                    )
                return body, resp.headers.get(settings.request_id_header) or None
            if attempt == 1 and isinstance(error, AuthError):
                if error.step == "access_token":
                    logger.info(
                        "access token refused, refreshing prescriber=%s request_id=%s",
                        prescriber.key,
                        error.request_id,
                    )
                    self.tokens.invalidate_access_token(access_token)
                    continue
                if error.step == "session":
                    logger.info(
                        "session expired, logging in again prescriber=%s request_id=%s",
                        prescriber.key,
                        error.request_id,
                    )
                    self.tokens.invalidate_session(prescriber.key, session_token)
                    continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    def _list_at(self, body: dict[str, Any], path: tuple[str, ...]) -> list[object]:
        items = value_at(body, path)
        if not isinstance(items, list):
            dotted = ".".join(path)
            raise ResponseParseError(
                f"expected an array at '{dotted}'", path=dotted, code="invalid_response"
            )
        return items

    def _prescription_path(self) -> tuple[str, ...]:
        # The read body nests the prescription where the issue body does (§4, §5).
        return self._settings.prescription_id_path[:-1]

    # ---- issue ---------------------------------------------------------------

    def issue(self, prescriber: PrescriberCredentials, request: IssueRequest) -> IssuedPrescription:
        """Issue one prescription as ``prescriber`` (contract §4). Sends the POST at most
        once, plus one resend only after a 401 / ``session_expired`` refusal.

        Args:
            prescriber: who signs; their session and PIN are used.
            request: clinic (internal id), pharmacy, reference, patient, medicines.

        Returns:
            :class:`~connector.results.IssuedPrescription` with the token from
            ``data.prescription.id`` (``settings.prescription_id_path``); status
            defaults to ``"issued"`` and ``created_at`` to None when absent or
            unreadable, so that a cosmetic field never loses a token.

        Raises:
            PayloadError: the request breaks a §4 field rule (nothing sent).
            AuthError: login refused, or still refused after one refresh.
            PlatformRejected: HTTP 200 ``success: false`` (e.g. unauthorized
                clinic, invalid data with field ``errors``, controlled drug).
            RateLimited: 429 (not processed; ``retry_after_s``).
            PlatformUnavailable: 5xx; ``outcome_unknown=True``.
            TransportError: timeout or connection failure; ``outcome_unknown``
                tells whether the POST may have been processed.
            ResponseParseError: success answer without a readable token, or a
                non-JSON answer; ``outcome_unknown=True``.
            After any ``outcome_unknown`` error, call :meth:`find_by_client_ref`
            before issuing again.
        """
        payload = build_issue_payload(request, secure_pin=prescriber.secure_pin)
        settings = self._settings
        ref = request.client_ref_id
        try:
            body, request_id = self._call(
                prescriber, "POST", settings.prescriptions_path, json=payload, endpoint="issue"
            )
        except ConnectorError as exc:
            logger.warning(
                "issue failed prescriber=%s client_ref_id=%s error=%s status=%s code=%s "
                "outcome_unknown=%s request_id=%s",
                prescriber.key,
                ref,
                type(exc).__name__,
                exc.http_status,
                exc.code,
                exc.outcome_unknown,
                exc.request_id,
            )
            raise
        try:
            token = parse_prescription_token(body, path=settings.prescription_id_path)
        except ResponseParseError as exc:
            # The platform said success: a prescription probably exists.
            exc.outcome_unknown = True
            exc.http_status = 200
            exc.request_id = request_id
            logger.error(
                "issue succeeded without a readable token prescriber=%s client_ref_id=%s "
                "path=%s request_id=%s",
                prescriber.key,
                ref,
                exc.path,
                request_id,
            )
            raise
        # parse_prescription_token has checked this object exists; read its cosmetic fields.
        item = value_at(body, self._prescription_path()) if self._prescription_path() else body
        if not isinstance(item, dict):
            item = {}
        status = item.get("status")
        echoed_ref = item.get("client_ref_id")
        if isinstance(echoed_ref, str) and echoed_ref and echoed_ref != ref:
            logger.warning(
                "issue echoed another client_ref_id prescriber=%s client_ref_id=%s "
                "echoed=%s request_id=%s",
                prescriber.key,
                ref,
                echoed_ref,
                request_id,
            )
        created_at = None
        if item.get("created_at") is not None:
            try:
                created_at = parse_timestamp(item["created_at"], path="created_at")
            except ResponseParseError:
                logger.warning(
                    "issue answer has an unreadable created_at client_ref_id=%s request_id=%s",
                    ref,
                    request_id,
                )
        logger.info(
            "prescription issued prescriber=%s client_ref_id=%s request_id=%s",
            prescriber.key,
            ref,
            request_id,
        )
        return IssuedPrescription(
            platform_token=token,
            status=status if isinstance(status, str) and status else "issued",
            client_ref_id=ref,
            created_at=created_at,
            request_id=request_id,
        )

    # ---- reads ---------------------------------------------------------------

    def find_by_client_ref(
        self, prescriber: PrescriberCredentials, client_ref_id: str
    ) -> tuple[PlatformPrescription, ...]:
        """Prescriptions the platform holds for our reference (contract §4 lookup).

        ``GET /prescriptions?client_ref_id=...``. Items that carry a different
        ``client_ref_id`` are dropped (logged): a lookup must never make us
        believe an unrelated prescription is ours.

        Args:
            prescriber: whose session to use.
            client_ref_id: our reference.

        Returns:
            Zero or more prescriptions, in the platform's order.

        Raises:
            ValueError: ``client_ref_id`` is empty.
            AuthError, PlatformRejected, RateLimited, PlatformUnavailable,
            TransportError, ResponseParseError: as for :meth:`issue`.
        """
        if not isinstance(client_ref_id, str) or not client_ref_id.strip():
            raise ValueError("client_ref_id must be a non-empty string")
        body, request_id = self._call(
            prescriber,
            "GET",
            self._settings.prescriptions_path,
            endpoint="lookup",
            params={"client_ref_id": client_ref_id},
        )
        found = []
        for index, raw in enumerate(self._list_at(body, ("data", "prescriptions"))):
            item = parse_prescription(raw, path=f"data.prescriptions.{index}")
            if item.client_ref_id is not None and item.client_ref_id != client_ref_id:
                logger.warning(
                    "lookup returned another reference client_ref_id=%s other=%s request_id=%s",
                    client_ref_id,
                    item.client_ref_id,
                    request_id,
                )
                continue
            found.append(item)
        logger.info(
            "lookup by reference prescriber=%s client_ref_id=%s found=%d request_id=%s",
            prescriber.key,
            client_ref_id,
            len(found),
            request_id,
        )
        return tuple(found)

    def _prescription_url(self, token: str, *suffix: str) -> str:
        if not isinstance(token, str) or not token.strip():
            raise ValueError("token must be a non-empty string")
        parts = [self._settings.prescriptions_path.rstrip("/"), quote(token.strip(), safe="")]
        return "/".join([*parts, *suffix])

    def get_prescription(
        self, prescriber: PrescriberCredentials, token: str
    ) -> PlatformPrescription:
        """Read one prescription and its history (contract §5: ``GET /prescriptions/{id}``).

        Args:
            prescriber: whose session to use.
            token: the prescription token.

        Returns:
            The prescription with ``history`` as ``(status, at UTC)`` pairs.

        Raises:
            ValueError: empty token.
            AuthError, PlatformRejected (e.g. unknown token), RateLimited,
            PlatformUnavailable, TransportError, ResponseParseError.
        """
        body, _ = self._call(prescriber, "GET", self._prescription_url(token), endpoint="read")
        path = self._prescription_path()
        return parse_prescription(value_at(body, path), path=".".join(path))

    def void(
        self, prescriber: PrescriberCredentials, token: str, *, reason: str
    ) -> PlatformPrescription | None:
        """Cancel a prescription (contract §5: ``POST /prescriptions/{id}/void``).

        Args:
            prescriber: whose session to use.
            token: the prescription token.
            reason: why, as free text for the platform (keep PHI out of it).

        Returns:
            The prescription as the platform now reports it, or None when the
            success answer carries no readable prescription.

        Raises:
            ValueError: empty token or reason.
            PlatformRejected: ``code="invalid_transition"`` once dispensed,
                expired or voided.
            AuthError, RateLimited, PlatformUnavailable, TransportError,
            ResponseParseError.
        """
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("reason must be a non-empty string")
        body, request_id = self._call(
            prescriber,
            "POST",
            self._prescription_url(token, "void"),
            json={"reason": reason},
            endpoint="void",
        )
        logger.info("prescription voided prescriber=%s request_id=%s", prescriber.key, request_id)
        path = self._prescription_path()
        try:
            return parse_prescription(value_at(body, path), path=".".join(path))
        except ResponseParseError:
            return None

    def list_clinics(self, prescriber: PrescriberCredentials) -> tuple[Clinic, ...]:
        """Clinics the prescriber may issue from (contract §3: ``GET /clinics``).

        Returns:
            :class:`~connector.results.Clinic` items; use ``id`` (internal) when
            issuing, never ``display_id``.

        Raises:
            AuthError, PlatformRejected, RateLimited, PlatformUnavailable,
            TransportError, ResponseParseError.
        """
        body, _ = self._call(prescriber, "GET", self._settings.clinics_path, endpoint="clinics")
        items = self._list_at(body, ("data", "clinics"))
        return tuple(parse_clinic(c, path=f"data.clinics.{i}") for i, c in enumerate(items))

    def search_contacts(
        self, prescriber: PrescriberCredentials, q: str, *, contact_type: str = "pharmacy"
    ) -> tuple[Contact, ...]:
        """Search the prescriber's contacts (contract §3: ``GET /contacts?type=pharmacy&q=``).

        Args:
            prescriber: whose contacts.
            q: search text (name, town, post code).
            contact_type: contact type filter.

        Returns:
            :class:`~connector.results.Contact` items; ``branch_id`` is what
            ``IssueRequest.contact_id`` wants.

        Raises:
            AuthError, PlatformRejected, RateLimited, PlatformUnavailable,
            TransportError, ResponseParseError.
        """
        body, _ = self._call(
            prescriber,
            "GET",
            self._settings.contacts_path,
            params={"type": contact_type, "q": q},
            endpoint="contacts",
        )
        items = self._list_at(body, ("data", "contacts"))
        return tuple(parse_contact(c, path=f"data.contacts.{i}") for i, c in enumerate(items))

    def search_medicines(self, prescriber: PrescriberCredentials, q: str) -> tuple[Medicine, ...]:
        """Search the platform's medicine dictionary (contract §3: ``GET /medicines?search=``).

        Args:
            prescriber: whose session to use.
            q: search text.

        Returns:
            :class:`~connector.results.Medicine` items.

        Raises:
            AuthError, PlatformRejected, RateLimited, PlatformUnavailable,
            TransportError, ResponseParseError.
        """
        body, _ = self._call(
            prescriber,
            "GET",
            self._settings.medicines_path,
            params={"search": q},
            endpoint="medicines",
        )
        items = self._list_at(body, ("data", "medicines"))
        return tuple(parse_medicine(m, path=f"data.medicines.{i}") for i, m in enumerate(items))

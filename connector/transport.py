"""The HTTP session: one keep-alive ``requests.Session``, explicit timeouts (contract §1, §2).

Every call carries a ``(connect, read)`` timeout, never follows redirects (a
redirected POST could silently become a GET) and never resends anything:
``requests``' default adapter has no retries, and that matters because an issue
must not be sent twice (§4). Exceptions from ``requests`` become
:class:`~connector.errors.TransportError` with an honest ``outcome_unknown``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from connector.errors import ConnectorError, TransportError
from connector.observe import NULL_OBSERVER, Observer, call_outcome
from connector.settings import ConnectorSettings

__all__ = ["Transport", "transport_error"]

logger = logging.getLogger("connector")

# Names from urllib3 that prove no byte of the request left this host: the TCP
# connection was never established. Matched by class name so that the connector
# depends on requests' public API only, not on urllib3 directly.
_NOT_CONNECTED_ERRORS = frozenset({"NewConnectionError", "NameResolutionError"})
_INVALID_REQUEST = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.URLRequired,
)


def _causes(exc: BaseException) -> list[object]:
    seen: list[object] = []
    stack: list[object] = [exc]
    while stack and len(seen) < 20:
        item = stack.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        stack.extend(getattr(item, "args", ())[:1])
        stack.append(getattr(item, "reason", None))
        stack.append(getattr(item, "__cause__", None))
        stack.append(getattr(item, "__context__", None))
    return seen


def _never_connected(exc: BaseException) -> bool:
    for cause in _causes(exc):
        if isinstance(cause, BaseException) and any(
            cls.__name__ in _NOT_CONNECTED_ERRORS for cls in type(cause).__mro__
        ):
            return True
    return False


def transport_error(exc: requests.RequestException) -> ConnectorError:
    """Map a ``requests`` exception to a connector error (contract §2, §4).

    Args:
        exc: what ``requests`` raised.

    Returns:
        * :class:`TransportError` ``code="connect_timeout"``, ``outcome_unknown=False``
          for a connect timeout (nothing was sent);
        * ``code="connection_failed"``, ``outcome_unknown=False`` when the
          connection was refused or the name did not resolve;
        * ``code="read_timeout"``, ``outcome_unknown=True`` for a read timeout
          (the platform may have committed: §2's "accepted but the response was lost");
        * ``code="connection_error"``, ``outcome_unknown=True`` for any other
          failure (reset, dropped connection, broken body): when in doubt the
          caller must look up before resending, which is cheap, whereas a
          wrong "not sent" would duplicate a prescription;
        * a non-retryable :class:`ConnectorError` ``code="invalid_request"`` for
          a malformed URL or header (a configuration bug).
    """
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return TransportError(
            "timed out connecting to the platform", code="connect_timeout", outcome_unknown=False
        )
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return TransportError(
            "timed out waiting for the platform's response",
            code="read_timeout",
            outcome_unknown=True,
        )
    if isinstance(exc, _INVALID_REQUEST):
        return ConnectorError(
            f"invalid request ({type(exc).__name__})", code="invalid_request", retryable=False
        )
    if isinstance(exc, requests.exceptions.ConnectionError) and _never_connected(exc):
        return TransportError(
            "could not connect to the platform", code="connection_failed", outcome_unknown=False
        )
    return TransportError(
        f"connection to the platform failed ({type(exc).__name__})",
        code="connection_error",
        outcome_unknown=True,
    )


class Transport:
    """Sends requests to the platform over one reused ``requests.Session``.

    Args:
        settings: base URL, timeouts and user agent.

    Keyword-only:
        session: a session to reuse (tests pass one; the app may share one);
            if None a new one is created and :meth:`close` closes it.
        observer: told about every call (endpoint, outcome, seconds); a no-op if None.
        monotonic: clock for call durations (seconds); only measured, never decided on.
    """

    def __init__(
        self,
        settings: ConnectorSettings,
        *,
        session: requests.Session | None = None,
        observer: Observer | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._observer = observer or NULL_OBSERVER
        self._monotonic = monotonic
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            # No per-call scan of the environment for proxy settings; pass proxies explicitly if ever needed.
            session.trust_env = False
        self.session: requests.Session = session

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        endpoint: str = "other",
    ) -> requests.Response:
        """Send one request and return the response, whatever its status.

        Args:
            method: HTTP method, e.g. ``"POST"``.
            path: endpoint path relative to ``settings.base_url``.
            headers: extra headers (auth headers are the caller's job).
            params: query parameters.
            json: JSON body, or None.
            data: form body, or None.
            endpoint: the call's name for the observer, one of
                :data:`connector.observe.ENDPOINTS` (never the URL: it holds ids).

        Returns:
            The ``requests.Response`` (any status code; see
            :func:`connector.errors.classify_response`).

        Raises:
            TransportError: timeout or connection failure (see :func:`transport_error`).
            ConnectorError: malformed URL or header (``code="invalid_request"``).
        """
        merged = {"Accept": "application/json", "User-Agent": self._settings.user_agent}
        if headers:
            merged.update(headers)
        started = self._monotonic()
        try:
            resp = self.session.request(
                method,
                self._settings.url(path),
                headers=merged,
                params=params,
                json=json,
                data=data,
                timeout=self._settings.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            error = transport_error(exc)
            self._observe(endpoint, call_outcome(error_code=error.code), started)
            raise error from exc
        self._observe(endpoint, call_outcome(status=resp.status_code), started)
        return resp

    def _observe(self, endpoint: str, outcome: str, started: float) -> None:
        try:
            self._observer.platform_call(endpoint, outcome, max(0.0, self._monotonic() - started))
        except Exception:  # noqa: BLE001 - counting must never break a platform call
            logger.warning("connector observer failed on platform_call", exc_info=True)

    def close(self) -> None:
        """Close the session if this transport created it; a borrowed one is left open."""
        if self._owns_session:
            self.session.close()

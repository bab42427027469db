"""The two-step token cache: OAuth access token + per-prescriber session (contract §1).

Why this is more than a dict:

* **Expiry with leeway.** A token is dropped ``min(max_leeway_s, lifetime/2)``
  seconds before the platform would expire it (Authlib counts a token expired
  ``leeway`` seconds early), so a request never leaves with a token that dies
  on the way. Each entry has its own lifetime, so the caches are cachetools
  ``TLRUCache`` (per-item TTL) driven by an injectable monotonic clock.
* **Single flight.** With a cold cache, 50 threads asking at once cause one
  token request and one login per prescriber: a lock per key, and a second
  look at the cache once the lock is held.
* **Compare-then-invalidate.** A caller that saw a 401 drops the cached token
  only if it is still the one that failed; another thread may already have
  replaced it, and dropping the fresh one would cause a needless re-login storm.
* **Shared outcome.** Callers that wait on an in-flight token request or
  login get *its* outcome, success or failure: they never start an attempt of
  their own behind a failed one (a hanging token endpoint would
  otherwise cost the tenth caller ten read timeouts).
* **Negative cache.** A refused login is remembered for ``login_failure_ttl_s``
  so that a queue of prescriptions for a prescriber with a wrong password fails
  fast instead of hammering the login endpoint (and risking a lockout); a
  failed access-token request (5xx, 429, timeout, garbage) is remembered for
  ``token_failure_ttl_s`` so that a failing token endpoint is not hammered either.
* **Never shared.** Session tokens are keyed by prescriber; a prescription is
  issued as whoever owns the session (§1c).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import cachetools
import requests

from connector.errors import (
    AuthError,
    ConnectorError,
    PlatformRejected,
    PlatformUnavailable,
    ResponseParseError,
    classify_response,
)
from connector.observe import NULL_OBSERVER, Observer
from connector.parsing import value_at
from connector.settings import ConnectorSettings, PrescriberCredentials
from connector.transport import Transport

__all__ = ["TokenCache", "token_ttl"]

logger = logging.getLogger("connector")

_ACCESS_KEY = "access"


def _lifetime(expires_in: object) -> float | None:
    if isinstance(expires_in, bool):
        return None
    if isinstance(expires_in, str):
        try:
            expires_in = float(expires_in.strip())
        except ValueError:
            return None
    if isinstance(expires_in, int | float) and math.isfinite(expires_in) and expires_in > 0:
        return float(expires_in)
    return None


def token_ttl(expires_in: object, *, default_s: float = 300, max_leeway_s: float = 60) -> float:
    """How long to keep a token, in seconds (contract §1a, §1b).

    ``ttl = lifetime - min(max_leeway_s, lifetime / 2)``, where ``lifetime`` is
    ``expires_in`` when it is a positive number (or numeric string) and
    ``default_s`` otherwise (missing, null, zero, negative, garbage).

    Examples: 3600 -> 3540; 60 -> 30; missing with the default 300 -> 240.

    Args:
        expires_in: the ``expires_in`` value from the token or login response.
        default_s: lifetime assumed when ``expires_in`` is unusable, seconds.
        max_leeway_s: largest safety margin, seconds.

    Returns:
        Seconds (> 0) to keep the token.
    """
    lifetime = _lifetime(expires_in) or float(default_s)
    return lifetime - min(float(max_leeway_s), lifetime / 2)


@dataclass(frozen=True, repr=False)
class _Entry:
    token: str
    ttl_s: float
    fingerprint: bytes = b""

    def __repr__(self) -> str:  # tokens never reach a log, even via a debugger dump
        return f"_Entry(ttl_s={self.ttl_s})"


@dataclass(frozen=True)
class _Failure:
    """What is needed to raise a fresh AuthError for a remembered failure."""

    message: str
    step: str
    code: str | None
    http_status: int | None
    request_id: str | None

    def error(self) -> AuthError:
        return AuthError(
            self.message,
            step=self.step,
            code=self.code,
            http_status=self.http_status,
            request_id=self.request_id,
            retryable=False,
        )


def _ttu(_key: object, entry: _Entry, now: float) -> float:
    return now + entry.ttl_s


def _fresh_copy(exc: BaseException) -> BaseException:
    """A new exception object equal to ``exc``, so that threads sharing one
    failure never mutate each other's (``ConnectorClient`` sets ``outcome_unknown``)."""
    copy = type(exc).__new__(type(exc))
    copy.__dict__.update(exc.__dict__)
    copy.args = exc.args
    return copy


class _Flight:
    """One in-flight token request or login; waiters block on ``done`` and share the outcome."""

    __slots__ = ("done", "error", "result", "waiters")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.waiters = 0  # callers sharing this flight besides its leader (tests synchronise on it)
        self.result: _Entry | None = None
        self.error: BaseException | None = None


class TokenCache:
    """Thread-safe cache of the OAuth access token and prescriber sessions (contract §1).

    Args:
        settings: endpoints, client credentials, TTL rules.

    Keyword-only:
        session: ``requests.Session`` to send token and login requests on
            (normally the client's); a new one if None.
        monotonic: monotonic seconds (``time.monotonic``); tests pass a fake.
        transport: a ready :class:`~connector.transport.Transport` (overrides ``session``).
        observer: told about token requests and logins
            (:class:`~connector.observe.Observer`); a no-op if None.
    """

    def __init__(
        self,
        settings: ConnectorSettings,
        *,
        session: requests.Session | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        transport: Transport | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._settings = settings
        self._observer = observer or NULL_OBSERVER
        self._transport = transport or Transport(settings, session=session, observer=self._observer)
        self._monotonic = monotonic
        self._guard = threading.Lock()  # protects the caches and the flight table
        self._flights: dict[Hashable, _Flight] = {}
        self._access: cachetools.TLRUCache[str, _Entry] = cachetools.TLRUCache(
            maxsize=1, ttu=_ttu, timer=monotonic
        )
        self._sessions: cachetools.TLRUCache[str, _Entry] = cachetools.TLRUCache(
            maxsize=settings.session_cache_size, ttu=_ttu, timer=monotonic
        )
        self._failures: cachetools.TTLCache[Hashable, _Failure] = cachetools.TTLCache(
            maxsize=settings.session_cache_size + 1,
            ttl=settings.login_failure_ttl_s,
            timer=monotonic,
        )
        # A transiently failed token request, remembered briefly (one entry: the client's token).
        self._token_failures: cachetools.TTLCache[str, BaseException] = cachetools.TTLCache(
            maxsize=1, ttl=settings.token_failure_ttl_s, timer=monotonic
        )
        # Credentials are fingerprinted with a per-process random key so that a
        # changed password bypasses the negative cache, without keeping a
        # reusable hash of the password around.
        self._fingerprint_key = secrets.token_bytes(32)
        # Prescriber keys that have had a session in this process (login kind "first"/"renewal").
        self._logged_in: set[str] = set()

    def __repr__(self) -> str:
        return f"TokenCache(client_id={self._settings.client_id!r})"

    # ---- public API -------------------------------------------------------

    def access_token(self) -> str:
        """The OAuth access token, fetched once and reused until its TTL (contract §1a).

        Returns:
            The bearer token.

        Raises:
            AuthError: ``step="access_token"``, ``code="invalid_client"`` (or the
                OAuth error code) when the client credentials are refused; such a
                failure is remembered for ``login_failure_ttl_s``.
            RateLimited, PlatformUnavailable, TransportError, ResponseParseError:
                the token endpoint failed transiently or answered garbage; the
                failure is shared by every caller waiting on that request and
                remembered for ``token_failure_ttl_s`` (callers get a copy of
                it without a request).
        """
        cached = self._lookup(self._access, _ACCESS_KEY, _ACCESS_KEY, b"")
        if cached is not None:
            return cached
        return self._single_flight(_ACCESS_KEY, self._access_token_attempt).token

    def _access_token_attempt(self) -> _Entry:
        # Run by the one caller that leads the flight; a second look at the
        # caches because a flight may have finished between lookup and start.
        with self._guard:
            remembered = self._token_failures.get(_ACCESS_KEY)
        if remembered is not None:
            raise _fresh_copy(remembered)
        cached = self._lookup(self._access, _ACCESS_KEY, _ACCESS_KEY, b"")
        if cached is not None:
            return _Entry(cached, 0.0)
        try:
            entry = self._fetch_access_token()
        except AuthError:
            raise  # a refusal is remembered by _fetch_access_token for login_failure_ttl_s
        except ConnectorError as exc:
            if self._settings.token_failure_ttl_s > 0:
                with self._guard:
                    self._token_failures[_ACCESS_KEY] = exc
            raise
        with self._guard:
            self._access[_ACCESS_KEY] = entry
        return entry

    def session_token(self, prescriber: PrescriberCredentials) -> str:
        """The prescriber's session token, logging in once per TTL (contract §1b).

        Args:
            prescriber: whose session; cached under ``prescriber.key`` only.

        Returns:
            The session token for ``X-Session-Token``.

        Raises:
            AuthError: ``step="login"`` when the platform refuses the login
                (remembered for ``login_failure_ttl_s``: callers get the same
                error without a request); ``step="access_token"`` when the
                access token is refused twice in a row.
            RateLimited, PlatformUnavailable, TransportError, ResponseParseError:
                transient failures, not remembered.
        """
        key = prescriber.key
        fingerprint = self._fingerprint(prescriber)
        failure_key = ("login", key, fingerprint)
        cached = self._lookup(self._sessions, key, failure_key, fingerprint)
        if cached is not None:
            return cached

        def attempt() -> _Entry:
            found = self._lookup(self._sessions, key, failure_key, fingerprint)
            if found is not None:
                return _Entry(found, 0.0, fingerprint)
            try:
                entry = self._login(prescriber, fingerprint)
            except AuthError as exc:
                if exc.step == "login":
                    self._remember_failure(failure_key, exc)
                raise
            with self._guard:
                self._sessions[key] = entry
            return entry

        # Keyed by the credentials' fingerprint too: a caller with a changed
        # password does not share the outcome of a login with the old one.
        return self._single_flight(("session", key, fingerprint), attempt).token

    def invalidate_access_token(self, failed_token: str) -> bool:
        """Drop the cached access token if it is still ``failed_token`` (contract §1c).

        Args:
            failed_token: the token that the platform refused.

        Returns:
            True if it was dropped; False if the cache already holds another
            token (someone refreshed it) or nothing.
        """
        return self._invalidate(self._access, _ACCESS_KEY, failed_token)

    def invalidate_session(self, prescriber_key: str, failed_token: str) -> bool:
        """Drop a prescriber's cached session if it is still ``failed_token`` (contract §1c).

        Args:
            prescriber_key: ``PrescriberCredentials.key``.
            failed_token: the session token the platform reported expired.

        Returns:
            True if it was dropped, False otherwise.
        """
        return self._invalidate(self._sessions, prescriber_key, failed_token)

    def clear(self) -> None:
        """Forget every token and remembered failure."""
        with self._guard:
            self._access.clear()
            self._sessions.clear()
            self._failures.clear()
            self._token_failures.clear()

    # ---- internals --------------------------------------------------------

    def _notify(self, event: str, *args: str) -> None:
        try:
            getattr(self._observer, event)(*args)
        except Exception:  # noqa: BLE001 - counting must never break authentication
            logger.warning("connector observer failed on %s", event, exc_info=True)

    def _fingerprint(self, prescriber: PrescriberCredentials) -> bytes:
        material = f"{prescriber.email}\x00{prescriber.password}".encode()
        return hmac.new(self._fingerprint_key, material, hashlib.sha256).digest()

    def _single_flight(self, key: Hashable, attempt: Callable[[], _Entry]) -> _Entry:
        """Run ``attempt`` once for all concurrent callers of ``key``; all share its outcome.

        The first caller leads and runs ``attempt``; callers arriving while it
        runs wait for it and get its entry or (a copy of) its exception, so a
        failing endpoint costs one request and one timeout, not one per caller.
        """
        with self._guard:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            else:
                flight.waiters += 1
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise _fresh_copy(flight.error)
            if flight.result is None:  # pragma: no cover - a leader always sets one or the other
                raise ConnectorError("token flight ended without an outcome", code="internal")
            return flight.result
        try:
            flight.result = attempt()
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._guard:
                self._flights.pop(key, None)
            flight.done.set()

    def _lookup(
        self,
        cache: cachetools.TLRUCache[str, _Entry],
        key: str,
        failure_key: Hashable,
        fingerprint: bytes,
    ) -> str | None:
        with self._guard:
            failure = self._failures.get(failure_key)
            entry = cache.get(key)
        if failure is not None:
            raise failure.error()
        # A session cached under the same key for other credentials (a password
        # change, or two configs sharing a key) is not ours to use.
        if entry is not None and entry.fingerprint == fingerprint:
            return entry.token
        return None

    def _invalidate(
        self, cache: cachetools.TLRUCache[str, _Entry], key: str, failed_token: str
    ) -> bool:
        with self._guard:
            entry = cache.get(key)
            if entry is not None and entry.token == failed_token:
                del cache[key]
                return True
            return False

    def _remember_failure(self, failure_key: Hashable, exc: AuthError) -> None:
        if self._settings.login_failure_ttl_s <= 0:
            return
        with self._guard:
            self._failures[failure_key] = _Failure(
                exc.message, exc.step, exc.code, exc.http_status, exc.request_id
            )

    def _ttl(self, expires_in: object, started: float) -> float:
        # The platform's clock started when it answered, ours when we asked:
        # counting from the request start keeps a slow response on the safe side.
        ttl = token_ttl(
            expires_in,
            default_s=self._settings.default_token_ttl_s,
            max_leeway_s=self._settings.max_leeway_s,
        )
        return ttl - max(0.0, self._monotonic() - started)

    def _fetch_access_token(self) -> _Entry:
        settings = self._settings
        started = self._monotonic()
        resp = self._transport.request(
            "POST",
            settings.token_path,
            endpoint="token",
            data={
                "grant_type": "client_credentials",
                "client_id": settings.client_id,
                "client_secret": settings.client_secret,
                "scope": settings.scope,
            },
        )
        request_id = resp.headers.get(settings.request_id_header) or None
        status = resp.status_code
        if status == 429 or status >= 500:
            _, classified = classify_response(resp, request_id_header=settings.request_id_header)
            # 429/5xx always map to an error; the fallback only keeps that promise explicit.
            error = classified or PlatformUnavailable(
                f"HTTP {status}", http_status=status, request_id=request_id
            )
            logger.warning(
                "access token request failed status=%s request_id=%s", status, request_id
            )
            raise error
        body = _json_object(resp)
        if status != 200:
            # RFC 6749 §5.2: the OAuth error code is safe to carry; the
            # description is free text and stays out.
            code = body.get("error") if body else None
            error = AuthError(
                "platform refused the client credentials",
                step="access_token",
                code=code if isinstance(code, str) and code else "invalid_client",
                http_status=status,
                request_id=request_id,
                retryable=False,
            )
            logger.error(
                "access token refused status=%s code=%s request_id=%s",
                status,
                error.code,
                request_id,
            )
            self._remember_failure(_ACCESS_KEY, error)
            raise error
        if body is None:
            raise ResponseParseError(
                "token response is not a JSON object",
                path="<body>",
                code="invalid_response",
                http_status=status,
                request_id=request_id,
            )
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise ResponseParseError(
                "token response has no access_token",
                path="access_token",
                code="invalid_response",
                http_status=status,
                request_id=request_id,
            )
        ttl = self._ttl(body.get("expires_in"), started)
        self._notify("token_refreshed", "access")
        logger.info("access token obtained ttl_s=%.0f request_id=%s", ttl, request_id)
        return _Entry(token, ttl)

    def _login(self, prescriber: PrescriberCredentials, fingerprint: bytes) -> _Entry:
        settings = self._settings
        with self._guard:
            kind = "renewal" if prescriber.key in self._logged_in else "first"
        self._notify("login", kind)
        for attempt in (1, 2):
            access = self.access_token()
            started = self._monotonic()
            resp = self._transport.request(
                "POST",
                settings.login_path,
                endpoint="login",
                headers={"Authorization": f"Bearer {access}"},
                json={"email": prescriber.email, "password": prescriber.password},
            )
            body, error = classify_response(resp, request_id_header=settings.request_id_header)
            if error is None:
                break
            if isinstance(error, AuthError) and error.step == "access_token" and attempt == 1:
                # §1b: 401 means our access token died; refresh it and try once more.
                logger.info(
                    "login got 401, refreshing access token prescriber=%s request_id=%s",
                    prescriber.key,
                    error.request_id,
                )
                self.invalidate_access_token(access)
                continue
            raise self._login_error(prescriber, error)
        if body is None:  # classify_response returns a body or an error; never neither
            raise ResponseParseError(
                "login success without a body", path="<body>", code="invalid_response"
            )
        request_id = resp.headers.get(settings.request_id_header) or None
        try:
            token = value_at(body, ("data", "session_token"))
            if not isinstance(token, str) or not token:
                raise ResponseParseError(
                    "expected a non-empty string at 'data.session_token'",
                    path="data.session_token",
                    code="invalid_response",
                )
        except ResponseParseError as exc:
            exc.http_status = resp.status_code
            exc.request_id = request_id
            raise
        ttl = self._ttl(body["data"].get("expires_in"), started)
        with self._guard:
            self._logged_in.add(prescriber.key)
        self._notify("token_refreshed", "session")
        logger.info(
            "prescriber session obtained prescriber=%s ttl_s=%.0f request_id=%s",
            prescriber.key,
            ttl,
            request_id,
        )
        return _Entry(token, ttl, fingerprint)

    def _login_error(self, prescriber: PrescriberCredentials, error: ConnectorError) -> Exception:
        is_refusal = isinstance(error, PlatformRejected) or (
            type(error) is ConnectorError and error.http_status and 400 <= error.http_status < 500
        )
        if not is_refusal:
            logger.warning(
                "prescriber login failed prescriber=%s status=%s code=%s request_id=%s",
                prescriber.key,
                error.http_status,
                error.code,
                error.request_id,
            )
            return error
        login_error = AuthError(
            f"prescriber login refused: {error.message}"
            if isinstance(error, PlatformRejected)
            else "prescriber login refused",
            step="login",
            code=error.code or "login_failed",
            http_status=error.http_status,
            request_id=error.request_id,
            retryable=False,
        )
        self._notify("login_refused")
        logger.error(
            "prescriber login refused prescriber=%s code=%s request_id=%s",
            prescriber.key,
            login_error.code,
            error.request_id,
        )
        return login_error


def _json_object(resp: requests.Response) -> dict[str, Any] | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None

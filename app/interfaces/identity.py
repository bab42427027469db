"""Who is calling: bearer JWTs, their verification, and the roles a view requires.

Requests carry ``Authorization: Bearer <JWT>`` (RFC 6750). Two modes, chosen by
settings, never by the token:

- **JWKS** (production): ``JWT_JWKS_URL`` names the identity provider's key set
  (RFC 7517). A token's ``kid`` picks the key; the key's type pins the algorithm
  (RSA -> RS256, EC P-256 -> ES256). Symmetric (``oct``) keys in the set are
  ignored, so an HS256 token is refused in this mode whatever its header says.
- **HS256** (development and tests): tokens signed with ``JWT_SECRET``, minted by
  :func:`mint_token` / ``flask --app app tokens mint``.

Both check ``iss``, ``aud``, ``exp`` and ``nbf`` with ``JWT_LEEWAY_S`` seconds of
leeway against the app's injectable unix_time (``Runtime.unix_time``), require ``iat``
with a lifetime ``exp - iat`` of at most ``JWT_MAX_TTL_S`` seconds (a token valid for
centuries is a stolen credential that never dies), a ``sub`` that fully matches
:data:`SUBJECT_PATTERN`, a string ``role``, and no control characters or lone surrogates
in any string claim (:mod:`app.interfaces.text_input`). ``alg: none`` is never accepted.

Roles: a verified token whose ``role`` is not one of :data:`ROLES` is authenticated but
not authorised: 403 ``forbidden`` on every endpoint, like a known role the endpoint does
not admit (README, "Identity, roles and the directory endpoints").
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import jwt
import requests
from flask import current_app, g, request
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from app.foundation.config import Settings, is_generated_jwt_secret
from app.foundation.errors import Forbidden
from app.interfaces.errors import ApiError
from app.interfaces.text_input import control_character_problem
from app.mechanisms.runtime import runtime

log = logging.getLogger("app.interfaces.identity")

ROLES = ("patient", "support", "service")
HS_ALGORITHM = "HS256"
# The identity provider's key types and the one algorithm each may sign with.
# Never read from the token header: that is how "alg confusion" attacks work.
_ALGORITHM_FOR_KEY = {"RSA": "RS256", "EC": "ES256"}
_EXTENSION = "erx_identity"
_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}

F = TypeVar("F", bound=Callable[..., Any])
# A subject: 1..255 printable ASCII characters, no spaces (patient refs such as "pt-0001",
# identity-provider ids such as "auth0|5f1c" or UUIDs). Always used with re.fullmatch:
# "$" would also match before a trailing newline.
SUBJECT_PATTERN = re.compile(r"[!-~]{1,255}")


def valid_subject(subject: object) -> bool:
    """True when ``subject`` is a str that fully matches :data:`SUBJECT_PATTERN`."""
    return isinstance(subject, str) and SUBJECT_PATTERN.fullmatch(subject) is not None


@dataclass(frozen=True)
class Identity:
    """The verified caller.

    ``subject``: the JWT ``sub``; for a patient, ``Patient.external_ref`` (e.g.
    ``"pt-0001"``). ``role``: the token's role claim; one of :data:`ROLES` for any
    caller a view admits (an unknown role is refused with 403 by :func:`require_roles`).
    """

    subject: str
    role: str


class InvalidToken(Exception):
    """The bearer token is missing or fails verification; ``reason`` is for logs (no token text)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def mint_token(
    settings: Settings,
    *,
    role: str,
    subject: str,
    ttl_s: int = 3600,
    now: float | None = None,
    token_id: str | None = None,
) -> str:
    """Return an HS256 development token for ``subject`` with ``role``.

    Signed with ``settings.jwt_secret``; ``iss``/``aud`` from settings; ``iat`` and
    ``nbf`` = ``now`` and ``exp`` = ``now + ttl_s`` (Unix seconds, UTC; ``now``
    defaults to the current time); ``jti`` = ``token_id`` (RFC 7519 section 4.1.7;
    default 16 random URL-safe characters), so two tokens minted in the same second
    still differ and a log can name a token without its text. Raises :class:`app.foundation.errors.Forbidden`
    when ``settings.env == "production"`` (production tokens come from the
    identity provider), ``ValueError`` for an unknown role, a subject that does not
    fully match :data:`SUBJECT_PATTERN`, or a ``ttl_s`` below 1. A ``ttl_s`` above
    ``settings.jwt_max_ttl_s`` is cut to it (a longer-lived token would be refused);
    ``flask tokens mint`` refuses such a ``--ttl`` outright.
    """
    if settings.env == "production":
        raise Forbidden("Development tokens cannot be minted in production (ERX_ENV=production).")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not valid_subject(subject):
        raise ValueError("subject must be 1 to 255 printable ASCII characters without spaces")
    if ttl_s < 1:
        raise ValueError("ttl_s must be at least 1 second")
    ttl_s = min(ttl_s, settings.jwt_max_ttl_s)
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "role": role,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl_s),
        "jti": secrets.token_urlsafe(12) if token_id is None else token_id,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=HS_ALGORITHM)


class JwksCache:
    """The identity provider's signing keys, fetched from ``url`` and cached.

    A known ``kid`` is served from the cache while the set is younger than
    ``max_age_s``. An unknown ``kid`` (key rotation) refetches the set once, but
    never more often than every ``min_refresh_s`` seconds, so a flood of tokens
    with made-up kids cannot hammer the provider. ``unix_time`` returns Unix
    seconds; ``session`` is the HTTP session (requests) used for the fetch.
    """

    def __init__(
        self,
        url: str,
        *,
        unix_time: Callable[[], float] = time.time,
        min_refresh_s: float = 60.0,
        max_age_s: float = 3600.0,
        timeout_s: float = 5.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url
        self.unix_time = unix_time
        self.min_refresh_s = min_refresh_s
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        self.fetches = 0
        self._keys: dict[str, tuple[Any, str]] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def key_for(self, kid: str) -> tuple[Any, str]:
        """Return ``(public key, algorithm)`` for ``kid``.

        Raises :class:`InvalidToken` when the kid is not in the set (after at
        most one rate-limited refresh) or the provider cannot be reached and no
        cached set holds it.
        """
        with self._lock:
            now = self.unix_time()
            fresh = self._fetched_at is not None and now - self._fetched_at < self.max_age_s
            if kid in self._keys and fresh:
                return self._keys[kid]
            may_refresh = self._fetched_at is None or now - self._fetched_at >= self.min_refresh_s
            if may_refresh:
                self._refresh(now)
            if kid in self._keys:
                return self._keys[kid]
        raise InvalidToken("unknown kid")

    def _refresh(self, now: float) -> None:
        self._fetched_at = now  # also on failure: the rate limit holds while the provider is down
        self.fetches += 1
        try:
            response = self.session.get(self.url, timeout=self.timeout_s)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            log.warning("JWKS fetch failed: %s", type(exc).__name__)
            return
        self._keys = _parse_jwks(document)
        log.info("JWKS fetched: %d signing key(s)", len(self._keys))


def _parse_jwks(document: Any) -> dict[str, tuple[Any, str]]:
    """Map each usable key's ``kid`` to ``(public key, algorithm)``; skip oct and unknown keys."""
    keys: dict[str, tuple[Any, str]] = {}
    entries = document.get("keys", []) if isinstance(document, Mapping) else []
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        algorithm = _ALGORITHM_FOR_KEY.get(str(entry.get("kty")))
        if algorithm is None or entry.get("alg", algorithm) != algorithm:
            continue
        if algorithm == "ES256" and entry.get("crv") != "P-256":
            continue
        try:
            loader = RSAAlgorithm if algorithm == "RS256" else ECAlgorithm
            keys[entry["kid"]] = (loader.from_jwk(dict(entry)), algorithm)
        except (jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            continue
    return keys


class TokenVerifier:
    """Verifies bearer tokens for one app's settings; see the module docstring for the rules."""

    def __init__(
        self, settings: Settings, *, unix_time: Callable[[], float], jwks: JwksCache | None = None
    ) -> None:
        self.settings = settings
        self.unix_time = unix_time
        self.jwks = jwks
        self._warned_unconfigured = False
        if jwks is None and settings.jwt_jwks_url:
            self.jwks = JwksCache(settings.jwt_jwks_url, unix_time=unix_time)

    def verify(self, token: str) -> Identity:
        """Return the :class:`Identity` in ``token``; raise :class:`InvalidToken` otherwise."""
        key, algorithm = self._key_for(token)
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                # Time claims are checked below against the injectable unix_time.
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iat", "iss", "aud", "sub"],
                },
            )
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(type(exc).__name__) from None
        _check_claim_text(claims)
        self._check_times(claims)
        subject, role = claims.get("sub"), claims.get("role")
        if not valid_subject(subject):
            raise InvalidToken("bad sub")
        if not isinstance(role, str) or not role:
            raise InvalidToken("bad role claim")
        return Identity(subject=subject, role=role)

    def _key_for(self, token: str) -> tuple[Any, str]:
        if self.jwks is not None:
            try:
                header = jwt.get_unverified_header(token)
            except jwt.InvalidTokenError:
                raise InvalidToken("malformed") from None
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise InvalidToken("no kid")
            return self.jwks.key_for(kid)
        if not self.settings.jwt_secret or (
            self.settings.env == "production" and is_generated_jwt_secret(self.settings.jwt_secret)
        ):
            # Neither JWT_JWKS_URL nor a usable JWT_SECRET (empty, or in production a secret
            # nobody configured): nothing is accepted.
            if not self._warned_unconfigured:
                self._warned_unconfigured = True
                log.error(
                    "neither JWT_JWKS_URL nor a usable JWT_SECRET is set: refusing every token"
                )
            raise InvalidToken("not configured")
        return self.settings.jwt_secret, HS_ALGORITHM

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now, leeway = self.unix_time(), self.settings.jwt_leeway_s
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if not _is_number(exp) or exp <= now - leeway:
            raise InvalidToken("expired")
        if not _is_number(iat) or iat > now + leeway:
            raise InvalidToken("bad iat")
        if exp - iat > self.settings.jwt_max_ttl_s:
            raise InvalidToken("lifetime above JWT_MAX_TTL_S")
        if nbf is not None and (not _is_number(nbf) or nbf > now + leeway):
            raise InvalidToken("not yet valid")


def _check_claim_text(claims: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidToken` when a string claim (or a string in a list claim) has
    control characters or lone surrogates: they would reach queries and logs."""
    for value in claims.values():
        texts = value if isinstance(value, list) else [value]
        for text in texts:
            if isinstance(text, str) and control_character_problem(text) is not None:
                raise InvalidToken("control characters in a claim")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _verifier() -> TokenVerifier:
    verifier = current_app.extensions.get(_EXTENSION)
    if verifier is None:
        svc = runtime()
        # The lambda reads the unix_time at call time, so tests may swap Runtime.unix_time later.
        verifier = TokenVerifier(svc.settings, unix_time=lambda: svc.unix_time())
        current_app.extensions[_EXTENSION] = verifier
    return verifier


def _bearer_token() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("missing")
    return token.strip()


_REQUEST_RESULT = "erx_identity_result"


def request_identity() -> Identity | None:
    """Verify the current request's bearer token once; return its :class:`Identity` or None.

    The outcome is kept on ``flask.g`` for the rest of the request, so the rate limits
    (:mod:`app.interfaces.rate_limits`, which key on the verified subject before the view runs) and
    :func:`require_roles` verify a token once. None when the token is missing or invalid
    (the reason is logged at INFO, never the token).
    """
    if _REQUEST_RESULT not in g:
        try:
            result: Identity | InvalidToken = _verifier().verify(_bearer_token())
        except InvalidToken as exc:
            result = exc
        setattr(g, _REQUEST_RESULT, result)
    result = g.get(_REQUEST_RESULT)
    return result if isinstance(result, Identity) else None


def require_roles(*roles: str) -> Callable[[F], F]:
    """Decorate a Flask view so that only callers with one of ``roles`` reach it.

    Verifies ``Authorization: Bearer <JWT>`` and stores the :class:`Identity` in
    ``flask.g.identity``. Raises :class:`app.interfaces.errors.ApiError` 401 ``invalid_token``
    with ``WWW-Authenticate: Bearer error="invalid_token"`` when the token is
    missing or invalid, and 403 ``forbidden`` when the role is not in ``roles``
    (including a role that is not in :data:`ROLES` at all).
    ``ValueError`` at decoration time for a role not in :data:`ROLES`.
    """
    unknown = [role for role in roles if role not in ROLES]
    if unknown or not roles:
        raise ValueError(f"roles must be among {', '.join(ROLES)}")

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            identity = request_identity()
            if identity is None:
                log.info("bearer token refused: %s", g.get(_REQUEST_RESULT))
                raise ApiError(
                    401, "invalid_token", "A valid bearer token is required.", headers=_CHALLENGE
                ) from None
            if identity.role not in roles:
                raise ApiError(403, "forbidden", "Your role may not use this endpoint.")
            g.identity = identity
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorate


def current_identity() -> Identity:
    """Return the :class:`Identity` of the current request (set by :func:`require_roles`).

    Raises ``RuntimeError`` when the view is not behind :func:`require_roles`.
    """
    identity = g.get("identity")
    if not isinstance(identity, Identity):
        raise RuntimeError("no identity: the view is not decorated with require_roles")
    return identity

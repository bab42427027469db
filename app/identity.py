# STUB: replaced by the identity branch at merge
"""Caller identity from a bearer JWT: the minimal stub of the agreed interface (issue 11).

Only what the FHIR boundary needs, with exactly the interface the identity
branch provides: HS256 tokens signed with ``settings.jwt_secret`` (PyJWT),
checked for issuer, audience, expiry (``settings.jwt_leeway_s`` of leeway) and
role. No JWKS support here; the identity branch brings it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import jwt
from flask import g, request

from app.config import Settings
from app.errors import ApiError
from app.extensions import services
from app.services.errors import Forbidden

ROLES = ("patient", "support", "service")
_ALGORITHM = "HS256"
_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Identity:
    """The verified caller: ``subject`` is the JWT ``sub`` (a patient's ``Patient.external_ref``), ``role`` one of ROLES."""

    subject: str
    role: str


def mint_token(
    settings: Settings, *, role: str, subject: str, ttl_s: int = 3600, now: float | None = None
) -> str:
    """Return an HS256 development token for ``role``/``subject``, valid ``ttl_s`` seconds from ``now`` (Unix s).

    Raises :class:`app.services.errors.Forbidden` when ``settings.env`` is
    ``production`` (tokens there come from the identity provider), ValueError
    for an unknown role.
    """
    if settings.env == "production":
        raise Forbidden("Development tokens cannot be minted in production.")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "role": role,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl_s),
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=_ALGORITHM)


def _invalid(message: str) -> ApiError:
    error = ApiError(401, "invalid_token", message)
    # The agreed interface answers 401 with a Bearer challenge (RFC 6750 §3).
    error.headers = dict(_CHALLENGE)  # type: ignore[attr-defined]
    return error


def _verify(token: str) -> Identity:
    settings = services().settings
    if not settings.jwt_secret:
        raise _invalid("Bearer tokens cannot be verified: no key is configured.")
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[_ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_s,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.PyJWTError:
        raise _invalid("The bearer token is invalid or expired.") from None
    role, subject = claims.get("role"), claims.get("sub")
    if role not in ROLES or not isinstance(subject, str) or not subject:
        raise _invalid("The bearer token has no valid role or subject.")
    return Identity(subject=subject, role=role)


def require_roles(*roles: str) -> Callable[[F], F]:
    """Decorate a Flask view: verify ``Authorization: Bearer <JWT>`` and allow only ``roles``.

    Stores the :class:`Identity` in ``flask.g.identity``. Raises
    ``ApiError(401, "invalid_token")`` (with a ``WWW-Authenticate`` challenge)
    when the token is missing or invalid, ``ApiError(403, "forbidden")`` when
    its role is not in ``roles``.
    """
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _invalid("A bearer token is required.")
            identity = _verify(token.strip())
            if identity.role not in roles:
                raise ApiError(403, "forbidden", "This role may not use this resource.")
            g.identity = identity
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def current_identity() -> Identity:
    """Return the :class:`Identity` stored by :func:`require_roles` for this request.

    Raises RuntimeError when called outside a view guarded by it.
    """
    identity = g.get("identity")
    if identity is None:
        raise RuntimeError("current_identity() outside a require_roles view")
    return identity

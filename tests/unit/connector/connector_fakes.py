"""The connector tests' platform address and prescriber; the fake platform and clock are tests.support's.

The connector's tests talk to ``https://platform.test/api`` (a base URL with a
path, as production has) and install only the auth endpoints of
:class:`tests.support.FakePlatform`, registering each call's answer themselves.
"""

from __future__ import annotations

import responses

from connector import PrescriberCredentials
from tests.support import FakePlatform, success_issue_body

__all__ = [
    "BASE",
    "CLIENT_SECRET",
    "LOGIN_URL",
    "RX_URL",
    "TOKEN_URL",
    "FakePlatform",
    "auth_platform",
    "make_prescriber",
    "success_issue_body",
]

BASE = "https://platform.test/api"
TOKEN_URL = f"{BASE}/oauth/token"
LOGIN_URL = f"{BASE}/prescriber/login"
RX_URL = f"{BASE}/prescriptions"
CLIENT_SECRET = "cs-very-secret-value"


def make_prescriber(key: str = "5531", name: str = "dr.jones") -> PrescriberCredentials:
    return PrescriberCredentials(
        key=key, email=f"{name}@example.test", password=f"pw-{name}-xyzzy", secure_pin="918273"
    )


def auth_platform(rsps: responses.RequestsMock) -> FakePlatform:
    """The fake platform at :data:`BASE` with only its auth endpoints (§1) installed."""
    return FakePlatform(rsps, base=BASE).install(auth_only=True)

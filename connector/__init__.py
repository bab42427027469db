"""erx-connector's client library for the e-prescription platform.

See ``shared/platform-contract.md`` for the API it speaks. The package imports
only the standard library, requests, cachetools and marshmallow, and never
reads the environment: the app hands it a :class:`ConnectorSettings`.

Typical use::

    client = ConnectorClient(ConnectorSettings(base_url, client_id, client_secret))
    issued = client.issue(prescriber, IssueRequest(...))
"""

from __future__ import annotations

from connector.auth import TokenCache, token_ttl
from connector.client import ConnectorClient
from connector.errors import (
    AuthError,
    ConnectorError,
    PayloadError,
    PlatformRejected,
    PlatformUnavailable,
    RateLimited,
    ResponseParseError,
    TransportError,
)
from connector.parsing import parse_prescription, parse_prescription_token, parse_timestamp
from connector.payloads import (
    IssueRequest,
    MedicineLine,
    PatientDetails,
    build_issue_payload,
    normalise_phone,
)
from connector.results import (
    Clinic,
    Contact,
    ContactAddress,
    IssuedPrescription,
    Medicine,
    PlatformPrescription,
    StatusChange,
)
from connector.settings import ConnectorSettings, PrescriberCredentials

__all__ = [
    "AuthError",
    "Clinic",
    "ConnectorClient",
    "ConnectorError",
    "ConnectorSettings",
    "Contact",
    "ContactAddress",
    "IssueRequest",
    "IssuedPrescription",
    "Medicine",
    "MedicineLine",
    "PatientDetails",
    "PayloadError",
    "PlatformPrescription",
    "PlatformRejected",
    "PlatformUnavailable",
    "PrescriberCredentials",
    "RateLimited",
    "ResponseParseError",
    "StatusChange",
    "TokenCache",
    "TransportError",
    "build_issue_payload",
    "normalise_phone",
    "parse_prescription",
    "parse_prescription_token",
    "parse_timestamp",
    "token_ttl",
]

"""Fixtures for the connector's unit tests (no network, no sleeping)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import responses
from connector_fakes import BASE, CLIENT_SECRET, FakePlatform, auth_platform, make_prescriber

from connector import (
    ConnectorClient,
    ConnectorSettings,
    IssueRequest,
    MedicineLine,
    PatientDetails,
    PrescriberCredentials,
    TokenCache,
)
from tests.support import FakeClock


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def platform(rsps: responses.RequestsMock) -> FakePlatform:
    return auth_platform(rsps)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings() -> ConnectorSettings:
    return ConnectorSettings(BASE, "client-1", CLIENT_SECRET)


@pytest.fixture
def tokens(settings: ConnectorSettings, clock: FakeClock) -> TokenCache:
    return TokenCache(settings, monotonic=clock.monotonic)


@pytest.fixture
def client(settings: ConnectorSettings, clock: FakeClock) -> ConnectorClient:
    return ConnectorClient(settings, monotonic=clock.monotonic)


@pytest.fixture
def prescriber() -> PrescriberCredentials:
    return make_prescriber()


@pytest.fixture
def patient() -> PatientDetails:
    return PatientDetails(
        first_name="Philippa",
        last_name="Quackenbush",
        gender="Female",
        date_of_birth=dt.date(1984, 3, 7),
        email="philippa.q@example.test",
        phone="07700 900123",
        address_line1="12 Lilac Crescent",
        address_line2=None,
        city="Harrogate",
        post_code="HG1 2AB",
    )


@pytest.fixture
def issue_request(patient: PatientDetails) -> IssueRequest:
    return IssueRequest(
        clinic_id=994,
        contact_id=17,
        client_ref_id="rx-000042",
        patient=patient,
        medicines=(
            MedicineLine(
                vpid="39109211000001103",
                description="Semaglutide 0.25mg/0.19ml pen",
                quantity=4,
                directions="Inject 0.25mg once weekly",
            ),
        ),
    )

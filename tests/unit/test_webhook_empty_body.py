"""An empty webhook body is not an event, even when correctly signed: it is refused, not stored."""

from __future__ import annotations

import pytest

from app.mechanisms.metrics import WEBHOOKS_REJECTED
from tests.unit.test_webhook_receiver import clock, deliver, inbox  # noqa: F401 (clock: the receiver's fixture)

pytestmark = pytest.mark.usefixtures("clock")


@pytest.mark.parametrize("body", [b"", b"   ", b"\r\n"], ids=["empty", "spaces", "newline"])
def test_signed_empty_body_is_400_and_stored_nowhere(client, seeded, body: bytes) -> None:  # type: ignore[no-untyped-def]
    before = WEBHOOKS_REJECTED.labels(reason="empty_body")._value.get()
    response = deliver(client, body)
    assert response.status_code == 400
    assert response.get_json() == {
        "code": "empty_body",
        "message": "The webhook body is empty: it is not an event.",
        "errors": {"body": ["Empty."]},
    }
    assert inbox(seeded) == []
    assert WEBHOOKS_REJECTED.labels(reason="empty_body")._value.get() == before + 1


def test_unsigned_empty_body_is_still_refused_for_its_signature(client, seeded) -> None:  # type: ignore[no-untyped-def]
    response = deliver(client, b"", header="")
    assert response.status_code == 401
    assert inbox(seeded) == []

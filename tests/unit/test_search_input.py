"""Pharmacy search input that folds to nothing (app/interfaces/directory_schemas.py, app/foundation/text_folding.py).

``q`` absent or empty lists every pharmacy (documented in the README); a ``q`` of only
spaces, punctuation or symbols would silently mean the same, so it gets 422 saying what to type.
"""

from __future__ import annotations

import pytest

from app.interfaces.directory_schemas import FOLDS_TO_NOTHING
from tests.conftest import bearer

SEARCH = "/api/v1/pharmacies"


@pytest.mark.parametrize("q", ["!!!", "   ", "-", "'", "\u2019\u2019", "\u2603\u2728", "% _ %"])
def test_a_query_that_folds_to_nothing_gets_422_saying_what_to_type(app, client, q) -> None:  # type: ignore[no-untyped-def]
    response = client.get(SEARCH, query_string={"q": q}, headers=bearer(app, role="patient"))

    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == "validation_error"
    assert body["errors"] == {"q": [FOLDS_TO_NOTHING]}
    assert "letter or digit" in FOLDS_TO_NOTHING


def test_absent_or_empty_q_lists_every_pharmacy_and_a_real_query_filters(app, client) -> None:  # type: ignore[no-untyped-def]
    headers = bearer(app, role="patient")

    absent = client.get(SEARCH, headers=headers).get_json()
    empty = client.get(SEARCH, query_string={"q": ""}, headers=headers).get_json()
    filtered = client.get(SEARCH, query_string={"q": "!boots!"}, headers=headers)

    assert absent["total"] == empty["total"] > 0
    assert filtered.status_code == 200
    assert filtered.get_json()["total"] < absent["total"]

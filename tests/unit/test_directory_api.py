"""The directory endpoints (app/interfaces/directory_api.py): regions, me, me/prescriptions, pharmacy search.

Real database (PostgreSQL when DATABASE_URL is set, else SQLite), seeded per
test; the same expectations on both, so both give the same results. Every
refusal has the one JSON error shape and leaves the data as it was.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from app.foundation.db import Database
from app.foundation.models import Patient, Pharmacy, Prescription
from app.foundation.text_folding import fold
from app.services.pharmacies import display_address
from app.services.seeding import bulk_pharmacies_sql, execute_sql_script
from tests.conftest import bearer

UK_POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? [0-9][ABD-HJLNP-UW-Z]{2}$")


def get(client, app, path: str, *, role: str = "patient", subject: str = "pt-0001") -> Any:  # type: ignore[no-untyped-def]
    return client.get(path, headers=bearer(app, role=role, subject=subject))


def search(client, app, **params: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    query = "&".join(f"{k}={v}" for k, v in params.items())
    response = get(client, app, f"/api/v1/pharmacies?{query}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def names(body: dict[str, Any]) -> list[str]:
    return [hit["name"] for hit in body["items"]]


def add_pharmacy(
    db: Database,
    name: str,
    *,
    region: str = "B",
    branch_id: int | None = None,
    city: str = "Testford",
    post_code: str = "TF1 1AA",
    group: str | None = "All Other Pharmacies",
) -> int:
    with db.session() as session:
        pharmacy = Pharmacy(
            region_code=region,
            name=name,
            branch_id=branch_id,
            group_name=group,
            email=f"{abs(hash((name, city)))}@pharmacy.example.test",
            address_line1="1 Test Street",
            city=city,
            post_code=post_code,
        )
        session.add(pharmacy)
        session.flush()
        return pharmacy.id


def assert_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_json()
    body = response.get_json()
    assert set(body) >= {"code", "message", "errors"}
    if field:
        assert field in body["errors"], body
    return body


# -- regions ----------------------------------------------------------------------------------


def test_regions_name_their_delivery_method(app, client) -> None:  # type: ignore[no-untyped-def]
    body = get(client, app, "/api/v1/regions", role="service", subject="svc").get_json()

    assert body == {
        "regions": [
            {
                "code": "A",
                "name": "Region A (email to pharmacy)",
                "flow": "email",
                "delivery_method": "email",
            },
            {
                "code": "B",
                "name": "Region B (e-prescription platform)",
                "flow": "erx",
                "delivery_method": "e-prescription platform",
            },
        ]
    }


# -- me -----------------------------------------------------------------------------------------


def test_me_shows_the_patients_region_and_no_phi(app, client) -> None:  # type: ignore[no-untyped-def]
    response = get(client, app, "/api/v1/me", subject="pt-0017")

    assert response.status_code == 200
    body = response.get_json()
    assert body["subject"] == "pt-0017"
    assert body["region"]["code"] == "A"
    assert "Ciara" not in response.get_data(as_text=True)


def test_me_for_an_unknown_subject_is_404(app, client) -> None:  # type: ignore[no-untyped-def]
    body = assert_error(get(client, app, "/api/v1/me", subject="pt-9999"), 404)
    assert body["code"] == "patient_not_found"


def test_patch_me_sets_the_region(app, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    headers = bearer(app, role="patient", subject="pt-0001")

    response = client.patch("/api/v1/me", json={"region": "A"}, headers=headers)

    assert response.status_code == 200
    assert response.get_json()["region"]["code"] == "A"
    assert client.get("/api/v1/me", headers=headers).get_json()["region"]["code"] == "A"
    with seeded.session() as session:
        assert (
            session.scalar(select(Patient.region_code).where(Patient.external_ref == "pt-0001"))
            == "A"
        )


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"region": "Z"}, 422, "region"),
        ({"region": ""}, 422, "region"),
        ({"region": 5}, 422, "region"),
        ({"region": None}, 422, "region"),
        ({}, 422, "region"),
        ({"region": "A", "name": "x"}, 422, "name"),
        ([], 400, None),
    ],
)
def test_patch_me_refuses_bad_bodies_and_writes_nothing(
    app, client, seeded, body, status, field
) -> None:  # type: ignore[no-untyped-def]
    response = client.patch("/api/v1/me", json=body, headers=bearer(app, role="patient"))

    assert_error(response, status, field)
    with seeded.session() as session:
        assert (
            session.scalar(select(Patient.region_code).where(Patient.external_ref == "pt-0001"))
            == "B"
        )


def test_patch_me_needs_json(app, client) -> None:  # type: ignore[no-untyped-def]
    response = client.patch("/api/v1/me", data="region=A", headers=bearer(app, role="patient"))

    assert_error(response, 415)


def test_patch_me_for_an_unknown_subject_is_404(app, client) -> None:  # type: ignore[no-untyped-def]
    response = client.patch(
        "/api/v1/me", json={"region": "A"}, headers=bearer(app, role="patient", subject="pt-9999")
    )

    assert_error(response, 404)


# -- me/prescriptions -------------------------------------------------------------------------


def date_prescriptions(db: Database, created: dict[str, datetime]) -> None:
    with db.session() as session:
        for reference, when in created.items():
            session.execute(
                update(Prescription)
                .where(Prescription.reference == reference)
                .values(created_at=when)
            )


def test_my_prescriptions_newest_first_and_only_mine(app, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    # pt-0001 owns rx-000001, rx-000025 and rx-000049 (patient (n-1) % 24 + 1).
    base = datetime(2026, 11, 1, tzinfo=UTC)
    date_prescriptions(
        seeded,
        {
            "rx-000001": base + timedelta(days=2),
            "rx-000025": base + timedelta(days=3),
            "rx-000049": base + timedelta(days=1),
        },
    )

    body = get(client, app, "/api/v1/me/prescriptions").get_json()

    assert [item["reference"] for item in body["items"]] == ["rx-000025", "rx-000001", "rx-000049"]
    assert body["total"] == 3
    first = body["items"][0]
    assert first["status"] == "draft"
    assert first["status_url"] == f"/api/v1/prescriptions/{first['id']}"
    assert first["created_at"].startswith("2026-11-04T00:00:00")


def test_my_prescriptions_ties_break_by_id_and_paginate(app, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    same = datetime(2026, 11, 1, tzinfo=UTC)
    date_prescriptions(seeded, {"rx-000001": same, "rx-000025": same, "rx-000049": same})

    with seeded.session() as session:
        # Seeded ids do not follow references on every database (newcomer fixes).
        by_id = session.scalars(
            select(Prescription.reference)
            .where(Prescription.reference.in_(["rx-000001", "rx-000025", "rx-000049"]))
            .order_by(Prescription.id.desc())
        ).all()

    pages = [
        get(client, app, f"/api/v1/me/prescriptions?per_page=2&page={n}").get_json()
        for n in (1, 2, 3)
    ]

    assert [[i["reference"] for i in p["items"]] for p in pages] == [by_id[:2], by_id[2:], []]
    assert [p["total"] for p in pages] == [3, 3, 3]
    assert pages[0]["page"] == 1 and pages[0]["per_page"] == 2


def test_my_prescriptions_for_a_patient_without_any(app, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    with seeded.session() as session:
        session.add(
            Patient(
                external_ref="pt-new",
                region_code="B",
                first_name="N",
                last_name="P",
                gender="other",
                date_of_birth=datetime(1990, 1, 1).date(),
                address_line1="1 Road",
                city="Leeds",
                post_code="LS1 1AA",
            )
        )

    body = get(client, app, "/api/v1/me/prescriptions", subject="pt-new").get_json()

    assert body == {"items": [], "page": 1, "per_page": 20, "total": 0}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "page"),
        ("page=abc", "page"),
        ("per_page=0", "per_page"),
        ("per_page=51", "per_page"),
        ("per_page=2.5", "per_page"),
        ("page=99999999999999999999", "page"),
        ("page=1&page=2", "page"),
    ],
)
def test_bad_paging_parameters_are_422(app, client, query, field) -> None:  # type: ignore[no-untyped-def]
    assert_error(get(client, app, f"/api/v1/me/prescriptions?{query}"), 422, field)
    assert_error(get(client, app, f"/api/v1/pharmacies?{query}"), 422, field)


# -- pharmacy search ---------------------------------------------------------------------------


def test_each_hit_has_what_the_app_shows_and_sends_with(app, client) -> None:  # type: ignore[no-untyped-def]
    body = search(client, app, q="marylebone")

    assert body["items"] == [
        {
            "id": body["items"][0]["id"],
            "name": "Marylebone Pharmacy",
            "address": "48 Marylebone High Street, London W1U 5HS",
            "group": "All Other Pharmacies",
            "region": "B",
            "branch_id": 17,
        }
    ]
    assert body["total"] == 1


def test_search_is_case_insensitive(app, client) -> None:  # type: ignore[no-untyped-def]
    assert names(search(client, app, q="BOOTS", per_page=50)) == names(
        search(client, app, q="boots", per_page=50)
    )
    assert len(names(search(client, app, q="BoOtS", per_page=50))) == 8


def test_search_by_town(app, client) -> None:  # type: ignore[no-untyped-def]
    assert names(search(client, app, q="leeds")) == ["Boots Leeds Briggate", "Headingley Pharmacy"]


@pytest.mark.parametrize("q", ["W1U", "w1u", "W1U 5", "W1U5HS", "w1u 5hs"])
def test_search_by_postcode_prefix(app, client, q) -> None:  # type: ignore[no-untyped-def]
    assert names(search(client, app, q=q)) == ["Marylebone Pharmacy"]


@pytest.mark.parametrize("q", ["LS6 2", "LS62", "ls6 2al", "LS6"])
def test_search_by_postcode_with_or_without_the_space(app, client, q) -> None:  # type: ignore[no-untyped-def]
    assert names(search(client, app, q=q)) == ["Headingley Pharmacy"]


def test_search_is_accent_insensitive_both_ways(app, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    add_pharmacy(
        seeded, "Pharmacie Côté Sud", branch_id=9001, city="Llanfairpwll", post_code="LL61 5UJ"
    )
    add_pharmacy(seeded, "Muller Chemists", branch_id=9002)
    add_pharmacy(
        seeded, "Ó Briain's Pharmacy", branch_id=9003, city="Caernarfon", post_code="LL55 1AB"
    )

    assert names(search(client, app, q="cote")) == ["Pharmacie Côté Sud"]
    assert names(search(client, app, q="CÔTÉ sud")) == ["Pharmacie Côté Sud"]
    assert names(search(client, app, q="Müller")) == ["Muller Chemists"]
    assert names(search(client, app, q="o briains")) == ["Ó Briain's Pharmacy"]
    assert names(search(client, app, q="Ó%20Briain%27s")) == ["Ó Briain's Pharmacy"]


def test_search_ranks_exact_then_prefix_then_word_then_substring(
    app, client, seeded: Database
) -> None:  # type: ignore[no-untyped-def]
    add_pharmacy(seeded, "Windmill Chemist", branch_id=9011)  # substring
    add_pharmacy(seeded, "Old Mill Pharmacy", branch_id=9012)  # a word starts with it
    add_pharmacy(seeded, "Millbrook Pharmacy", branch_id=9013)  # name prefix
    add_pharmacy(seeded, "Mill", branch_id=9014)  # the whole name
    add_pharmacy(
        seeded, "Corner Pharmacy", branch_id=9015, city="Millport", post_code="KA28 0AA"
    )  # town prefix

    body = search(client, app, q="mill")

    assert names(body) == [
        "Mill",
        "Mill Road Pharmacy",
        "Millbrook Pharmacy",  # name prefix, by name
        "Corner Pharmacy",
        "Old Mill Pharmacy",  # town or a word's prefix, by name
        "Windmill Chemist",
    ]


def test_every_word_must_match_somewhere(app, client) -> None:  # type: ignore[no-untyped-def]
    assert names(search(client, app, q="boots leeds")) == ["Boots Leeds Briggate"]
    assert names(search(client, app, q="pharmacy bristol")) == ["Clifton Village Pharmacy"]
    assert search(client, app, q="boots oxford")["total"] == 0


def test_pagination_walks_the_ranked_list(app, client) -> None:  # type: ignore[no-untyped-def]
    everything = names(search(client, app, q="pharmacy", per_page=50))
    pages = [search(client, app, q="pharmacy", per_page=7, page=n) for n in range(1, 8)]

    walked = [name for page in pages for name in names(page)]
    assert walked == everything
    assert all(page["total"] == len(everything) for page in pages)
    assert len(everything) > 7 * 4
    assert pages[-1]["items"] == []


def test_region_filter(app, client) -> None:  # type: ignore[no-untyped-def]
    region_a = search(client, app, region="A", per_page=50)
    region_b = search(client, app, region="B", per_page=50)

    assert region_a["total"] == 6 and {hit["region"] for hit in region_a["items"]} == {"A"}
    assert all(hit["branch_id"] is None for hit in region_a["items"])
    assert region_b["total"] == 40 and {hit["region"] for hit in region_b["items"]} == {"B"}
    assert names(search(client, app, q="lisburn road", region="A")) == ["Lisburn Road Pharmacy"]
    assert [h["branch_id"] for h in search(client, app, q="lisburn road", region="B")["items"]] == [
        120
    ]


def test_region_b_never_lists_a_pharmacy_without_branch_id(app, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    add_pharmacy(seeded, "Ghost Pharmacy", region="B", branch_id=None)
    add_pharmacy(seeded, "Ghost Chemist", region="A", branch_id=None, group=None)

    assert names(search(client, app, q="ghost")) == ["Ghost Chemist"]
    assert names(search(client, app, q="ghost", region="B")) == []
    assert "Ghost Pharmacy" not in names(search(client, app, region="B", per_page=50))


def test_an_empty_query_lists_everything_by_name(app, client) -> None:  # type: ignore[no-untyped-def]
    body = search(client, app, per_page=50)

    assert body["total"] == 46
    assert names(body) == sorted(names(body), key=lambda n: fold(n))


@pytest.mark.parametrize("q", ["%25", "_", "%27", "%22%3B--", "%5C", "***", "%E2%80%94", "a" * 100])
def test_odd_queries_never_500(app, client, q) -> None:  # type: ignore[no-untyped-def]
    response = get(client, app, f"/api/v1/pharmacies?q={q}")

    # Symbols alone fold to nothing: 422 naming q (README, "Input rules"), never everything.
    if q == "a" * 100:
        assert response.status_code == 200
    else:
        assert_error(response, 422, "q")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("region=Z", "region"),
        ("region=", "region"),
        ("q=" + "a" * 101, "q"),
        ("region=" + "A" * 9, "region"),
    ],
)
def test_bad_search_parameters_are_422_with_field_errors(app, client, query, field) -> None:  # type: ignore[no-untyped-def]
    assert_error(get(client, app, f"/api/v1/pharmacies?{query}"), 422, field)


def test_unknown_query_parameters_are_ignored(app, client) -> None:  # type: ignore[no-untyped-def]
    assert get(client, app, "/api/v1/pharmacies?q=leeds&_=1733100000").status_code == 200


# -- seeds: readable addresses, and the bulk generator ------------------------------------------


def test_every_seeded_pharmacy_has_a_readable_address(seeded: Database) -> None:
    with seeded.session() as session:
        for pharmacy in session.scalars(select(Pharmacy)):
            assert UK_POSTCODE.match(pharmacy.post_code), pharmacy.post_code
            assert re.match(r"^\d+ \S", pharmacy.address_line1), pharmacy.address_line1
            assert display_address(pharmacy).endswith(f", {pharmacy.city} {pharmacy.post_code}")


def test_bulk_pharmacies_are_realistic_and_searchable(app, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    execute_sql_script(seeded.engine, bulk_pharmacies_sql(12000))
    execute_sql_script(seeded.engine, bulk_pharmacies_sql(12000))  # a second run adds nothing

    with seeded.session() as session:
        bulk = session.scalars(select(Pharmacy).where(Pharmacy.email.like("bulk%"))).all()
        b_total = (
            session.scalar(
                select(func.count()).select_from(Pharmacy).where(Pharmacy.region_code == "B")
            )
            or 0
        )
        b_listed = (
            session.scalar(
                select(func.count())
                .select_from(Pharmacy)
                .where(Pharmacy.region_code == "B", Pharmacy.branch_id.is_not(None))
            )
            or 0
        )
    assert len(bulk) == 12000
    assert all(UK_POSTCODE.match(p.post_code) for p in bulk)
    branch_ids = [p.branch_id for p in bulk if p.branch_id is not None]
    assert len(branch_ids) == len(set(branch_ids)) > 9000
    assert all(p.branch_id is None for p in bulk if p.region_code == "A")
    assert 900 < sum(p.group_name == "Boots" for p in bulk) < 1500
    assert any(fold(p.name) != p.name.lower() for p in bulk)  # some accents
    assert len({p.name for p in bulk}) > 2000

    # Region B lists exactly the B pharmacies with a branch id, never the others.
    assert search(client, app, region="B")["total"] == b_listed < b_total
    assert (
        search(client, app, q="muller", per_page=50)["total"]
        == search(client, app, q="Müller", per_page=50)["total"]
        > 0
    )
    assert names(search(client, app, q="W1U 5HS"))[0] == "Marylebone Pharmacy"


def test_postgres_fold_matches_python_fold(seeded: Database) -> None:
    if not seeded.is_postgres:
        pytest.skip(
            "erx_fold() in SQL exists on PostgreSQL (migration 0003); SQLite calls the Python fold"
        )
    samples = [
        "Crème Brûlée's  PHARMACY",
        "St George’s Terrace",
        "LS6 2AL",
        "Straße Øresund Æsop Łódź",
        "Ó Súilleabháin & Llŷr",
        "Zoë-Chloé (Brontë)",
        "  --  ",
        "Ünïcödé 123",
    ]
    with seeded.engine.connect() as conn:
        for sample in samples:
            assert conn.execute(text("SELECT erx_fold(:v)"), {"v": sample}).scalar() == fold(
                sample
            ), sample


def test_postgres_search_uses_the_trigram_index(app, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    if not seeded.is_postgres:
        pytest.skip("pg_trgm is PostgreSQL's")
    execute_sql_script(seeded.engine, bulk_pharmacies_sql(12000))
    # VACUUM moves the bulk insert out of the GIN pending list (autovacuum would, later);
    # until then the planner rightly prefers a sequential scan.
    with seeded.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE pharmacies"))
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                text("EXPLAIN SELECT id FROM pharmacies WHERE search_text LIKE '%headingley%'")
            )
        )
    assert "ix_pharmacies_search_text_trgm" in plan

"""PostgreSQL: appenders never wait on one another, and the sealer never seals past an open one."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text

from app.audit import record
from app.audit_keys import parse_private_keys
from app.audit_sealer import seal_once, verify
from app.db import Database
from app.models import AuditEvent, AuditLeaf

T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
KEYS = parse_private_keys(
    ("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",), origin="erx.test/audit"
)


def _append(db: Database, actor: str, n: int = 1) -> list[int]:
    with db.session() as session:
        return [
            record(
                session,
                actor=actor,
                role="service",
                action="read",
                prescription_id=i,
                request_id=None,
                client_addr=None,
                now=T0,
            )
            for i in range(n)
        ]


def _seal(db: Database) -> int:
    return seal_once(db, KEYS, origin="erx.test/audit", now=lambda: T0).sealed


def _sealed_ids(db: Database) -> list[int]:
    with db.session() as session:
        return list(session.scalars(select(AuditLeaf.event_id).order_by(AuditLeaf.seq)))


@pytest.fixture
def pg(seeded: Database) -> Database:
    if not seeded.is_postgres:
        pytest.skip("transaction ids and concurrent writers: PostgreSQL")
    return seeded


def test_the_sealer_never_seals_past_an_open_transaction(pg: Database) -> None:
    before = _append(pg, "before", 2)
    with pg.session() as held:  # appends first (lower id), commits last
        [late] = [
            record(
                held,
                actor="held",
                role="service",
                action="read",
                prescription_id=1,
                request_id=None,
                client_addr=None,
                now=T0,
            )
        ]
        after = _append(pg, "after", 3)
        assert late < after[0]
        assert _seal(pg) == 5  # everything committed, but not the open transaction's row
        assert _sealed_ids(pg) == before + after
        assert _seal(pg) == 0
    # Committed now: the next seal includes it, after the rows sealed before it.
    assert _seal(pg) == 1
    assert _sealed_ids(pg) == before + after + [late]
    with pg.session() as session:
        total = session.scalar(select(func.count()).select_from(AuditEvent))
    assert total == len(_sealed_ids(pg)) == 6
    assert verify(pg, KEYS, full=True, max_unsealed_age_s=1e9).ok


def test_a_rolled_back_append_leaves_no_gap_in_the_seal(pg: Database) -> None:
    _append(pg, "a", 1)
    with pytest.raises(RuntimeError), pg.session() as session:
        record(
            session,
            actor="gone",
            role="service",
            action="read",
            prescription_id=1,
            request_id=None,
            client_addr=None,
            now=T0,
        )
        raise RuntimeError("caller failed")
    _append(pg, "b", 1)
    assert _seal(pg) == 2 and verify(pg, KEYS, full=True, max_unsealed_age_s=1e9).ok


def _appender(url: str, name: str, n: int, done: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    db = Database(url)
    started = time.monotonic()
    for _ in range(n):
        _append(db, name)
    done.put((name, time.monotonic() - started))
    db.dispose()


def test_concurrent_appenders_in_several_processes_never_wait(pg: Database, db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    done: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    waits: list[int] = []
    with pg.session() as held:  # one appender holds its transaction open throughout
        record(
            held,
            actor="held",
            role="service",
            action="read",
            prescription_id=1,
            request_id=None,
            client_addr=None,
            now=T0,
        )
        procs = [ctx.Process(target=_appender, args=(db_url, f"p{i}", 40, done)) for i in range(4)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + 120
        with pg.engine.connect() as watch:
            while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
                waits.append(
                    watch.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock'"
                        )
                    ).scalar_one()
                )
                time.sleep(0.02)
        for p in procs:
            p.join(timeout=5)
        finished = sorted(done.get(timeout=5)[0] for _ in procs)
        assert finished == [
            "p0",
            "p1",
            "p2",
            "p3",
        ]  # all four finished while one transaction stayed open
        assert all(p.exitcode == 0 for p in procs)
    assert waits and max(waits) == 0  # no session ever waited on a lock
    assert _seal(pg) == 161
    assert verify(pg, KEYS, full=True, max_unsealed_age_s=1e9).ok

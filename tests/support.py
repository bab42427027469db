"""Shared test support: finding seeded PHI in log output, and audit-table housekeeping.

``seeded_phi`` reads the seeded patients (scripts/seed/001_reference.sql) through
the database; ``find_phi`` / ``scan_log_files`` look for any of those values in
log text, so every test that captures logs (one request here, the whole
multi-process flow later) asserts the same thing the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, select, text

from app.db import Database
from app.models import Patient


@dataclass(frozen=True)
class PhiValue:
    """One PHI value to look for: which patient (``external_ref``), which field, the text."""

    patient: str
    field: str
    value: str


@dataclass(frozen=True)
class PhiFinding:
    """PHI found in a log: where (file or label, 1-based line) and which value."""

    source: str
    line: int
    phi: PhiValue

    def __str__(self) -> str:
        # Names the field and patient, never the value: the report itself must not leak.
        return f"{self.source}:{self.line}: {self.phi.field} of patient {self.phi.patient}"


def seeded_phi(db: Database) -> list[PhiValue]:
    """Every seeded patient's names, DOB (ISO and dd/mm/yyyy), address lines, post code, phone, email.

    Phones are also listed digits-only, as a log could print them unformatted.
    """
    values: list[PhiValue] = []
    with db.session() as session:
        for p in session.scalars(select(Patient).order_by(Patient.id)):
            fields = {
                "first_name": p.first_name,
                "last_name": p.last_name,
                "full_name": f"{p.first_name} {p.last_name}",
                "date_of_birth": p.date_of_birth.isoformat(),
                "date_of_birth_uk": p.date_of_birth.strftime("%d/%m/%Y"),
                "address_line1": p.address_line1,
                "address_line2": p.address_line2 or "",
                "post_code": p.post_code,
                "phone": p.phone or "",
                "phone_digits": re.sub(r"\D", "", p.phone or ""),
                "email": p.email or "",
            }
            values += [PhiValue(p.external_ref, name, value) for name, value in fields.items() if value]
    return values


def _pattern(phi: PhiValue) -> re.Pattern[str]:
    # Names and address words are matched as whole words, case-sensitively, so that
    # "Grace" the patient is found but "grace period" is not; the rest exactly.
    escaped = re.escape(phi.value)
    if phi.field in {"first_name", "last_name", "full_name", "address_line1", "address_line2"}:
        return re.compile(rf"(?<![\w]){escaped}(?![\w])")
    if phi.field == "phone_digits":
        return re.compile(rf"(?<!\d){escaped}(?!\d)")
    return re.compile(escaped, re.IGNORECASE)


def find_phi(lines: Iterable[str], phi: Iterable[PhiValue], *, source: str = "log") -> list[PhiFinding]:
    """Return every occurrence of a ``phi`` value in ``lines`` (one finding per line and value)."""
    patterns = [(value, _pattern(value)) for value in phi]
    found: list[PhiFinding] = []
    for number, line in enumerate(lines, start=1):
        for value, pattern in patterns:
            if pattern.search(line):
                found.append(PhiFinding(source, number, value))
    return found


def scan_log_files(paths: Iterable[Path | str], phi: Iterable[PhiValue]) -> list[PhiFinding]:
    """Scan each log file (any process's stdout/stderr capture) for ``phi``; [] means clean."""
    values = list(phi)
    found: list[PhiFinding] = []
    for path in paths:
        text_ = Path(path).read_text(encoding="utf-8", errors="replace")
        found += find_phi(text_.splitlines(), values, source=str(path))
    return found


@contextmanager
def audit_triggers_suspended(conn: Connection) -> Iterator[None]:
    """Let a test empty ``audit_events`` despite its append-only triggers, inside ``conn``'s transaction.

    PostgreSQL: ``SET LOCAL session_replication_role = replica`` (superuser, as the
    tests connect) skips user triggers until the transaction ends. SQLite has no
    switch: the triggers are dropped and recreated from their stored SQL.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        yield
        conn.execute(text("SET LOCAL session_replication_role = DEFAULT"))
        return
    triggers = conn.execute(
        text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'")
    ).all()
    for name, _sql in triggers:
        conn.execute(text(f'DROP TRIGGER "{name}"'))
    yield
    for _name, sql in triggers:
        conn.execute(text(sql))

"""Test support in one place: the fake clock, the fake platform, PHI-in-logs scanning, audit housekeeping.

Fixtures (``app``, ``client``, ``runner``, the seeded database) are in
``tests/conftest.py``; the process stack (sandbox, service, workers as real
processes) is ``scripts.stack``, shared with the demo and the benchmarks.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses
from sqlalchemy import Connection, select, text

from app.foundation.db import Database
from app.foundation.models import Patient, Prescription
from app.mechanisms.history import Change, Transition
from app.mechanisms.queue import claim_batch

PRESCRIBER_SECRETS = {
    "dr.jones@example.test": ("sandbox-jones-pass", "481516"),
    "dr.patel@example.test": ("sandbox-patel-pass", "234223"),
}


class FakeClock:
    """One fake time behind every clock the code takes, moving only when a test says so.

    - ``clock()`` / ``clock.now``: aware UTC datetime (the ``now=`` parameters);
    - ``clock.unix_time()``: the same instant as Unix seconds (``Runtime.unix_time``);
    - ``clock.monotonic()``: seconds since the clock was made, plus 1000
      (the connector's ``monotonic=``).
    """

    MONOTONIC_START = 1000.0

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)
        self._origin = self.now

    def __call__(self) -> datetime:
        return self.now

    def unix_time(self) -> float:
        return self.now.timestamp()

    def monotonic(self) -> float:
        return self.MONOTONIC_START + (self.now - self._origin).total_seconds()

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def advance_to(self, when: datetime) -> None:
        """Move to ``when``; never backwards."""
        self.now = max(self.now, when)

    def set_unix(self, seconds: float) -> None:
        """Jump to Unix time ``seconds`` (either direction: signature tolerance tests need both)."""
        self.now = datetime.fromtimestamp(seconds, UTC)

    def set_monotonic(self, seconds: float) -> None:
        """Jump to monotonic reading ``seconds``."""
        self.now = self._origin + timedelta(seconds=seconds - self.MONOTONIC_START)


BASE = "http://platform.test"
CLIENT_ID = "erx-test-client"
CLIENT_SECRET = "cs-platform-client-secret-7731"
RX_URL = f"{BASE}/prescriptions"
INVALID_DATA = {
    "success": False,
    "message": "The given data was invalid.",
    "errors": {"medicines.0.qty": ["The qty field is required."]},
}
UNAUTHORIZED_CLINIC = {
    "success": False,
    "message": "You trying to issue prescription to unauthorized clinic.",
}

Answer = tuple[int, dict[str, str], Any] | Exception


@dataclass
class FakePlatform:
    """The one fake platform (contract §1 auth, §3 clinics, §4 issue and lookup, §5 read) on ``responses``.

    :meth:`install` registers the two-step auth endpoints (OAuth token, then
    prescriber login), and, unless ``auth_only``, the prescription and clinic
    endpoints. Every access and session token it hands out is new
    (``issued_access``, ``issued_sessions``), so tests can expire one.

    Options: ``passwords`` (email -> password; None accepts any password not
    in ``bad_passwords``), ``client_secret`` (None accepts any), token and
    session lifetimes, ``token_status`` (answer the token call with it),
    ``token_gate`` (the token call waits for it). POST answers are scripted
    with ``post_script``, else a success with token ``SRXTOKEN<n>``.
    """

    rsps: responses.RequestsMock
    base: str = BASE
    passwords: dict[str, str] | None = None
    client_secret: str | None = None
    token_expires_in: object = 3600
    session_expires_in: object = 1800
    token_status: int = 200
    bad_passwords: set[str] = field(default_factory=set)
    token_gate: threading.Event | None = None
    token_calls: int = 0
    logins: dict[str, int] = field(default_factory=dict)
    issued_access: list[str] = field(default_factory=list)
    issued_sessions: dict[str, str] = field(default_factory=dict)  # session token -> email
    expired_access: set[str] = field(default_factory=set)
    post_script: list[Answer] = field(default_factory=list)
    found: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    posts: list[dict[str, Any]] = field(default_factory=list)
    post_headers: list[dict[str, str]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)
    on_post: Callable[[], None] | None = None
    clinics: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"id": 994, "display_id": "201334", "name": "Harley Street Clinic"}
        ]
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: itertools.count = field(default_factory=itertools.count)
    _issued: int = 0

    def install(self, *, auth_only: bool = False) -> FakePlatform:
        """Register the endpoints on ``rsps``; returns self."""
        self.rsps.add_callback(responses.POST, f"{self.base}/oauth/token", callback=self._token)
        self.rsps.add_callback(
            responses.POST, f"{self.base}/prescriber/login", callback=self._login
        )
        if not auth_only:
            rx_url = f"{self.base}/prescriptions"
            self.rsps.add_callback(responses.POST, rx_url, callback=self._issue)
            self.rsps.add_callback(responses.GET, rx_url, callback=self._lookup)
            self.rsps.add_callback(
                responses.GET, re.compile(re.escape(rx_url) + r"/[^/?]+$"), callback=self._read
            )
            self.rsps.add_callback(responses.GET, f"{self.base}/clinics", callback=self._clinics)
        return self

    # -- §1 two-step auth ---------------------------------------------------------------

    @staticmethod
    def _json(
        status: int, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body)

    def _token(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        if self.token_gate is not None:
            self.token_gate.wait(timeout=5)
        with self._lock:
            self.token_calls += 1
            if self.token_status != 200:
                return self._json(self.token_status, {"error": "invalid_client"})
            form = parse_qs(str(request.body))
            if self.client_secret is not None and form.get("client_secret") != [self.client_secret]:
                return self._json(401, {"error": "invalid_client", "error_description": "bad"})
            token = f"at-{next(self._seq)}"
            self.issued_access.append(token)
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "scope": "prescriptions",
        }
        if self.token_expires_in is not None:
            body["expires_in"] = self.token_expires_in
        return self._json(200, body)

    def _access_ok(self, request: requests.PreparedRequest) -> bool:
        auth = request.headers.get("Authorization", "")
        return (
            auth.startswith("Bearer ")
            and auth[7:] in self.issued_access
            and auth[7:] not in self.expired_access
        )

    def _login(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        creds = json.loads(request.body or b"{}")
        email, password = creds.get("email"), creds.get("password")
        with self._lock:
            if not self._access_ok(request):
                return self._json(401, {"success": False, "code": "access_token_expired"})
            self.logins[email] = self.logins.get(email, 0) + 1
            refused = password in self.bad_passwords or (
                self.passwords is not None and self.passwords.get(email) != password
            )
            if refused:
                return self._json(200, {"success": False, "message": "Invalid credentials"})
            token = f"st-{str(email).split('@')[0]}-{next(self._seq)}"
            self.issued_sessions[token] = email
        data: dict[str, Any] = {
            "session_token": token,
            "prescriber": {"id": 5531, "clinic_ids": [994]},
        }
        if self.session_expires_in is not None:
            data["expires_in"] = self.session_expires_in
        return self._json(200, {"success": True, "data": data})

    def login_count(self, prescriber: Any) -> int:
        """How many logins ``prescriber`` (anything with ``.email``) made."""
        return self.logins.get(prescriber.email, 0)

    def _authorised(self, request: requests.PreparedRequest) -> bool:
        return (
            self._access_ok(request)
            and request.headers.get("X-Session-Token") in self.issued_sessions
        )

    # -- §3 clinics, §4 issue and lookup, §5 read ------------------------------------------

    def _issue(self, request: requests.PreparedRequest) -> Any:
        if not self._authorised(request):
            return self._json(401, {"success": False, "code": "access_token_expired"})
        payload = json.loads(request.body or b"{}")
        self.posts.append(payload)
        self.post_headers.append(dict(request.headers))
        if self.on_post is not None:
            self.on_post()
        if self.post_script:
            answer = self.post_script.pop(0)
            if isinstance(answer, Exception):
                return answer
            status, headers, body = answer
            return self._json(status, body, headers)
        with self._lock:  # the dispatch worker may send from several threads
            self._issued += 1
            token = f"SRXTOKEN{self._issued:06d}"
        return self._json(200, success_issue_body(token, payload.get("client_ref_id")))

    def _lookup(self, request: requests.PreparedRequest) -> Any:
        if not self._authorised(request):
            return self._json(401, {"success": False, "code": "access_token_expired"})
        ref = parse_qs(urlsplit(str(request.url)).query).get("client_ref_id", [""])[0]
        self.lookups.append(ref)
        return self._json(
            200, {"success": True, "data": {"prescriptions": self.found.get(ref, [])}}
        )

    def _read(self, request: requests.PreparedRequest) -> Any:
        if not self._authorised(request):
            return self._json(401, {"success": False, "code": "access_token_expired"})
        token = urlsplit(str(request.url)).path.rsplit("/", 1)[-1]
        for items in self.found.values():
            for item in items:
                if item["id"] == token:
                    return self._json(200, {"success": True, "data": {"prescription": item}})
        return self._json(
            200, {"success": False, "code": "not_found", "message": "Prescription not found."}
        )

    def _clinics(self, request: requests.PreparedRequest) -> Any:
        if not self._authorised(request):
            return self._json(401, {"success": False, "code": "access_token_expired"})
        return self._json(200, {"success": True, "data": {"clinics": self.clinics}})

    def holds(self, ref: str, token: str) -> None:
        """The platform has a prescription for ``ref`` (e.g. committed before a lost reply)."""
        self.found.setdefault(ref, []).append(
            {
                "id": token,
                "status": "issued",
                "client_ref_id": ref,
                "created_at": "2026-11-20T10:15:02Z",
            }
        )


def service_platform(rsps: responses.RequestsMock) -> FakePlatform:
    """The fake platform as the service's tests meet it: every endpoint, real passwords and client secret."""
    passwords = {email: password for email, (password, _pin) in PRESCRIBER_SECRETS.items()}
    return FakePlatform(rsps, passwords=passwords, client_secret=CLIENT_SECRET).install()


def success_issue_body(
    token: str = "SRXC49F3D4F66A7", ref: str | None = "rx-000042"
) -> dict[str, Any]:
    """The §4 issue success body for ``token`` and ``ref``."""
    return {
        "success": True,
        "message": "Prescription issued",
        "data": {
            "prescription": {
                "id": token,
                "status": "issued",
                "client_ref_id": ref,
                "created_at": "2026-11-20T10:15:02Z",
            }
        },
    }


# -- PHI in log output, audit-table housekeeping ------------------------------------


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
            values += [
                PhiValue(p.external_ref, name, value) for name, value in fields.items() if value
            ]
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


def find_phi(
    lines: Iterable[str], phi: Iterable[PhiValue], *, source: str = "log"
) -> list[PhiFinding]:
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
        text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'"
        )
    ).all()
    for name, _sql in triggers:
        conn.execute(text(f'DROP TRIGGER "{name}"'))
    yield
    for _name, sql in triggers:
        conn.execute(text(sql))


def claimed_ids(db: Database, model: Any, **options: Any) -> list[int]:
    """The ids of the rows :func:`app.mechanisms.queue.claim_batch` leases (same options), oldest due first."""
    return [row.id for row in claim_batch(db, model, **options)]


def transition_of(rx: Prescription, **transition: Any) -> Change:
    """A :class:`app.mechanisms.history.Change` moving ``rx`` as ``transition`` says.

    ``transition``: the keyword arguments of :class:`app.mechanisms.history.Transition`
    (``to_status``, ``from_status``, ``occurred_at`` aware UTC, ``source``, ``event_id``,
    ``received_at``...), as the platform's webhook or a test states them.
    """
    return Change(rx, Transition(**transition))


def run_repo_command(
    argv: list[str], env: dict[str, str], *, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` from the repository's root as a real process (``argv[0]`` a program of the
    project's virtualenv, e.g. ``flask``, or a path); stdout and stderr captured as text.

    ``env``: the whole environment (e.g. from ``scripts.stack.base_env``). Never raises for a
    non-zero exit (the caller asserts on ``returncode``); ``subprocess.TimeoutExpired`` after
    ``timeout_s`` seconds.
    """
    from scripts.stack import BIN, REPO_ROOT

    program = argv[0] if "/" in argv[0] else str(BIN / argv[0])
    return subprocess.run(
        [program, *argv[1:]],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )

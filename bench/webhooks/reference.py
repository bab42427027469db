"""The reference webhook receiver: HMAC verify + one INSERT + commit, nothing else.

The yardstick for ``POST /webhooks/platform``: the least work that still
honours contract §7 (verify the raw bytes, store, then answer 2xx). It writes
the same row as the service into a table shaped like ``webhook_inbox``
(``bench_reference_inbox``: same columns, unique event id, same indexes), with
SQLAlchemy Core on a plain engine, no ORM session, no logging. Served by
gunicorn with the service's own ``gunicorn.conf.py``::

    DATABASE_URL=... gunicorn -c gunicorn.conf.py bench.webhooks.reference:app
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from datetime import UTC, datetime

from flask import Flask, Response, jsonify, request
from sqlalchemy import Engine, create_engine, text

TABLE = "bench_reference_inbox"
_INSERT = text(
    f"INSERT INTO {TABLE} (event_id, event_type, platform_token, body, signature, state, attempts,"
    " next_attempt_at, received_at)"
    " VALUES (:event_id, :event_type, :token, :body, :signature, 'pending', 0, :now, :now)"
    " ON CONFLICT DO NOTHING"
)


def create_table(engine: Engine) -> None:
    """(Re)create ``bench_reference_inbox`` with the inbox's columns and indexes."""
    sqlite = engine.dialect.name == "sqlite"
    pk = "INTEGER PRIMARY KEY AUTOINCREMENT" if sqlite else "BIGSERIAL PRIMARY KEY"
    ts = "DATETIME" if sqlite else "TIMESTAMP WITH TIME ZONE"
    blob = "BLOB" if sqlite else "BYTEA"
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
        conn.execute(
            text(
                f"CREATE TABLE {TABLE} (id {pk}, event_id VARCHAR(100) NOT NULL UNIQUE,"
                f" event_type VARCHAR(100), platform_token VARCHAR(64), body {blob} NOT NULL, signature TEXT,"
                " state VARCHAR(16) NOT NULL CHECK (state IN ('pending', 'processed', 'ignored', 'dead')),"
                f" attempts INTEGER NOT NULL, next_attempt_at {ts} NOT NULL, locked_until {ts},"
                f" locked_by VARCHAR(100), last_error TEXT, received_at {ts} NOT NULL, processed_at {ts})"
            )
        )
        conn.execute(text(f"CREATE INDEX ix_{TABLE}_due ON {TABLE} (state, next_attempt_at)"))
        conn.execute(text(f"CREATE INDEX ix_{TABLE}_token ON {TABLE} (platform_token)"))


def make_engine(url: str) -> Engine:
    """A plain engine; SQLite gets only what concurrent writers need (WAL, busy timeout)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 10, "check_same_thread": False})
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        return engine
    return create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))


def _verify(raw: bytes, header: str, secrets: list[bytes], tolerance_s: int) -> bool:
    timestamp, candidates = None, []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(time.time() - timestamp) > tolerance_s:
        return False
    matched = False
    for secret in secrets:
        expected = hmac.new(secret, f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    return matched


def create_app() -> Flask:
    app = Flask(__name__)
    engine = make_engine(os.environ["DATABASE_URL"])
    secrets = [
        s.strip().encode()
        for s in os.environ.get("WEBHOOK_SECRETS", "whsec_sandbox_test_secret").split(",")
    ]
    tolerance_s = int(os.environ.get("WEBHOOK_TOLERANCE_S", "300"))

    @app.post("/webhooks/platform")
    def receive() -> tuple[Response, int]:
        raw = request.get_data(cache=False)
        signature = request.headers.get("X-Signature", "")
        if not _verify(raw, signature, secrets, tolerance_s):
            return jsonify({"code": "invalid_signature"}), 401
        event = json.loads(raw)
        prescription = (event.get("data") or {}).get("prescription") or {}
        with engine.begin() as conn:
            conn.execute(
                _INSERT,
                {
                    "event_id": event["id"],
                    "event_type": event.get("type"),
                    "token": prescription.get("id"),
                    "body": raw,
                    "signature": signature,
                    "now": datetime.now(UTC),
                },
            )
        return jsonify({"received": True, "event_id": event["id"]}), 200

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify({"status": "ok"}), 200

    return app


app = create_app() if "DATABASE_URL" in os.environ else None

"""SQL statements the inbox worker runs per applied webhook event.

Usage::

    python -m bench.webhooks.statements [--events 50] [--batch 50]

Builds a throw-away SQLite database (migrations + seed), stores ``--events``
signed status events through the real receiver for distinct issued
prescriptions, then counts every statement the engine sends to the database
(``before_cursor_execute``; an executemany counts once per round trip) while
:class:`webhooks.processing.InboxProcessor` applies them in batches of
``--batch``. Prints one JSON line. Statement counts do not depend on the
machine, so one run suffices; PostgreSQL runs the same statements (plus ``FOR
UPDATE`` clauses).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec_statements_bench"


def main(argv: list[str] | None = None) -> int:
    """Run the count; returns a process exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=50)
    p.add_argument("--batch", type=int, default=50)
    args = p.parse_args(argv)

    from app import create_app
    from app.foundation.config import Settings
    from app.services.seeding import run_seed_scripts
    from webhooks.processing import InboxProcessor
    from webhooks.signature import sign

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/statements.sqlite3"
        os.environ["DATABASE_URL"] = url
        command.upgrade(Config(str(REPO / "alembic.ini")), "head")
        app = create_app(Settings(env="test", database_url=url, webhook_secrets=(SECRET,)))
        db = app.extensions["erx"].db
        run_seed_scripts(db.engine)
        with db.engine.begin() as conn:
            conn.execute(
                text("UPDATE prescriptions SET status = 'issued', platform_token = 'SRXS' || id")
            )
            tokens = [
                r[0]
                for r in conn.execute(text("SELECT platform_token FROM prescriptions ORDER BY id"))
            ]
        client = app.test_client()
        now = int(time.time())
        app.extensions["erx"].unix_time = lambda: float(now)
        for i in range(args.events):
            token = tokens[i % len(tokens)]
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
            body = json.dumps(
                {
                    "id": f"evt_stmt_{i:06d}",
                    "type": "prescription.status_updated",
                    "created": stamp,
                    "data": {
                        "prescription": {
                            "id": token,
                            "status": "signed",
                            "previous_status": "issued",
                            "occurred_at": stamp,
                        }
                    },
                }
            ).encode()
            status = client.post(
                "/webhooks/platform",
                data=body,
                content_type="application/json",
                headers={"X-Signature": sign(body, [SECRET], timestamp=now)},
            ).status_code
            if status != 200:
                print(f"the receiver answered {status}", file=sys.stderr)
                return 1
        count = 0

        def _count(*_args: object) -> None:
            nonlocal count
            count += 1

        event.listen(db.engine, "before_cursor_execute", _count)
        processor = InboxProcessor(db, worker_id="bench-statements", batch=args.batch)
        applied = 0
        while handled := processor.run_batch():
            applied += handled
        event.remove(db.engine, "before_cursor_execute", _count)
        with db.engine.connect() as conn:
            history = conn.execute(
                text("SELECT count(*) FROM prescription_status_history WHERE source='webhook'")
            )
            rows = int(history.scalar() or 0)
        print(
            json.dumps(
                {
                    "events": args.events,
                    "batch": args.batch,
                    "applied": applied,
                    "history_rows": rows,
                    "statements": count,
                    "statements_per_event": round(count / max(applied, 1), 2),
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The synchronous receiver: the reference for receipt -> history ("Measure").

The service's own app, whose ``POST /webhooks/platform`` does what an
integration without an inbox worker does (the seed integration's way): it
verifies and stores the event with the service's receiver (webhooks/routes.py,
unchanged: the inbox row is committed), then applies that event before
answering, with the inbox worker's own code (``webhooks.processing.InboxProcessor``:
prescription lock, history row through ``app.mechanisms.history``, forward-only status,
event-outbox row, audit), in a second short transaction. Its request latency
is the time a webhook takes to reach the history when nothing is queued.
No logic is copied: the receiver and the processor are the project's.

Served by gunicorn with the service's own ``gunicorn.conf.py``::

    DATABASE_URL=... WORKER_WAKEUP=poll gunicorn -c gunicorn.conf.py bench.webhooks.sync_receiver:app

(``WORKER_WAKEUP=poll``: nobody listens, so the receiver's INSERT carries no NOTIFY.)
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from app import create_app
from webhooks.processing import InboxProcessor
from webhooks.routes import receiver_of


def make_synchronous(app: Flask) -> Flask:
    """Wrap ``app``'s webhook receiver: store (the real receiver), then apply before answering; returns ``app``."""
    processor = InboxProcessor(app.extensions["erx"].db, worker_id=f"sync-receiver-{os.getpid()}")
    receiver = receiver_of(app)
    receive = receiver.view_functions["webhooks.receive"]

    def receive_and_apply(*args: Any, **kwargs: Any) -> Any:
        response = receive(*args, **kwargs)  # refusals raise ApiError, answered by the app as usual
        ack = response.get_json()
        if (
            response.status_code == 200 and ack.get("duplicate") is False
        ):  # newly stored: apply it now
            processor.apply_pending(ack["event_id"])
        return response

    receiver.view_functions["webhooks.receive"] = receive_and_apply
    return app


def create_sync_app() -> Flask:
    """The service app (settings from the environment) with a synchronous receiver."""
    return make_synchronous(create_app())


app = create_sync_app() if "DATABASE_URL" in os.environ else None

"""The per-app runtime (settings, database, clock, listeners), reachable from handlers and CLI commands.

Not a Flask extension and not a use case: :class:`Runtime` is what ``create_app``
wires once; :func:`runtime` returns it for the current app.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app

from app.foundation.config import Settings
from app.foundation.db import Database

if TYPE_CHECKING:
    from app.mechanisms.wakeup import WakeupCoalescer

WebhookListener = Callable[[str, str | None, float], None]
"""Told of each webhook delivery the receiver decided: ``(kind, reason, unix_time)``.

``kind`` is ``received``, ``duplicate`` or ``rejected``; ``reason`` the refusal's
reason (None otherwise); ``unix_time`` the receiver's clock (Unix seconds, UTC).
"""


@dataclass
class Runtime:
    """What ``create_app`` wires once: settings, database, and an injectable time source.

    ``unix_time`` returns Unix seconds (a float, UTC); tests replace it to
    check the webhook timestamp tolerance without sleeping.
    ``webhook_listeners`` are called in order by the webhook receiver, once per
    delivery it decided (app/mechanisms/metrics.py registers the counters), so the
    receiver imports no metrics and no per-request hook is needed.
    ``inbox_wakeups`` wakes the inbox workers after receipts (PostgreSQL in
    ``notify`` mode; None otherwise), see :class:`app.mechanisms.wakeup.WakeupCoalescer`.
    """

    settings: Settings
    db: Database
    unix_time: Callable[[], float] = field(default=time.time)
    webhook_listeners: list[WebhookListener] = field(default_factory=list)
    inbox_wakeups: WakeupCoalescer | None = None


def runtime() -> Runtime:
    """Return the :class:`Runtime` of the current Flask app (needs an app context)."""
    return current_app.extensions["erx"]

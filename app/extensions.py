"""The per-app service container, reachable from request handlers and CLI commands."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app

from app.config import Settings
from app.db import Database

if TYPE_CHECKING:
    from app.queue_wakeup import NotifyCoalescer

WebhookListener = Callable[[str, str | None, float], None]
"""Told of each webhook delivery the receiver decided: ``(kind, reason, unix_time)``.

``kind`` is ``received``, ``duplicate`` or ``rejected``; ``reason`` the refusal's
reason (None otherwise); ``unix_time`` the receiver's clock (Unix seconds, UTC).
"""


@dataclass
class Services:
    """What ``create_app`` wires once: settings, database, and an injectable time source.

    ``unix_time`` returns Unix seconds (a float, UTC); tests replace it to
    check the webhook timestamp tolerance without sleeping.
    ``webhook_listeners`` are called in order by the webhook receiver, once per
    delivery it decided (app/metrics.py registers the counters), so the
    receiver imports no metrics and no per-request hook is needed.
    ``inbox_notifier`` wakes the inbox workers after receipts (PostgreSQL in
    ``notify`` mode; None otherwise), see :class:`app.queue_wakeup.NotifyCoalescer`.
    """

    settings: Settings
    db: Database
    unix_time: Callable[[], float] = field(default=time.time)
    webhook_listeners: list[WebhookListener] = field(default_factory=list)
    inbox_notifier: NotifyCoalescer | None = None


def services() -> Services:
    """Return the :class:`Services` of the current Flask app (needs an app context)."""
    return current_app.extensions["erx"]

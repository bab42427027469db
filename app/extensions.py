"""The per-app service container, reachable from request handlers and CLI commands."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import current_app

from app.config import Settings
from app.db import Database


@dataclass
class Services:
    """What ``create_app`` wires once: settings, database, and an injectable time source.

    ``unix_time`` returns Unix seconds (a float, UTC); tests replace it to
    check the webhook timestamp tolerance without sleeping.
    """

    settings: Settings
    db: Database
    unix_time: Callable[[], float] = field(default=time.time)


def services() -> Services:
    """Return the :class:`Services` of the current Flask app (needs an app context)."""
    return current_app.extensions["erx"]

"""The sandbox's Flask application factory and the state it wires together."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, jsonify
from werkzeug.exceptions import HTTPException

from sandbox.autopilot import Autopilot
from sandbox.clock import Clock, Sleep
from sandbox.config import SandboxConfig
from sandbox.control import Controls
from sandbox.faults import FaultInjector
from sandbox.stats import Stats
from sandbox.store import Store
from sandbox.webhooks import (
    Jitter,
    WebhookDispatcher,
    WebhookEmitter,
    WebhookSender,
    equal_jitter,
    requests_sender,
)

log = logging.getLogger(__name__)

EXTENSION_KEY = "sandbox"


@dataclass(frozen=True)
class SandboxState:
    """Every component of one sandbox; reach it with ``get_state(app)``.

    ``clock`` returns Unix seconds; ``sleep`` blocks for seconds (both
    injectable so tests never really wait).
    """

    config: SandboxConfig
    controls: Controls
    store: Store
    stats: Stats
    faults: FaultInjector
    dispatcher: WebhookDispatcher
    emitter: WebhookEmitter
    autopilot: Autopilot
    clock: Clock
    sleep: Sleep
    rng: random.Random

    def stats_json(self) -> dict[str, Any]:
        """The body of ``GET /sandbox/stats``."""
        body = self.stats.snapshot()
        body["webhooks"] = self.dispatcher.stats()
        return body

    def reset(self) -> None:
        """Clear prescriptions, sessions, tokens, stats and the webhook queue (not controls)."""
        self.store.reset()
        self.stats.reset()
        self.dispatcher.reset()
        self.autopilot.reset()

    def start_background(self) -> None:
        """Start the webhook workers and the auto-mode thread."""
        self.dispatcher.start(self.config.webhook_workers)
        self.autopilot.start()

    def shutdown(self) -> None:
        """Stop the background threads (pending deliveries are abandoned)."""
        self.autopilot.stop()
        self.dispatcher.stop()


def _rng(seed: int | None, purpose: str) -> random.Random:
    # One generator per purpose, so that, for a given seed, fault decisions do
    # not shift when an unrelated feature draws more numbers.
    return random.Random(f"{seed}:{purpose}") if seed is not None else random.Random()


def create_app(
    config: SandboxConfig | None = None,
    *,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
    webhook_sender: WebhookSender | None = None,
    jitter: Jitter | None = None,
) -> Flask:
    """Build a sandbox Flask app.

    ``config`` defaults to ``SandboxConfig()``. ``clock`` (Unix seconds) and
    ``sleep`` (seconds) default to ``time.time`` / ``time.sleep``;
    ``webhook_sender(url, body, headers, timeout_s) -> status`` defaults to a
    ``requests`` POST; ``jitter(delay_s, rng) -> delay_s`` to equal jitter.
    Background threads start here when ``config.background`` is true; stop them
    with ``get_state(app).shutdown()``.
    """
    config = config or SandboxConfig()
    clock = clock or time.time
    sleep = sleep or time.sleep

    controls = Controls(config.controls)
    stats = Stats()
    store = Store(rng=_rng(config.seed, "ids"))
    dispatcher = WebhookDispatcher(
        controls=controls,
        clock=clock,
        rng=_rng(config.seed, "webhooks"),
        sender=webhook_sender or requests_sender,
        jitter=jitter or equal_jitter,
    )
    emitter = WebhookEmitter(
        controls=controls, dispatcher=dispatcher, clock=clock, rng=_rng(config.seed, "events")
    )
    store.add_listener(emitter)
    state = SandboxState(
        config=config,
        controls=controls,
        store=store,
        stats=stats,
        faults=FaultInjector(controls=controls, rng=_rng(config.seed, "faults"), stats=stats),
        dispatcher=dispatcher,
        emitter=emitter,
        autopilot=Autopilot(
            store=store, controls=controls, clock=clock, rng=_rng(config.seed, "auto")
        ),
        clock=clock,
        sleep=sleep,
        rng=_rng(config.seed, "storm"),
    )

    app = Flask(__name__, static_folder=None)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the contract's key order
    app.extensions[EXTENSION_KEY] = state

    from sandbox import auth_api, control_api, pharmacy_portal, platform_api

    app.register_blueprint(auth_api.blueprint)
    app.register_blueprint(platform_api.blueprint)
    app.register_blueprint(pharmacy_portal.blueprint)
    app.register_blueprint(control_api.blueprint)
    app.register_error_handler(HTTPException, _http_error)

    if config.background:
        state.start_background()
    return app


def _http_error(error: HTTPException) -> Any:
    response = jsonify({"success": False, "message": error.description or error.name})
    response.status_code = error.code or 500
    return response


def get_state(app: Flask | None = None) -> SandboxState:
    """The ``SandboxState`` of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    return target.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]

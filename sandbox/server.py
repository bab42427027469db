"""The sandbox's Flask application factory: builds the state and registers the blueprints."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from sandbox import auth_api, control_api, pharmacy_portal, platform_api
from sandbox.clock import Clock, Sleep
from sandbox.config import SandboxConfig
from sandbox.state import EXTENSION_KEY, build_state
from sandbox.webhooks import Jitter, WebhookSender, equal_jitter, requests_sender


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
    with ``sandbox.state.get_state(app).shutdown()``.
    """
    config = config or SandboxConfig()
    state = build_state(
        config,
        clock=clock or time.time,
        sleep=sleep or time.sleep,
        webhook_sender=webhook_sender or requests_sender,
        jitter=jitter or equal_jitter,
    )

    app = Flask(__name__, static_folder=None)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the contract's key order
    app.extensions[EXTENSION_KEY] = state

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

"""The erx-connector service: ``create_app`` wires settings, database, API, webhooks, CLI."""

from __future__ import annotations

from flask import Flask, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from werkzeug.middleware.proxy_fix import ProxyFix

from app.foundation.config import ConfigError, Settings, load_settings
from app.foundation.db import Database
from app.mechanisms.runtime import Runtime


def _settings_from_environment() -> Settings:
    """:func:`load_settings`, worded for whoever started the process.

    Under a ``flask`` command a bad setting is one line (``Error: configuration: ...``)
    and exit status 1, as click reports its own errors, not a traceback. Elsewhere
    (gunicorn, tests) :class:`ConfigError` propagates unchanged.
    """
    try:
        return load_settings()
    except ConfigError as exc:
        import click

        if click.get_current_context(silent=True) is None:
            raise
        raise click.ClickException(f"configuration: {exc}") from None


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> Flask:
    """Build the Flask app.

    ``settings``: a ready :class:`Settings` (tests); default parsed from the
    environment. ``db``: an existing :class:`Database` to share (tests).
    """
    from app.foundation import logs
    from app.interfaces import api, cli, directory_api, errors, fhir_api, pages
    from app.mechanisms import metrics
    from app.mechanisms import wakeup as queue_wakeup
    from webhooks import routes as webhook_routes

    settings = settings or _settings_from_environment()
    app = Flask(__name__)
    app.config["JSON_SORT_KEYS"] = False
    # No request body we accept is near this; the webhook receiver has its own, smaller cap.
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    database = db or Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        prepared_statements=settings.db_prepared_statements,
    )
    app.extensions["erx"] = Runtime(
        settings=settings,
        db=database,
        inbox_wakeups=queue_wakeup.receipt_wakeups(database.engine, settings.worker_wakeup),
    )
    # The platform's POSTs are served apart, inside the proxy and request-id middleware.
    webhook_routes.serve_apart(app)
    if settings.trusted_proxies:
        # X-Forwarded-For/-Proto/-Host from exactly this many hops are believed (audit client_addr).
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    logs.configure_logging(settings)
    logs.init_app(app)
    errors.init_app(app)
    api.init_app(app)
    fhir_api.init_app(app)
    webhook_routes.init_app(app)
    cli.init_app(app)
    directory_api.init_app(app)
    metrics.init_app(app)
    pages.init_app(app)
    from app.interfaces import openapi

    openapi.init_app(app)
    # The input boundary and the rate limits wrap every registered view, so they come last.
    from app.interfaces import rate_limits, text_input

    text_input.init_app(app)
    rate_limits.init_app(app, settings)

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify({"status": "ok"}), 200

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        # Not ready while the database is unreachable (503, the one error shape). A pooled
        # connection that died is discarded when it fails, so a later probe reconnects.
        try:
            with app.extensions["erx"].db.session() as session:
                session.execute(text("SELECT 1"))
        except DBAPIError:
            return errors.error_response(
                503, "database_unavailable", "The service cannot reach its database; retry later."
            )
        return jsonify({"status": "ready"}), 200

    return app

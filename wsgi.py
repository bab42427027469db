"""WSGI entry point: ``gunicorn wsgi:app`` (settings from the environment)."""

import gc

from app import create_app

app = create_app()
# What start-up built (modules, the app, the ORM's mappers) lives as long as the process:
# moved to the permanent generation, no garbage collection scans it again.
gc.freeze()

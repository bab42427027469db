"""WSGI entry point: ``gunicorn wsgi:app`` (settings from the environment; in development
also from ``.env``, see app/foundation/dotenv_loading.py)."""

import gc

from app import create_app
from app.foundation.dotenv_loading import load_development_dotenv

load_development_dotenv()
app = create_app()
# What start-up built (modules, the app, the ORM's mappers) lives as long as the process:
# moved to the permanent generation, no garbage collection scans it again.
gc.freeze()

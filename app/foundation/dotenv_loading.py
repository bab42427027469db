"""A development ``.env`` for processes Flask's CLI does not start (gunicorn's ``wsgi.py``).

``flask --app app ...`` loads ``.env`` by itself (python-dotenv installed,
unless ``FLASK_SKIP_DOTENV=1``). Gunicorn does not, so ``wsgi.py`` calls
:func:`load_development_dotenv`. Values already in the environment win, and
nothing is read when the environment says ``ERX_ENV=production``: production
settings come from the deployment's secret store (docs/production.env.example),
never a file in the image.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from dotenv import dotenv_values


def load_development_dotenv(
    path: str | Path = ".env", *, environ: MutableMapping[str, str] | None = None
) -> list[str]:
    """Copy the variables of ``path`` into ``environ`` (default ``os.environ``) that are not set.

    Returns the names set (sorted; values are never returned or logged). Does
    nothing (returns ``[]``) when ``environ`` has ``ERX_ENV=production`` or the
    file does not exist.
    """
    env = os.environ if environ is None else environ
    if env.get("ERX_ENV", "").strip() == "production" or not Path(path).is_file():
        return []
    added = []
    for name, value in dotenv_values(path).items():
        if value is not None and name not in env:
            env[name] = value
            added.append(name)
    return sorted(added)

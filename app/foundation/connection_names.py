"""Where a connection URL points, for error messages: host and port, never credentials.

``postgresql+psycopg2://erx:secret@db.internal:5432/erx`` names as
``db.internal:5432``; a SQLite URL as its file (``sqlite file erx.sqlite3``);
``amqp://guest:guest@127.0.0.1:5672/%2F`` as ``127.0.0.1:5672``. The user name,
password and query string (which may hold ``password=``) are dropped.
"""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_PORTS = {"postgresql": 5432, "amqp": 5672, "amqps": 5671, "redis": 6379, "rediss": 6379}


def url_location(url: str) -> str:
    """``host:port`` of ``url`` (the scheme's default port when none is given).

    A SQLite URL names its file; an unparsable URL answers ``"an unparsable URL"``.
    Never raises, never returns the user name, password or query.
    """
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.split("+", 1)[0]
        if scheme == "sqlite":
            path = parts.path[1:] or ":memory:"  # sqlite:///relative, sqlite:////absolute
            return f"sqlite file {path}"
        host = parts.hostname or "localhost"
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return "an unparsable URL"
    if ":" in host:  # an IPv6 literal goes back in brackets (RFC 3986 section 3.2.2)
        host = f"[{host}]"
    return f"{host}:{port}" if port else host

"""A local simulator of the third-party e-prescription platform.

The sandbox is the other side of the wire: it implements
``/work/shared/platform-contract.md`` (quirks included) so the service, its demo,
its tests and its benchmarks run end to end on one machine. It imports only the
standard library, Flask, Werkzeug and requests, never the service's packages.

Entry points: :func:`sandbox.server.create_app` (a Flask app, for the test
client or any WSGI server) and ``python -m sandbox`` (a threaded HTTP server).
"""

from __future__ import annotations

from sandbox.config import ControlValues, SandboxConfig
from sandbox.server import create_app
from sandbox.state import SandboxState, get_state

__all__ = ["ControlValues", "SandboxConfig", "SandboxState", "create_app", "get_state"]

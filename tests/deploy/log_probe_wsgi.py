"""The service's WSGI app plus one route that logs a bearer token, an email and a post code.

Only for tests/deploy/test_log_stream.py: gunicorn serves it with the repo's
gunicorn.conf.py (``gunicorn -c gunicorn.conf.py tests.deploy.log_probe_wsgi:app``),
so the probe's record takes the same path as any application record.
"""

from __future__ import annotations

import logging

from flask import jsonify

from wsgi import app

PROBE_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwdC0wMDAxIn0.c2lnbmF0dXJl"
PROBE_EMAIL = "jo.bloggs@example.test"
PROBE_POSTCODE = "BS8 2BY"


@app.get("/_log_probe")
def log_probe():  # type: ignore[no-untyped-def]
    logging.getLogger("app.probe").warning(
        "probe: Authorization Bearer %s from %s at %s",
        PROBE_TOKEN,
        PROBE_EMAIL,
        PROBE_POSTCODE,
        extra={"patient_email": PROBE_EMAIL},
    )
    return jsonify({"logged": True})

"""``/readyz`` fails (503, the JSON error shape) while the database is unreachable
and recovers after, so a load balancer stops routing to the process; ``/healthz``
stays 200 throughout, so the process is not restarted for it."""

from __future__ import annotations

from app.foundation.db import Database
from scripts.stack import free_port


def test_readyz_is_503_while_the_database_is_unreachable_and_recovers(app, client) -> None:  # type: ignore[no-untyped-def]
    services = app.extensions["erx"]
    reachable = services.db
    assert client.get("/readyz").status_code == 200

    # Nothing listens on a port that was free a moment ago: the connection is refused.
    unreachable = Database(
        f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/erx_down?connect_timeout=2"
    )
    services.db = unreachable
    try:
        down = client.get("/readyz")
        assert down.status_code == 503
        assert down.get_json() == {
            "code": "database_unavailable",
            "message": "The service cannot reach its database; retry later.",
            "errors": {},
        }
        assert client.get("/healthz").status_code == 200
    finally:
        services.db = reachable
        unreachable.dispose()

    up = client.get("/readyz")
    assert up.status_code == 200 and up.get_json() == {"status": "ready"}
    assert client.get("/healthz").status_code == 200

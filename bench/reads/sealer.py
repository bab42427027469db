"""The audit sealer's lag under the read load: from a row's append to the checkpoint sealing it.

When the service has a sealer (``flask --app app audit seal --loop``, which writes
``audit_leaves`` and signed ``audit_checkpoints``), the read benchmark runs one for its
small database and, after each load, measures every audit row that load appended: its
``occurred_at`` (set when the request appended it) against the ``signed_at`` of the first
checkpoint whose tree covers its leaf (``tree_size > seq``). Rows still unsealed when the
measurement gives up are counted, and their lag so far enters the percentiles as a lower
bound. PostgreSQL only.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

from sqlalchemy import Engine, text

from bench.report import percentile

_LAGS = text("""
SELECT EXTRACT(EPOCH FROM (c.signed_at - e.occurred_at)) AS lag_s
FROM audit_events e
JOIN audit_leaves l ON l.event_id = e.id
JOIN LATERAL (SELECT signed_at FROM audit_checkpoints c WHERE c.tree_size > l.seq
              ORDER BY c.tree_size LIMIT 1) c ON true
WHERE e.id > :floor AND e.id <= :top
""")
_UNSEALED = text("""
SELECT count(*), max(EXTRACT(EPOCH FROM (now() - e.occurred_at)))
FROM audit_events e WHERE e.id > :floor AND e.id <= :top
  AND NOT EXISTS (SELECT 1 FROM audit_leaves l WHERE l.event_id = e.id)
""")


def available() -> bool:
    """Whether this checkout has the audit sealer (``app.mechanisms.audit_sealer``)."""
    return importlib.util.find_spec("app.mechanisms.audit_sealer") is not None


def top_id(engine: Engine) -> int:
    """The highest audit row id right now (0 when there is none)."""
    with engine.connect() as conn:
        return int(
            conn.execute(text("SELECT coalesce(max(id), 0) FROM audit_events")).scalar() or 0
        )


def lag(engine: Engine, floor: int, *, wait_s: float = 5.0) -> dict[str, Any]:
    """Lag (ms) of the rows with ``floor < id <= top`` (top: the highest id now).

    Waits up to ``wait_s`` for the sealer to cover them. Returns rows, unsealed,
    p50/p99/max in ms (None when no row was appended) and ``lower_bound``.
    """
    top = top_id(engine)
    deadline = time.monotonic() + wait_s
    while True:
        with engine.connect() as conn:
            unsealed, oldest = conn.execute(_UNSEALED, {"floor": floor, "top": top}).one()
        if not unsealed or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    with engine.connect() as conn:
        lags = [float(r[0]) * 1000 for r in conn.execute(_LAGS, {"floor": floor, "top": top})]
    unsealed = int(unsealed or 0)
    values = lags + [float(oldest or 0) * 1000] * unsealed
    p50, p99 = percentile(values, 50), percentile(values, 99)
    return {
        "rows": len(lags) + unsealed,
        "sealed": len(lags),
        "unsealed": unsealed,
        "p50_ms": None if p50 is None else round(p50, 1),
        "p99_ms": None if p99 is None else round(p99, 1),
        "max_ms": None if not values else round(max(values), 1),
        "lower_bound": bool(unsealed),
    }

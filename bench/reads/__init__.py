"""``python -m bench.reads``: audited reads against ``GET /api/v1/regions``, near or far."""

"""``python -m bench.reads``: audited reads against ``GET /api/v1/regions``, with the database near or far."""

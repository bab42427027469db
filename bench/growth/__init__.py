"""``python -m bench.growth seed``: a database grown to production size, set-based."""

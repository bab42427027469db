"""``python -m bench.growth seed``: a database grown to production size, set-based, for the growth runs."""

"""Pharmacy search benchmark: p95 over 12,000 pharmacies vs the seeded few, on PostgreSQL.

Run with ``python -m bench.search``; see ``bench/search/__main__.py``.
"""

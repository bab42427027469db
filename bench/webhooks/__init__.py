"""Webhook receiver benchmark: the service vs a minimal reference receiver, under wrk.

Run with ``bash bench/webhooks/run.sh`` (installs wrk if missing), which runs
``python -m bench.webhooks``; see ``bench/webhooks/__main__.py``.
"""

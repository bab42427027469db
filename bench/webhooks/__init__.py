"""Webhook benchmark: ingest against a bare reference receiver (with an A/A copy),
receipt -> history at a steady rate against a synchronous receiver, and saturation.

Run with ``bash bench/webhooks/run.sh`` (installs wrk if missing), which runs
``python -m bench.webhooks``; see ``bench/webhooks/__main__.py`` and docs/benchmarks.md section 2.
"""

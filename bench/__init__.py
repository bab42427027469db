"""Benchmarks of erx-connector, each compared with a reference run in the same session.

``python -m bench.dispatch`` (outbox worker vs a naive re-authenticating client)
and ``bash bench/webhooks/run.sh`` (webhook receiver vs a minimal reference
receiver, under wrk). Results go to ``bench/results/*.json``; docs/benchmarks.md
explains them. Every run uses a throwaway database (``bench.database``).
"""

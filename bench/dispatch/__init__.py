"""Dispatch benchmark: one outbox worker against a naive client that re-authenticates per send.

Run with ``python -m bench.dispatch [--count N]``; see ``bench/dispatch/__main__.py``.
"""

"""Mechanisms: the one queue, wake-ups, status history, the audit trail and its sealer, retry, runtime, metrics.

Import only app.foundation and each other."""

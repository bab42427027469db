"""The event contract, as the service uses it: re-exported from :mod:`contracts.event_schemas`.

The schemas and their validation live in ``contracts/`` so that consumers
outside the service (``notifier``) use the same code without importing ``app``.
"""

from __future__ import annotations

from contracts.event_schemas import (
    CONTRACTS_DIR,
    FORMAT_CHECKER,
    STATUS_CHANGED,
    STATUS_CHANGED_VERSION,
    ContractError,
    UnsupportedSchema,
    compatibility_problems,
    compile_check,
    load_schema,
    lock_path,
    schema_path,
    schema_snapshot,
    validate_event,
)

__all__ = [
    "CONTRACTS_DIR",
    "FORMAT_CHECKER",
    "STATUS_CHANGED",
    "STATUS_CHANGED_VERSION",
    "ContractError",
    "UnsupportedSchema",
    "compatibility_problems",
    "compile_check",
    "load_schema",
    "lock_path",
    "schema_path",
    "schema_snapshot",
    "validate_event",
]

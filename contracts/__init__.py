"""The event contracts shared by the service and its consumers (docs/events.md).

``events/``: the versioned JSON Schemas, their lock snapshots and examples.
``event_schemas``: loading, validating and the compatibility rule.
``event_topology``: the durable exchanges, queues and bindings the publisher
declares before it publishes and the reference consumer consumes from.
Pure: stdlib and jsonschema only, never ``app`` or ``notifier``.
"""

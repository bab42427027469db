"""Status events out over RabbitMQ (docs/events.md).

``contract``: the versioned JSON Schemas (re-exported from :mod:`contracts.event_schemas`).
``outbox``: stage an event row in the caller's transaction (no I/O).
``amqp``: connections and a pipelined confirm channel on pika's public API.
``publisher``: declare the durable topology (:mod:`contracts.event_topology`), then
send due outbox rows to the topic exchange with publisher confirms.
``cli``: ``flask events publish`` and ``flask events teardown``.

The reference consumer (patient notifications) is the separate package ``notifier``.
"""

"""Status events out over RabbitMQ (issue 11, docs/events.md).

``contract``: the versioned JSON Schemas and the backward-compatibility check.
``outbox``: stage an event row in the caller's transaction (no I/O).
``amqp``: connections, the shared exchange topology, a pipelined confirm channel.
``publisher``: send due outbox rows to the topic exchange with publisher confirms.
``notify``: the reference consumer (patient notifications) with dedupe and a DLQ.
``cli``: ``flask events publish``, ``flask notify`` and ``flask notify dlq list|replay``.
"""

"""The benchmark's consumer process (importable, so ``spawn`` can start it)."""

from __future__ import annotations

import json
import os
import time
from multiprocessing.connection import Connection
from typing import Any

import pika

from app.mechanisms.amqp import close_quietly, connect

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def consume(exchange: str, pipe: Connection) -> None:
    """Child process: consume an exclusive queue bound to ``#``; answer snapshots over ``pipe``.

    Its own process, so the writer threads of the measured phase cannot delay
    (through the GIL) the moment an arrival is noted.
    """
    connection = connect(AMQP_URL, name=f"bench consumer {exchange}")
    channel = connection.channel()
    channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    queue = channel.queue_declare(queue="", exclusive=True).method.queue
    channel.queue_bind(queue=queue, exchange=exchange, routing_key="#")
    channel.basic_qos(prefetch_count=500)
    arrivals: dict[str, tuple[float, str | None]] = {}

    def on_message(ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        now = time.time()
        ch.basic_ack(method.delivery_tag)
        message = json.loads(body)
        arrivals[props.message_id] = (now, message.get("recorded_at"))

    channel.basic_consume(queue, on_message)
    pipe.send("ready")
    while True:
        connection.process_data_events(time_limit=0.02)
        if pipe.poll():
            if pipe.recv() == "stop":
                break
            pipe.send(arrivals)
            arrivals = {}
    close_quietly(connection)

"""The state of one sandbox: every component, built once per app and found with ``get_state``.

Blueprints import ``get_state`` from here, not from ``sandbox.server``: the
server module registers the blueprints, so importing it back from them would
make each depend on the other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from sandbox.autopilot import Autopilot
from sandbox.clock import Clock, Sleep
from sandbox.config import SandboxConfig
from sandbox.control import Controls
from sandbox.faults import FaultInjector
from sandbox.stats import Stats
from sandbox.store import Store
from sandbox.webhooks import (
    Jitter,
    WebhookDispatcher,
    WebhookEmitter,
    WebhookSender,
)

EXTENSION_KEY = "sandbox"


@dataclass(frozen=True)
class SandboxState:
    """Every component of one sandbox; reach it with ``get_state(app)``.

    ``clock`` returns Unix seconds; ``sleep`` blocks for seconds (both
    injectable so tests never really wait).
    """

    config: SandboxConfig
    controls: Controls
    store: Store
    stats: Stats
    faults: FaultInjector
    dispatcher: WebhookDispatcher
    emitter: WebhookEmitter
    autopilot: Autopilot
    clock: Clock
    sleep: Sleep
    rng: random.Random

    def stats_json(self) -> dict[str, Any]:
        """The body of ``GET /sandbox/stats``."""
        body = self.stats.snapshot()
        body["webhooks"] = self.dispatcher.stats()
        return body

    def reset(self) -> None:
        """Clear prescriptions, sessions, tokens, stats and the webhook queue (not controls)."""
        self.store.reset()
        self.stats.reset()
        self.dispatcher.reset()
        self.autopilot.reset()

    def start_background(self) -> None:
        """Start the webhook workers and the auto-mode thread."""
        self.dispatcher.start(self.config.webhook_workers)
        self.autopilot.start()

    def shutdown(self) -> None:
        """Stop the background threads (pending deliveries are abandoned)."""
        self.autopilot.stop()
        self.dispatcher.stop()


def _rng(seed: int | None, purpose: str) -> random.Random:
    # One generator per purpose, so that, for a given seed, fault decisions do
    # not shift when an unrelated feature draws more numbers.
    return random.Random(f"{seed}:{purpose}") if seed is not None else random.Random()


def build_state(
    config: SandboxConfig,
    *,
    clock: Clock,
    sleep: Sleep,
    webhook_sender: WebhookSender,
    jitter: Jitter,
) -> SandboxState:
    """Wire the components of one sandbox (no threads are started here).

    ``clock`` returns Unix seconds, ``sleep`` blocks for seconds,
    ``webhook_sender(url, body, headers, timeout_s) -> status`` delivers one
    webhook and ``jitter(delay_s, rng) -> delay_s`` spreads its retries.
    """
    controls = Controls(config.controls)
    stats = Stats()
    store = Store(rng=_rng(config.seed, "ids"))
    dispatcher = WebhookDispatcher(
        controls=controls,
        clock=clock,
        rng=_rng(config.seed, "webhooks"),
        sender=webhook_sender,
        jitter=jitter,
    )
    emitter = WebhookEmitter(
        controls=controls, dispatcher=dispatcher, clock=clock, rng=_rng(config.seed, "events")
    )
    store.add_listener(emitter)
    return SandboxState(
        config=config,
        controls=controls,
        store=store,
        stats=stats,
        faults=FaultInjector(controls=controls, rng=_rng(config.seed, "faults"), stats=stats),
        dispatcher=dispatcher,
        emitter=emitter,
        autopilot=Autopilot(
            store=store, controls=controls, clock=clock, rng=_rng(config.seed, "auto")
        ),
        clock=clock,
        sleep=sleep,
        rng=_rng(config.seed, "storm"),
    )


def get_state(app: Flask | None = None) -> SandboxState:
    """The ``SandboxState`` of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    return target.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]

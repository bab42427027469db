"""Sandbox control and observation endpoints (``/sandbox/*``); never faulted."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from sandbox import lifecycle
from sandbox.control import ControlError
from sandbox.responses import fail, ok
from sandbox.state import get_state
from sandbox.store import InvalidTransition, UnknownPrescription
from sandbox.storm import run_storm

blueprint = Blueprint("control", __name__, url_prefix="/sandbox")

MAX_STORM = 100_000
MAX_NOISE = 100


def _bad_request(message: str, errors: dict[str, str] | None = None) -> Response:
    body: dict[str, object] = {"success": False, "message": message}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = 400
    return response


@blueprint.get("/stats")
def stats() -> Response:
    """Counters (see ``Stats``) plus ``webhooks``: enqueued, delivered, attempts,
    failed_attempts, gave_up, dropped, duplicated, pending."""
    return jsonify(get_state().stats_json())


@blueprint.post("/reset")
def reset() -> Response:
    """Clear prescriptions, sessions, tokens, stats and the webhook queue; controls stay."""
    get_state().reset()
    return jsonify({"reset": True})


@blueprint.get("/control")
def read_control() -> Response:
    """Every control key and its value (webhook secrets redacted)."""
    return jsonify(get_state().controls.as_json())


@blueprint.post("/control")
def update_control() -> Response:
    """Partial update from a JSON object; unknown keys or bad values → 400, nothing applied."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _bad_request("Expected a JSON object of control keys.")
    try:
        get_state().controls.update(body)
    except ControlError as exc:
        return _bad_request("Invalid control update.", exc.errors)
    return jsonify(get_state().controls.as_json())


@blueprint.post("/webhooks/release")
def release_webhooks() -> Response:
    """Admit every held event for delivery: ``{"released": n}``."""
    return jsonify({"released": get_state().dispatcher.release()})


@blueprint.get("/webhooks/deliveries")
def webhook_deliveries() -> Response:
    """The most recent delivery attempts: ``{"deliveries": [{"event_id", "attempt", "ok", "status"}]}``."""
    records = get_state().dispatcher.history()
    return jsonify(
        {
            "deliveries": [
                {"event_id": r.event_id, "attempt": r.attempt, "ok": r.ok, "status": r.status}
                for r in records
            ]
        }
    )


@blueprint.post("/prescriptions/<token>/advance")
def advance(token: str) -> Response:
    """Make exactly one §6 transition to ``{"status": ...}`` and enqueue its webhook.

    200 ``{"success": true, "data": {"prescription": {...}}}``; 400 unknown
    status; 404 unknown token; 409 ``invalid_transition``.
    """
    body = request.get_json(silent=True)
    target = body.get("status") if isinstance(body, dict) else None
    if target not in lifecycle.STATUSES:
        return _bad_request(f"status must be one of {', '.join(lifecycle.STATUSES)}.")
    state = get_state()
    try:
        change = state.store.transition(token, target, now=state.clock())
    except UnknownPrescription:
        return fail("Prescription not found.", code="not_found", status=404)
    except InvalidTransition as exc:
        return fail(
            f"Cannot move a {exc.current} prescription to {target}.",
            code="invalid_transition",
            status=409,
        )
    return ok({"prescription": change.prescription.to_json()})


@blueprint.post("/storm")
def storm() -> Response:
    """Create ``{"count": n}`` prescriptions through random lifecycles (see ``sandbox.storm``).

    Optional ``"noise_events": k`` (default 0) adds k events of other types per
    prescription. Answers ``{"prescriptions": [{"id", "status", "client_ref_id",
    "created_at", "history"}], "noise_events": total}``.
    """
    body = request.get_json(silent=True)
    body = body if isinstance(body, dict) else {}
    count = body.get("count")
    noise = body.get("noise_events", 0)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_STORM:
        return _bad_request(f"count must be an integer from 1 to {MAX_STORM}.")
    if isinstance(noise, bool) or not isinstance(noise, int) or not 0 <= noise <= MAX_NOISE:
        return _bad_request(f"noise_events must be an integer from 0 to {MAX_NOISE}.")
    state = get_state()
    made = run_storm(
        state.store,
        count=count,
        now=state.clock(),
        rng=state.rng,
        noise_events=noise,
        emit_noise=state.emitter.emit_other,
    )
    return jsonify({"prescriptions": [rx.to_json() for rx in made], "noise_events": count * noise})

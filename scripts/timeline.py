"""A prescription's status history as a person reads it: the demo's timeline table.

Input is the ``history`` list of ``GET /api/v1/prescriptions/<id>`` (README,
"API"): entries with ``from``, ``to``, ``occurred_at`` (ISO 8601, UTC) and
``source``. Output is plain text lines with aligned columns, every time in one
format to the second (``2026-12-02 10:15:02Z``), and each source named for
who made the change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SOURCE_LABELS: Mapping[str, str] = {
    "service": "service",  # the service itself: queued on send, emailed, gave up
    "api": "platform reply",  # the platform's answer to our issue call
    "webhook": "webhook",  # an event the platform posted to us
    "reconcile": "reconcile",  # the reconcile job asked the platform
    "operator": "operator",  # a person at the CLI (requeue)
}
"""History ``source`` values (``webhooks/history.py`` ``SOURCES``) -> words for people."""

TIME_FORMAT = "%Y-%m-%d %H:%M:%SZ"
HEADER = ("time (UTC)", "from", "to", "by")


def format_utc(value: str | None) -> str:
    """``2026-12-02T10:15:02.123456Z`` (or ``+00:00``, or no fraction) -> ``2026-12-02 10:15:02Z``.

    Fractions of a second are cut, not rounded (a step never shows a time after
    the one that followed it). ``None`` or an unreadable value -> ``"-"``.
    """
    if not value:
        return "-"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # the API writes UTC; a bare time is UTC too
    return parsed.astimezone(UTC).strftime(TIME_FORMAT)


def source_label(source: str | None) -> str:
    """The person-readable name of a history ``source`` (unknown ones shown as they are)."""
    if not source:
        return "-"
    return SOURCE_LABELS.get(source, source)


def timeline_lines(history: Sequence[Mapping[str, Any]], *, indent: str = "   ") -> list[str]:
    """The history as a header and one line per entry, columns padded to align.

    ``history`` is in the order to print (the API already gives lifecycle order).
    Returns the lines without trailing newlines; an empty history gives one line
    saying so.
    """
    if not history:
        return [f"{indent}(no status changes recorded)"]
    rows = [
        (
            format_utc(entry.get("occurred_at")),
            entry.get("from") or "-",
            entry.get("to") or "-",
            source_label(entry.get("source")),
        )
        for entry in history
    ]
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    return [
        indent
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [HEADER, *rows]
    ]


def logs_line(log_dir: Path, names: Sequence[str], *, root: Path) -> str:
    """One line naming where each process's log is, relative to ``root`` when inside it."""
    try:
        shown = log_dir.relative_to(root)
    except ValueError:
        shown = log_dir
    files = ", ".join(f"{name}.log" for name in names)
    return f"== logs: {shown}/ ({files}); each run appends"

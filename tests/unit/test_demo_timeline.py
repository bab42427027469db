"""The demo's timeline (scripts/timeline.py): one time format, aligned columns, sources for people."""

from __future__ import annotations

from pathlib import Path

from scripts.timeline import format_utc, logs_line, source_label, timeline_lines

HISTORY = [
    {
        "from": None,
        "to": "queued",
        "occurred_at": "2026-12-02T10:15:02.987654Z",
        "source": "service",
    },
    {
        "from": "queued",
        "to": "issued",
        "occurred_at": "2026-12-02T10:15:03.120000+00:00",
        "source": "api",
    },
    {"from": "issued", "to": "signed", "occurred_at": "2026-12-02T10:15:04Z", "source": "webhook"},
    {
        "from": "signed",
        "to": "dispensed",
        "occurred_at": "2026-12-02T11:15:05+01:00",
        "source": "reconcile",
    },
]


def test_every_time_is_utc_to_the_second_in_one_format() -> None:
    assert format_utc("2026-12-02T10:15:02.987654Z") == "2026-12-02 10:15:02Z"
    assert format_utc("2026-12-02T10:15:02+00:00") == "2026-12-02 10:15:02Z"
    assert format_utc("2026-12-02T11:15:02+01:00") == "2026-12-02 10:15:02Z"
    assert format_utc(None) == "-"
    assert format_utc("yesterday") == "-"


def test_sources_are_named_for_people() -> None:
    assert [source_label(s) for s in ("service", "api", "webhook", "reconcile")] == [
        "service",
        "platform reply",
        "webhook",
        "reconcile",
    ]
    assert source_label("something-new") == "something-new"


def test_columns_line_up_under_the_header() -> None:
    lines = timeline_lines(HISTORY, indent="")

    assert lines[0].split() == ["time", "(UTC)", "from", "to", "by"]
    assert lines[1:] == [
        "2026-12-02 10:15:02Z  -       queued     service",
        "2026-12-02 10:15:03Z  queued  issued     platform reply",
        "2026-12-02 10:15:04Z  issued  signed     webhook",
        "2026-12-02 10:15:05Z  signed  dispensed  reconcile",
    ]
    header = lines[0]
    assert [header.index(word) for word in ("from", "to", "by")] == [22, 30, 41]


def test_an_empty_history_says_so() -> None:
    assert timeline_lines([]) == ["   (no status changes recorded)"]


def test_the_logs_line_names_each_file_under_the_repository(tmp_path: Path) -> None:
    line = logs_line(
        tmp_path / "instance" / "logs", ["sandbox", "service", "worker"], root=tmp_path
    )
    assert (
        line == "== logs: instance/logs/ (sandbox.log, service.log, worker.log); each run appends"
    )

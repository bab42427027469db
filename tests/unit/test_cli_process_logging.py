"""A real CLI process logs JSON lines on stderr and keeps stdout for the command's output."""

from __future__ import annotations

import json

from app.foundation.db import Database
from scripts.stack import base_env
from tests.conftest import PRESCRIBER_SECRETS
from tests.support import find_phi, run_repo_command, seeded_phi


def test_flask_cli_process_logs_json_on_stderr_only(db_url: str, seeded: Database) -> None:
    env = base_env(DATABASE_URL=db_url, ERX_ENV="test", LOG_LEVEL="DEBUG")
    email, (password, pin) = next(iter(PRESCRIBER_SECRETS.items()))
    stored = run_repo_command(
        ["flask", "--app", "app", "prescribers", "set-credentials", email],
        {**env, "ERX_PRESCRIBER_PASSWORD": password, "ERX_PRESCRIBER_PIN": pin},
    )
    assert stored.returncode == 0, stored.stderr[-2000:]
    done = run_repo_command(["flask", "--app", "app", "keys", "rotate"], env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "rotated 0 value(s), 2 already under the newest key, 2 prescriber(s) in 1 batch(es)"
    ]
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert any(
        r["logger"] == "app.keys" and r["message"] == "key rotation batch committed"
        for r in records
    )
    assert all(
        {"time", "level", "logger", "message", "request_id", "process"} <= r.keys() for r in records
    )
    everything = (stored.stdout + stored.stderr + done.stdout + done.stderr).splitlines()
    assert find_phi(everything, seeded_phi(seeded)) == []
    assert password not in "\n".join(everything)
    # The PIN is six digits: look for it outside the timestamps, where microseconds could match.
    assert all(pin not in json.dumps({k: v for k, v in r.items() if k != "time"}) for r in records)
    assert pin not in done.stdout + stored.stdout


def test_a_bad_setting_is_one_line_and_a_failure_for_every_flask_command(db_url: str) -> None:
    """A typo in the environment must not look like a crash (or a success) to an operator."""
    env = base_env(DATABASE_URL=db_url, ERX_ENV="test", ERX_READ_TIMEOUT_S="two seconds")
    for command in (["worker"], ["audit", "verify"], ["seed"]):
        done = run_repo_command(["flask", "--app", "app", *command], env)
        assert done.returncode == 1, command
        assert done.stdout == ""
        assert done.stderr.splitlines() == [
            "Error: configuration: ERX_READ_TIMEOUT_S must be a float"
        ], command

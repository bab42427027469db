"""``sandbox/README.md`` documents exactly the flags ``python -m sandbox`` accepts."""

from __future__ import annotations

import re
from pathlib import Path

from sandbox.__main__ import build_parser
from sandbox.config import DEFAULT_PORT

README = Path(__file__).resolve().parents[2] / "sandbox" / "README.md"


def _parser_flags() -> set[str]:
    return {
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


def test_the_flag_table_lists_every_flag_and_no_other() -> None:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `--")]
    documented = {
        flag for row in rows for flag in re.findall(r"`(--[a-z0-9-]+)", row.split("|")[1])
    }
    assert documented == _parser_flags()


def test_the_readme_runs_the_sandbox_on_its_default_port() -> None:
    text = README.read_text()
    assert f"--port {DEFAULT_PORT}" in text
    assert f"127.0.0.1, {DEFAULT_PORT}" in text

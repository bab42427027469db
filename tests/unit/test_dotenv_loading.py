"""The development .env: loaded for gunicorn outside production, never over the environment."""

from __future__ import annotations

import shutil
from pathlib import Path

from app.foundation.config import load_settings
from app.foundation.dotenv_loading import load_development_dotenv

REPO = Path(__file__).resolve().parents[2]


def test_the_example_is_a_working_development_configuration(tmp_path):
    env: dict[str, str] = {}
    shutil.copy(REPO / ".env.example", tmp_path / ".env")
    assert "ERX_ENV" in load_development_dotenv(tmp_path / ".env", environ=env)
    settings = load_settings(env)
    assert settings.env == "development"
    assert settings.mail_backend == "file"  # works with no mail server


def test_the_environment_wins_over_the_file(tmp_path):
    (tmp_path / ".env").write_text("ERX_BASE_URL=http://127.0.0.1:1\nMAIL_DIR=from-file\n")
    env = {"ERX_BASE_URL": "http://127.0.0.1:9765"}
    assert load_development_dotenv(tmp_path / ".env", environ=env) == ["MAIL_DIR"]
    assert env == {"ERX_BASE_URL": "http://127.0.0.1:9765", "MAIL_DIR": "from-file"}


def test_production_reads_no_file(tmp_path):
    (tmp_path / ".env").write_text("JWT_SECRET=from-a-file\n")
    env = {"ERX_ENV": "production"}
    assert load_development_dotenv(tmp_path / ".env", environ=env) == []
    assert env == {"ERX_ENV": "production"}


def test_a_missing_file_is_no_error(tmp_path):
    assert load_development_dotenv(tmp_path / "absent.env", environ={}) == []


def test_production_example_lists_every_setting_for_production():
    text = (REPO / "docs" / "production.env.example").read_text()
    assert "ERX_ENV=production" in text and "MAIL_BACKEND=smtp" in text

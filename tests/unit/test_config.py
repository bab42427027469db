"""Settings from the environment (app/foundation/config.py): defaults, production rules, parsing, redaction."""

from __future__ import annotations

import dataclasses

import pytest

from app.foundation.config import ConfigError, Settings, default_database_url, load_settings

PRODUCTION = {
    "ERX_ENV": "production",
    "DATABASE_URL": "postgresql://erx:db-pass-Q7x@db.internal:5432/erx",
    "ERX_BASE_URL": "https://api.platform.example",
    "ERX_CLIENT_ID": "client-prod-1",
    "ERX_CLIENT_SECRET": "client-secret-Zk29",
    "WEBHOOK_SECRETS": "whsec_new_Pq81,whsec_old_Lm02",
    "ERX_ENCRYPTION_KEYS": "ZmVybmV0LWtleS1mb3ItcHJvZHVjdGlvbi0wMDAwMDA=",
    "MAIL_BACKEND": "smtp",
    "JWT_JWKS_URL": "https://idp.example.test/.well-known/jwks.json",
    "JWT_ISSUER": "https://idp.example.test/",
    "JWT_AUDIENCE": "erx-connector",
}
SECRET_VALUES = (
    "db-pass-Q7x",
    "client-secret-Zk29",
    "whsec_new_Pq81",
    "whsec_old_Lm02",
    "ZmVybmV0LWtleS1mb3ItcHJvZHVjdGlvbi0wMDAwMDA=",
)
REQUIRED_IN_PRODUCTION = (
    "DATABASE_URL",
    "ERX_BASE_URL",
    "ERX_CLIENT_ID",
    "ERX_CLIENT_SECRET",
    "WEBHOOK_SECRETS",
    "ERX_ENCRYPTION_KEYS",
)


def test_empty_environment_gives_development_defaults() -> None:
    settings = load_settings({})

    assert settings.env == "development"
    assert settings.database_url == default_database_url()
    assert settings.database_url.startswith("sqlite:///")
    assert settings.erx_base_url == "http://127.0.0.1:8765"
    assert settings.erx_client_id == "erx-sandbox-client"
    assert settings.webhook_secrets == ("whsec_sandbox_test_secret",)
    assert len(settings.encryption_keys) == 1
    assert settings.webhook_tolerance_s == 300
    assert settings.dispatch_max_attempts == 8
    assert settings.mail_backend == "file"
    assert settings == Settings()


def test_load_settings_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ERX_ENV", "DATABASE_URL", "WORKER_BATCH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKER_BATCH", "42")

    assert load_settings().worker_batch == 42


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.webhook_secrets = ("other",)  # type: ignore[misc]


def test_production_with_everything_set_loads() -> None:
    settings = load_settings(PRODUCTION)

    assert settings.env == "production"
    assert settings.erx_base_url == "https://api.platform.example"
    assert settings.erx_client_secret == "client-secret-Zk29"
    assert settings.database_url == "postgresql+psycopg2://erx:db-pass-Q7x@db.internal:5432/erx"


def test_production_with_secrets_missing_names_every_variable() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"ERX_ENV": "production"})

    message = str(excinfo.value)
    for name in REQUIRED_IN_PRODUCTION:
        assert name in message


@pytest.mark.parametrize("missing", REQUIRED_IN_PRODUCTION)
def test_production_names_the_one_missing_variable_and_no_value(missing: str) -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != missing}

    with pytest.raises(ConfigError) as excinfo:
        load_settings(env)

    message = str(excinfo.value)
    assert missing in message
    others = [name for name in REQUIRED_IN_PRODUCTION if name != missing]
    assert not any(name in message for name in others)
    assert not any(value in message for value in SECRET_VALUES)
    assert not any(value in message for value in PRODUCTION.values() if value != "production")


@pytest.mark.parametrize("blank", ["", "   "])
def test_production_treats_blank_as_missing(blank: str) -> None:
    with pytest.raises(ConfigError, match="ERX_CLIENT_SECRET"):
        load_settings({**PRODUCTION, "ERX_CLIENT_SECRET": blank})


def test_development_never_requires_secrets() -> None:
    settings = load_settings({"ERX_ENV": "development", "ERX_CLIENT_SECRET": ""})
    assert settings.erx_client_secret == "erx-sandbox-secret"


def test_unknown_environment_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="ERX_ENV"):
        load_settings({"ERX_ENV": "staging"})


def test_lists_split_on_commas_newest_first() -> None:
    settings = load_settings(
        {
            "WEBHOOK_SECRETS": " whsec_new , whsec_old,,whsec_oldest ",
            "ERX_ENCRYPTION_KEYS": "k-new,k-old",
        }
    )

    assert settings.webhook_secrets == ("whsec_new", "whsec_old", "whsec_oldest")
    assert settings.encryption_keys == ("k-new", "k-old")


@pytest.mark.parametrize("name", ["WEBHOOK_SECRETS"])
def test_list_of_only_commas_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: " , ,"})


def test_numbers_are_parsed_with_their_types() -> None:
    settings = load_settings(
        {
            "DISPATCH_MAX_ATTEMPTS": "3",
            "LEASE_S": "145.5",
            "WEBHOOK_TOLERANCE_S": " 120 ",
            "SMTP_PORT": "2525",
        }
    )

    assert settings.dispatch_max_attempts == 3
    assert isinstance(settings.dispatch_max_attempts, int)
    assert settings.lease_s == 145.5
    assert settings.webhook_tolerance_s == 120
    assert settings.smtp_port == 2525


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DISPATCH_MAX_ATTEMPTS", "three"),
        ("DISPATCH_MAX_ATTEMPTS", "2.5"),
        ("WEBHOOK_TOLERANCE_S", "5m"),
        ("LEASE_S", "12O"),
        ("ERX_READ_TIMEOUT_S", "ten"),
        ("SMTP_PORT", "25/tcp"),
        ("WORKER_BATCH", "1e"),
    ],
)
def test_malformed_numbers_are_config_errors_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings({name: value})

    assert name in str(excinfo.value)
    assert value not in str(excinfo.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEASE_S", "nan"),
        ("LEASE_S", "-5"),
        ("ERX_READ_TIMEOUT_S", "0"),
        ("DISPATCH_MAX_ATTEMPTS", "0"),
    ],
)
def test_non_finite_or_non_positive_numbers_are_config_errors(name: str, value: str) -> None:
    # A negative lease lets every worker claim the same row at once; a NaN one
    # crashes the worker loop; a zero read timeout fails only at the first call.
    with pytest.raises(ConfigError) as excinfo:
        load_settings({name: value})
    assert name in str(excinfo.value)


def test_negative_tolerance_is_refused() -> None:
    with pytest.raises(ConfigError, match="WEBHOOK_TOLERANCE_S"):
        load_settings({"WEBHOOK_TOLERANCE_S": "-1"})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h:5432/erx", "postgresql+psycopg2://u:p@h:5432/erx"),
        ("postgresql://u:p@h/erx", "postgresql+psycopg2://u:p@h/erx"),
        ("postgresql+psycopg2://u:p@h/erx", "postgresql+psycopg2://u:p@h/erx"),
        ("sqlite:////tmp/erx.sqlite3", "sqlite:////tmp/erx.sqlite3"),
    ],
)
def test_database_url_is_normalised_for_psycopg2(url: str, expected: str) -> None:
    assert load_settings({"DATABASE_URL": url}).database_url == expected


def test_repr_shows_no_secret() -> None:
    settings = load_settings(PRODUCTION)

    text = repr(settings) + str(settings)

    leaked = [value for value in SECRET_VALUES if value in text]
    assert leaked == []
    assert "erx_base_url" in text  # still useful for debugging


def test_with_overrides_returns_a_changed_copy() -> None:
    base = load_settings({})
    changed = base.with_overrides(dispatch_max_attempts=2)

    assert changed.dispatch_max_attempts == 2
    assert base.dispatch_max_attempts == 8
    with pytest.raises(ConfigError):
        base.with_overrides(mail_backend="carrier-pigeon")


def test_production_refuses_the_file_mail_backend() -> None:
    # Region A emails carry PHI; in production they go by SMTP, never to local files.
    with pytest.raises(ConfigError, match="MAIL_BACKEND"):
        load_settings({**PRODUCTION, "MAIL_BACKEND": "file"})


def test_a_lease_shorter_than_one_attempt_is_refused() -> None:
    with pytest.raises(ConfigError, match="LEASE_S"):
        load_settings({"LEASE_S": "30", "ERX_CONNECT_TIMEOUT_S": "3", "ERX_READ_TIMEOUT_S": "10"})


def test_send_threads_default_to_four_and_stay_within_the_http_pool() -> None:
    settings = load_settings({})
    assert settings.worker_send_threads == 4
    assert settings.db_pool_size >= settings.worker_send_threads + 1
    assert load_settings({"WORKER_SEND_THREADS": "10"}).db_pool_size == 11
    for bad in ("0", "11", "-1"):
        with pytest.raises(ConfigError, match="WORKER_SEND_THREADS"):
            load_settings({"WORKER_SEND_THREADS": bad})


IDENTITY_PROVIDER = ("JWT_JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE")


@pytest.mark.parametrize("absent", [(name,) for name in IDENTITY_PROVIDER] + [IDENTITY_PROVIDER])
def test_production_refuses_to_start_without_its_identity_provider(absent: tuple[str, ...]) -> None:
    # Without them every bearer token would get 401 while the pods report ready.
    env = {k: v for k, v in PRODUCTION.items() if k not in absent}

    with pytest.raises(ConfigError) as excinfo:
        load_settings(env)

    message = str(excinfo.value)
    assert "\n" not in message
    assert all(name in message for name in absent)
    assert not any(name in message for name in IDENTITY_PROVIDER if name not in absent)
    assert not any(value in message for value in PRODUCTION.values() if value != "production")


def test_production_wants_the_key_set_over_https() -> None:
    with pytest.raises(ConfigError, match="JWT_JWKS_URL must be an https:// URL"):
        load_settings({**PRODUCTION, "JWT_JWKS_URL": "http://idp.example.test/jwks.json"})
    # The loopback (a provider started by a test) is the one exception.
    assert load_settings(
        {**PRODUCTION, "JWT_JWKS_URL": "http://127.0.0.1:9/jwks.json"}
    ).jwt_jwks_url

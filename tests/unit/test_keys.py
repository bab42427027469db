"""Key rotation of stored credentials: app/services/keys.py, app/interfaces/keys_cli.py."""

from __future__ import annotations

import io
import logging

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import insert, select

from app import create_app
from app.foundation.config import ConfigError
from app.foundation.crypto import CredentialCipher, CredentialError
from app.foundation.db import Database
from app.foundation.logs import configure_logging
from app.foundation.models import Clinic, Prescriber
from app.services.keys import rotate_credentials
from tests.conftest import make_settings

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()
ROWS = 1000


def secrets_of(i: int) -> tuple[str, str]:
    return f"pass-{i:04d}-Zq", f"{100000 + i}"


@pytest.fixture
def thousand(seeded: Database) -> Database:
    """1,000 prescribers whose password and PIN are encrypted under OLD only."""
    old = CredentialCipher([OLD])
    with seeded.session() as session:
        clinic_id = session.scalars(select(Clinic.id)).first()
        rows = []
        for i in range(ROWS):
            password, pin = secrets_of(i)
            rows.append(
                {
                    "platform_prescriber_id": 900000 + i,
                    "name": f"Prescriber {i}",
                    "email": f"p{i}@keys.example.test",
                    "clinic_id": clinic_id,
                    "password_enc": old.encrypt(password),
                    "pin_enc": old.encrypt(pin),
                }
            )
        session.execute(insert(Prescriber), rows)
    return seeded


def stored(db: Database) -> dict[int, tuple[str | None, str | None, str]]:
    with db.session() as session:
        return {
            p.id: (p.password_enc, p.pin_enc, p.email) for p in session.scalars(select(Prescriber))
        }


def under_newest(db: Database) -> int:
    new_only = CredentialCipher([NEW])
    return sum(
        1
        for password, pin, _ in stored(db).values()
        for token in (password, pin)
        if token and new_only.uses_newest_key(token)
    )


def plain(result) -> list[str]:  # type: ignore[no-untyped-def]
    """The command's own output lines (stdout and stderr), without the JSON log lines."""
    return [
        line for line in result.output.splitlines() if line.strip() and not line.startswith("{")
    ]


class Interrupted(RuntimeError):
    pass


def test_rotation_of_1000_rows_interrupted_halfway_and_rerun(thousand: Database) -> None:
    before = stored(thousand)

    def fail_at_sixth(batch: int) -> None:
        if batch == 6:
            raise Interrupted("killed")

    with pytest.raises(Interrupted):
        rotate_credentials(thousand, [NEW, OLD], batch_size=100, before_commit=fail_at_sixth)
    # Five batches committed: the first 500 prescribers by id, two of them the seeded ones
    # without credentials, so 498 x 2 values. The sixth batch rolled back whole.
    assert under_newest(thousand) == 996
    middle = stored(thousand)
    changed = [pid for pid in before if before[pid][:2] != middle[pid][:2]]
    seeded_ids = {
        pid for pid, (_, _, email) in before.items() if not email.endswith("@keys.example.test")
    }
    assert len(seeded_ids) == 2 and max(seeded_ids) < min(changed)
    assert len(changed) == 498 and max(changed) < min(set(before) - set(changed) - seeded_ids)

    report = rotate_credentials(thousand, [NEW, OLD], batch_size=100)
    assert report.rotated == 1004 and report.current == 996 and report.unreadable == ()
    assert report.prescribers == ROWS + 2  # and the two seeded prescribers with no credentials
    after = stored(thousand)
    assert all(after[pid] == middle[pid] for pid in changed)  # already-current rows left untouched

    new_only = CredentialCipher([NEW])
    for i, (password_enc, pin_enc, _email) in enumerate(
        sorted(
            (v for v in after.values() if v[2].endswith("@keys.example.test")),
            key=lambda v: int(v[2][1:].split("@")[0]),
        )
    ):
        assert (
            new_only.decrypt(password_enc or ""),
            new_only.decrypt(pin_enc or ""),
        ) == secrets_of(i)
    with pytest.raises(CredentialError):
        CredentialCipher([OLD]).decrypt(after[changed[0]][0] or "")

    again = rotate_credentials(thousand, [NEW, OLD], batch_size=300)
    assert again.rotated == 0 and again.current == 2 * ROWS and again.batches == 4  # 1,002 rows


def test_no_plaintext_or_token_in_the_logs_of_a_rotation(thousand: Database) -> None:
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging(stream=buffer, level="DEBUG")
    try:
        rotate_credentials(thousand, [NEW, OLD], batch_size=250)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    out = buffer.getvalue()
    assert out.count("key rotation batch committed") == 5  # 1,002 prescribers
    assert "pass-0" not in out and "100000" not in out
    assert "gAAAAA" not in out and NEW not in out and OLD not in out


def test_unreadable_values_are_reported_and_left_alone(thousand: Database) -> None:
    stranger = CredentialCipher([Fernet.generate_key().decode()])
    with thousand.session() as session:
        victim = session.scalars(
            select(Prescriber).where(Prescriber.email == "p7@keys.example.test")
        ).one()
        victim.pin_enc = stranger.encrypt("000000")
        victim_id, token = victim.id, victim.pin_enc
    report = rotate_credentials(thousand, [NEW, OLD], batch_size=500)
    assert report.unreadable == ("p7@keys.example.test",)
    assert stored(thousand)[victim_id][1] == token
    assert report.rotated == 2 * ROWS - 1


@pytest.mark.parametrize(
    "keys", [("not-a-key",), (Fernet.generate_key().decode(), "short"), ("Zm9v\u00e9",), ()]
)
def test_malformed_key_names_the_variable_not_the_value(keys: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as caught:
        CredentialCipher(keys)
    message = str(caught.value)
    assert message.startswith("ERX_ENCRYPTION_KEYS")
    assert all(k not in message for k in keys if k)


def test_batch_size_must_be_positive(seeded: Database) -> None:
    with pytest.raises(ValueError):
        rotate_credentials(seeded, [NEW], batch_size=0)


# -- the CLI -------------------------------------------------------------------------------


def test_cli_rotate_after_prepending_a_key(db_url: str, seeded: Database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    old_app = create_app(make_settings(db_url, encryption_keys=(OLD,)), db=seeded)
    for email, secret in (
        ("dr.jones@example.test", "jones-pw"),
        ("dr.patel@example.test", "patel-pw"),
    ):
        result = old_app.test_cli_runner().invoke(
            args=["prescribers", "set-credentials", email],
            env={"ERX_PRESCRIBER_PASSWORD": secret, "ERX_PRESCRIBER_PIN": "123456"},
        )
        assert result.exit_code == 0, result.output
    new_app = create_app(make_settings(db_url, encryption_keys=(NEW, OLD)), db=seeded)
    result = new_app.test_cli_runner().invoke(args=["keys", "rotate", "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    assert plain(result) == [
        "rotated 4 value(s), 0 already under the newest key, 2 prescriber(s) in 2 batch(es)"
    ]
    new_only = CredentialCipher([NEW])
    with seeded.session() as session:
        jones = session.scalars(
            select(Prescriber).where(Prescriber.email == "dr.jones@example.test")
        ).one()
        assert new_only.decrypt(jones.password_enc or "") == "jones-pw"
    rerun = new_app.test_cli_runner().invoke(args=["keys", "rotate"])
    assert plain(rerun)[0].startswith("rotated 0 value(s), 4 already under the newest key")


def test_cli_rotate_with_a_malformed_key_is_one_line(db_url: str, seeded: Database) -> None:
    app = create_app(
        make_settings(db_url, encryption_keys=("definitely-not-a-fernet-key",)), db=seeded
    )
    result = app.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code == 1
    assert plain(result) == [
        "Error: ERX_ENCRYPTION_KEYS: key 1 of 1 is not a Fernet key (32 url-safe base64-encoded bytes)"
    ]


def test_cli_rotate_reports_unreadable_prescribers_and_exits_1(
    db_url: str, seeded: Database
) -> None:
    stranger = CredentialCipher([Fernet.generate_key().decode()])
    with seeded.session() as session:
        jones = session.scalars(
            select(Prescriber).where(Prescriber.email == "dr.jones@example.test")
        ).one()
        jones.password_enc, jones.pin_enc = (
            stranger.encrypt("x"),
            CredentialCipher([OLD]).encrypt("y"),
        )
    app = create_app(make_settings(db_url, encryption_keys=(NEW, OLD)), db=seeded)
    result = app.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code == 1
    lines = plain(result)
    assert lines[0].startswith("rotated 1 value(s)")
    assert (
        lines[1] == "Error: 1 prescriber(s) have credentials no configured key decrypts: "
        "dr.jones@example.test"
    )

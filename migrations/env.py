"""Alembic environment: the URL comes from DATABASE_URL (or the SQLite default)."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from app.foundation.config import load_settings
from app.foundation.db import make_engine
from app.foundation.models import Base

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=load_settings().database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(load_settings().database_url)
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # Batch mode rebuilds a table (copy, drop, rename); with foreign keys enforced,
            # dropping a table other rows reference fails. Off for this connection, as
            # Alembic advises, on the driver's connection: SQLite ignores the pragma inside
            # a transaction, and the engine's first statement begins one.
            raw = connection.connection.dbapi_connection
            assert raw is not None
            raw.execute("PRAGMA foreign_keys=OFF")
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

"""Alembic environment: the only place the schema is created, in the app and in tests."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

# Every part's tables: autogenerate compares the database with these, and a table missing here
# would be proposed for dropping (tests/test_migrations.py runs `alembic check`).
import alert_service.models  # noqa: F401
import anxin.models  # noqa: F401
import dispatcher.models  # noqa: F401
import gateway.models  # noqa: F401
import visits.models  # noqa: F401
from anxin.db import normalise_url
from anxin.settings import Settings

target_metadata = SQLModel.metadata


def _url() -> str:
    url = context.config.attributes.get("database_url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url and (configured := Settings().database_url) is not None:
        # The plain `alembic` command, as alembic.ini says: the same variable as the app.
        url = normalise_url(configured.get_secret_value())
    if not url:
        raise RuntimeError(
            "no database URL: set ANXIN_DATABASE_URL (or use `anxin db upgrade`, which also "
            "finds the embedded Postgres in the data directory)"
        )
    return str(url)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())

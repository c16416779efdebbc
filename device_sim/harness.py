"""Running the platform for the simulator: every role in this process, or a scratch database.

Used by `anxin sim run` and `anxin bench` (and their tests): the roles run in-process against a
real Postgres and a real broker, SMS go through the project's Twilio-compatible sandbox, and the
clock is whatever the caller passes (a FakeClock for scenarios on scenario time).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from anxin.broker import free_port
from anxin.clock import Clock, SystemClock
from anxin.db import SessionMaker, make_engine, make_sessionmaker, migrate
from anxin.mqtt import BrokerAddress
from anxin.runtime import ROLES, Services, role_tasks
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
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
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

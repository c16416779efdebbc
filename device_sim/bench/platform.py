"""The platform under load: in this process, as `anxin run <role>` subprocesses, or
elsewhere (`--external`), with the bench's own Twilio-compatible endpoint and, on request, a
Postgres and a Mosquitto of its own; the fleet marked known and online before the load."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text, update
from sqlmodel import col

from anxin.broker import EmbeddedBroker, embedded_broker, free_port
from anxin.db import SessionMaker, make_sessionmaker
from anxin.logging import get_logger
from anxin.models import Region
from anxin.mqtt import BrokerAddress
from anxin.settings import Settings
from device_sim.bench.options import ROLE_NAMES, SERVICE_FAULTS, BenchOptions, parse_fault
from device_sim.harness import (
    SANDBOX_FROM,
    OwnMosquitto,
    OwnPostgres,
    engine_for,
    external_sms_side,
    run_in_process,
    scratch_database,
    serve_app,
)
from device_sim.region.plan import RegionPlan
from device_sim.scenario.player import seed_plan
from dispatcher.twilio_sandbox import SmsSandbox, create_sandbox_app

log = get_logger("device_sim.bench")


def raise_file_limit() -> int:
    """One socket per home: lift the soft limit on open files to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- the platform under load -----------------------------------------------------------------


@dataclass
class Target:
    sessions: SessionMaker
    mqtt: BrokerAddress
    sandbox: SmsSandbox
    roles: RoleProcesses | None
    label: str
    postgres: OwnPostgres | None = None
    mosquitto: OwnMosquitto | None = None


class RoleProcesses:
    """The roles as `anxin run <role>` subprocesses, so one can be killed and started again.

    Each role runs `replicas[role]` times (gateway replicas share the load through the broker's
    shared subscription, watchers and outbox workers through `SKIP LOCKED`). A replica is
    named `role#n`; a gateway replica keeps its MQTT client id across restarts, so the broker
    hands it what it had queued for its persistent session."""

    def __init__(self, env: dict[str, str], replicas: dict[str, int] | None = None) -> None:
        self.env = env
        self.replicas = {role: 1 for role in ROLE_NAMES} | (replicas or {})
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.gateway_id = f"gw-bench-{uuid.uuid4().hex[:6]}"
        self.log_dir = (
            Path(os.environ.get("TMPDIR", "/tmp")) / f"anxin-bench-{uuid.uuid4().hex[:6]}"
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.restarts = 0
        self.started_at: float | None = None  # time.monotonic() of start_all

    def names(self, target: str) -> list[str]:
        """`gateway` → every gateway replica's name; `gateway#2` → just that one."""
        role, _, replica = target.partition("#")
        if replica:
            return [f"{role}#{replica}"]
        return [f"{role}#{n}" for n in range(1, self.replicas.get(role, 1) + 1)]

    async def start_all(self) -> None:
        self.started_at = time.monotonic()
        for role in ROLE_NAMES:
            await self.start(role)

    async def start(self, target: str) -> None:
        for name in self.names(target):
            role, _, replica = name.partition("#")
            anxin = Path(sys.executable).with_name("anxin")
            args = [str(anxin), "run", role]
            if role == "gateway":
                # The same id after a restart: the broker hands the new process what it had
                # queued for the old one's persistent session.
                args += ["--gateway-id", f"{self.gateway_id}-{replica}"]
            out = (self.log_dir / f"{role}-{replica}.log").open("ab")
            self.procs[name] = await asyncio.create_subprocess_exec(
                *args, env=self.env, stdout=out, stderr=out
            )

    async def kill(self, target: str) -> None:
        """SIGKILL: no shutdown handler runs, transactions in flight are cut off."""
        for name in self.names(target):
            proc = self.procs.get(name)
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()

    async def restart(self, target: str, down_s: float = 1.0) -> None:
        await self.kill(target)
        await asyncio.sleep(down_s)
        await self.start(target)
        self.restarts += 1

    def exited(self) -> dict[str, int]:
        """Replicas that exited on their own (not killed by us and restarted): name → code."""
        return {
            name: proc.returncode
            for name, proc in self.procs.items()
            if proc.returncode is not None
        }

    async def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class BenchSandbox(SmsSandbox):
    """The Twilio-compatible endpoint with its webhooks (delivery receipts) bounded to a few
    at a time: thousands of receipts waiting in one HTTP connection pool would eat this
    process's CPU (httpcore hands out connections in O(waiting²)) and distort every figure the
    bench takes. Receipts still all reach the platform, later when it is slow."""

    WEBHOOK_CONCURRENCY = 32

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._webhook_slots = asyncio.Semaphore(self.WEBHOOK_CONCURRENCY)
        self.webhooks_failed = 0

    async def _post_signed(self, url: str, form: dict[str, str]) -> int:
        async with self._webhook_slots:
            status = await super()._post_signed(url, form)
        if status == 0:
            self.webhooks_failed += 1
        return status

    async def settle(self, timeout: float) -> None:
        """Wait (at most `timeout`) until the receipts and replies under way are posted."""
        deadline = time.monotonic() + timeout
        while self._tasks and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)


def _sandbox() -> BenchSandbox:
    return BenchSandbox(uuid.uuid4().hex, "AC" + uuid.uuid4().hex, None, status_delay=0.2)


async def _set_voice(sessions: SessionMaker, options: BenchOptions) -> None:
    """The county's voice wait for the run (`--voice-after`), on top of its own ladder."""
    if options.voice_after_s is None:
        return
    async with sessions() as session, session.begin():
        await session.execute(
            update(Region)
            .where(col(Region.parent_id).is_(None))
            .values(ladder={"voice_after_s": options.voice_after_s})
        )


@contextlib.asynccontextmanager
async def platform_for_bench(
    settings: Settings, options: BenchOptions, plan: RegionPlan
) -> AsyncIterator[Target]:
    if options.external:
        if (
            settings.database_url is None
            or settings.mqtt_url is None
            or not settings.twilio_configured
        ):
            raise ValueError(
                "--external needs ANXIN_DATABASE_URL, ANXIN_MQTT_URL and ANXIN_TWILIO_*"
            )
        async with external_sms_side(settings) as (sandbox, sessions):
            await seed_plan(sessions, plan)
            await _set_voice(sessions, options)
            yield Target(
                sessions,
                BrokerAddress.parse(settings.mqtt_url.get_secret_value()),
                sandbox,
                None,
                "external",
            )
        return

    from device_sim.cli import _server_url

    spawn = bool(options.faults or options.spawn_roles or options.replicas)
    own = options.own_services or any(parse_fault(f)[0] in SERVICE_FAULTS for f in options.faults)
    async with contextlib.AsyncExitStack() as stack:
        broker: EmbeddedBroker | None = None
        postgres: OwnPostgres | None = None
        mosquitto: OwnMosquitto | None = None
        if own:
            # A Postgres and a Mosquitto of the bench's own, to restart without touching the
            # machine's shared ones.
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="anxin-bench-own-"))
            )
            postgres = OwnPostgres(workdir / "pg")
            mosquitto = OwnMosquitto(workdir / "mosquitto")
            server = (await postgres.start()).replace("postgresql+asyncpg://", "postgresql://")
            stack.push_async_callback(postgres.close)
            # Commit times on every row version: the report's per-hop breakdown reads the
            # gateway's, the watcher's and the dispatcher's commits from them.
            await _enable_commit_timestamps(server)
            await postgres.restart(down_s=0)
            await mosquitto.start()
            stack.push_async_callback(mosquitto.stop)
            mqtt_url = mosquitto.url
        else:
            if settings.mqtt_url is not None:
                mqtt_url = settings.mqtt_url.get_secret_value()
            else:
                broker = embedded_broker(persistence=False)
                await broker.start()
                stack.push_async_callback(broker.stop)
                mqtt_url = broker.url
            server = await _server_url(settings)
        url = await stack.enter_async_context(scratch_database(server, "anxin_bench"))
        engine = await stack.enter_async_context(engine_for(url))
        sessions = make_sessionmaker(engine)
        await seed_plan(sessions, plan)
        await _set_voice(sessions, options)
        await _clear_retained_statuses(BrokerAddress.parse(mqtt_url), plan)
        await _mark_fleet_online(sessions)
        if spawn:
            sandbox, roles = await stack.enter_async_context(
                spawned_roles(url, mqtt_url, options.replicas)
            )
            yield Target(
                sessions,
                BrokerAddress.parse(mqtt_url),
                sandbox,
                roles,
                "roles as subprocesses"
                + "".join(f", {role}×{n}" for role, n in roles.replicas.items() if n > 1),
                postgres,
                mosquitto,
            )
        else:
            platform = await stack.enter_async_context(
                run_in_process(url, mqtt_url, engine, sandbox_class=BenchSandbox)
            )
            yield Target(
                sessions, platform.mqtt, platform.sandbox, None, "roles in the bench process"
            )


@contextlib.asynccontextmanager
async def spawned_roles(
    database_url: str,
    mqtt_url: str,
    replicas: dict[str, int] | None = None,
    *,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[tuple[BenchSandbox, RoleProcesses]]:
    """Every role as `anxin run` subprocesses (with replicas) against this database and broker,
    SMS to a Twilio-compatible sandbox served here; yields once the web role answers."""
    sandbox = _sandbox()
    web_port = free_port()
    sandbox.inbound_url = f"http://127.0.0.1:{web_port}/twilio/inbound"
    async with serve_app(create_sandbox_app(sandbox)) as sandbox_url:
        env = dict(os.environ) | {
            "ANXIN_DATABASE_URL": database_url,
            "ANXIN_MQTT_URL": mqtt_url,
            "ANXIN_TWILIO_ACCOUNT_SID": sandbox.account_sid,
            "ANXIN_TWILIO_AUTH_TOKEN": sandbox.auth_token,
            "ANXIN_TWILIO_FROM": SANDBOX_FROM,
            "ANXIN_TWILIO_BASE_URL": sandbox_url,
            "ANXIN_PUBLIC_URL": f"http://127.0.0.1:{web_port}",
            "ANXIN_HTTP_PORT": str(web_port),
            # The watchers and outbox workers poll at their defaults: a new alert or SMS wakes
            # them by NOTIFY, and a 50 ms poll cost each of them ~20 idle passes a second.
            "ANXIN_LOG_LEVEL": "warning",
            "ANXIN_METRICS_PORT": "0",
        }
        roles = RoleProcesses(env, replicas)
        # One gateway: no shared subscription. Several: a group of this run's own (a `$share`
        # group keeps the persistent sessions of earlier runs' gateways as members; the broker
        # would hand them their share of the events, which then wait for the device's resend).
        env["ANXIN_MQTT_SHARED_GROUP"] = (
            f"anxin-bench-{uuid.uuid4().hex[:6]}" if roles.replicas["gateway"] > 1 else ""
        )
        env |= extra_env or {}
        await roles.start_all()
        try:
            await _wait_http(f"http://127.0.0.1:{web_port}/healthz", 60)
            await asyncio.sleep(2.0)  # the gateways connect and subscribe
            yield sandbox, roles
        finally:
            await roles.stop_all()
            await sandbox.aclose()


async def _enable_commit_timestamps(server_url: str) -> None:
    """`track_commit_timestamp = on` (takes effect at the next start of the server)."""
    import asyncpg

    conn = await asyncpg.connect(server_url, timeout=10)
    try:
        await conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
    finally:
        await conn.close()


async def _wait_http(url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url, timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s")


async def _clear_retained_statuses(address: BrokerAddress, plan: RegionPlan) -> None:
    """Forget retained `online`/`offline` left on the broker by earlier runs (a killed run
    leaves ten thousand last wills): a gateway subscribing now would take each for news."""
    from anxin.schemas import topic
    from device_sim.device_mqtt import DeviceMqtt

    client = DeviceMqtt(address, f"bench-clear-{uuid.uuid4().hex[:6]}")
    try:
        await client.connect(timeout=30)
    except (OSError, TimeoutError) as exc:
        log.warning("bench_clear_retained_skipped", error=repr(exc))
        return
    try:
        for i, d in enumerate(plan.devices):
            # An empty retained message deletes the retained one (MQTT 3.1.1 §3.3.1.3).
            client.publish_nowait(topic(d.device_id, "status"), b"", 1, retain=True)
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let the socket drain
        # Best effort: a broker that does not answer (the in-process one) must not stop the run.
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(client.publish("anxin/v1/bench/cleared", b"1", 1), 10)
    finally:
        await client.close()


async def _mark_fleet_online(sessions: SessionMaker) -> None:
    """Steady state: the platform already knows every device as online (as after a day's
    running). Bringing ten thousand devices online one by one is a cold start, not this load."""
    async with sessions() as session:
        await session.execute(
            text(
                "UPDATE devices SET online = true, last_seen_at = now(), "
                "offline_after = now() + make_interval(secs => heartbeat_interval_s * 3)"
            )
        )
        await session.commit()

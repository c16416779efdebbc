"""`anxin bench`: N homes on N MQTT connections, heartbeats plus an SOS rate, and the figures.

What it measures, per SOS press (each press is by a different home, so each must be exactly one
new alert):

* SOS → device ack: from the first publish to the platform's ack on the device's `ack` topic;
* SOS → SMS request: from the first publish to the moment the Twilio-compatible endpoint
  receives the POST of the nearest aide's call-out (the endpoint runs in this process);
* lost: presses with no alert in the database at the end; duplicated: a call-out requested
  more than once for one alert and responder, or more alerts than presses.

The platform runs in this process (default), as `anxin run <role>` subprocesses (`--fault`
needs that: a role is killed with SIGKILL mid-run and started again), or elsewhere
(`--external`). Before the measured phase every device is marked as known and online in the
scratch database: the bench measures the steady state, not the cold start of a fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import random
import resource
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select, text
from sqlmodel import col

from alert_service.models import Alert
from anxin.broker import EmbeddedBroker, embedded_broker, free_port
from anxin.db import SessionMaker, make_sessionmaker
from anxin.logging import get_logger
from anxin.mqtt import BrokerAddress
from anxin.settings import Settings
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
from device_sim.homes import SimDevice, SimHome
from device_sim.region import RegionPlan, generate_region
from device_sim.scenarios import ALERT_CODE, seed_plan
from dispatcher.twilio_sandbox import SandboxMessage, SmsSandbox, create_sandbox_app
from gateway.models import Event
from gateway.worker import STATUS_SETTLE_S

log = get_logger("device_sim.bench")
ROLE_NAMES = ("gateway", "alerts", "dispatcher", "web")
CONNECT_CONCURRENCY = 200


@dataclass
class BenchOptions:
    homes: int = 1000
    sos_rate: float = 5.0
    duration: float = 60.0
    heartbeat_s: float = 60.0
    faults: list[str] = field(default_factory=list)
    external: bool = False
    seed: int = 2026
    spawn_roles: bool = False  # roles as subprocesses even without a fault
    drain_s: float = 60.0  # after the load, how long to wait for the last acks and SMS
    replicas: dict[str, int] = field(default_factory=dict)  # role → processes (spawns roles)
    own_services: bool = False  # a Postgres and a Mosquitto of the bench's own
    flood_rate: float = 0.0  # one home's SOS button sends this many SOS per second
    flood_s: float = 5.0  # for this many seconds (from the start of the load)
    power_cut: str | None = None  # TOWNSHIP@SECONDS: that township's homes lose mains power
    # SOS from this many other homes before the load, one a second, left out of every figure:
    # the first SOS through roles just started (new connections, cold caches) is slow whatever
    # the load, and with 100 presses a run it alone would be the p99 being compared.
    warmup: int = 0


@dataclass
class Percentiles:
    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, seconds: list[float]) -> Percentiles:
        if not seconds:
            return cls(0, None, None, None, None)
        ordered = sorted(seconds)

        def at(q: float) -> float:
            # nearest rank: the smallest value with at least q of the samples at or below it
            index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
            return round(ordered[index] * 1000, 1)

        return cls(len(ordered), at(0.50), at(0.95), at(0.99), round(ordered[-1] * 1000, 1))


@dataclass
class HopFigures:
    """One hop of an SOS's way to the aide's SMS, over the presses that made it through."""

    hop: str
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    count: int


@dataclass
class SlowPress:
    """One of the slowest presses, hop by hop: where its time went, and when in the load."""

    at_s: float  # first publish, seconds into the load
    total_ms: float  # device publish → SMS POST received
    hops_ms: dict[str, float]  # hop (as in the hop table) → ms


@dataclass
class WindowFigures:
    """SOS → SMS request of the presses first sent in one slice of the load, beside how busy
    the whole machine was then (every process, not only the bench's): on a shared machine the
    tail follows the CPU left over."""

    from_s: float
    to_s: float
    presses: int
    p50_ms: float | None
    p99_ms: float | None
    machine_busy: float | None  # share of all cores busy (/proc/stat), 0–1


@dataclass
class SimHealth:
    """Whether the simulator itself kept up: its event loop's lateness (a 50 ms sleep measured
    against the clock) and the heartbeats it sent against those due. A late loop delays every
    timestamp the bench takes (publish, ack, SMS received) and every heartbeat."""

    loop_lag_p50_ms: float | None
    loop_lag_p99_ms: float | None
    loop_lag_max_ms: float | None
    home_beats_due: int  # one per home and heartbeat interval over the load
    home_beats_sent: int
    reconnects: int  # connections the homes had to open again (a keepalive missed, a drop)


@dataclass
class FloodFigures:
    """One SOS button sending far more than any elder could press (a stuck or broken button,
    or someone replaying its messages): the platform must make one alert of it, not thousands,
    and must not slow anyone else's."""

    device_id: str
    rate_per_s: float
    seconds: float
    sent: int
    stored: int  # distinct events of the flood in the database
    alerts: int  # alerts of the flooding device (must be 1)
    trigger_count: int  # of that alert: the presses it took in


@dataclass
class PowerCutFigures:
    """A township's mains power gone: every home there reports `power_lost` from the hub's
    battery and drops off the broker at once (last wills)."""

    township: str
    at_s: float
    homes: int
    hubs: int  # homes with a hub (the device that reports mains power)
    power_lost_events: int  # stored in the database
    offline_hubs: int  # hubs the platform marked offline (from their last wills)


@dataclass
class BenchReport:
    homes: int
    devices: int
    connected_homes: int
    duration_s: float
    sos_rate: float
    heartbeat_s: float
    messages_sent: int
    messages_per_s: float
    heartbeats_sent: int
    sos_sent: int
    sos_acked: int
    sos_to_ack: Percentiles
    sos_to_sms: Percentiles
    alerts_in_db: int
    sos_events_in_db: int
    lost: int
    duplicated_alerts: int
    duplicated_sms: int
    resends: int
    sms_requests: int
    faults: list[str]
    platform: str
    notes: list[str] = field(default_factory=list)
    flood: FloodFigures | None = None
    power_cut: PowerCutFigures | None = None
    # Where an SOS's time goes, hop by hop (see `_hop_breakdown`), and the simulator's health.
    hops: list[HopFigures] = field(default_factory=list)
    slowest: list[SlowPress] = field(default_factory=list)
    windows: list[WindowFigures] = field(default_factory=list)
    sim: SimHealth | None = None
    # Every press that got its call-out: (second of the load it was sent in, SOS → SMS request
    # in seconds), so that runs can be pooled or cut to a window (bench/floods.py).
    sms_samples: list[tuple[float, float]] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)  # process → CPU seconds under load
    load_average: list[float] = field(default_factory=list)  # 1-min load at start and end

    @property
    def ok(self) -> bool:
        one_flood_alert = self.flood is None or self.flood.alerts == 1
        return (
            self.lost == 0
            and self.duplicated_alerts == 0
            and self.duplicated_sms == 0
            and one_flood_alert
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"ok": self.ok}, indent=2, ensure_ascii=False)


def raise_file_limit() -> int:
    """One socket per home: lift the soft limit on open files to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


SERVICE_FAULTS = ("mosquitto", "postgres")


def parse_fault(spec: str) -> tuple[str, float]:
    """`ROLE@SECONDS` (every replica of the role), `ROLE#N@SECONDS` (replica N), or
    `mosquitto@SECONDS` / `postgres@SECONDS` (the bench's own broker or database restarted)."""
    target, _, at = spec.partition("@")
    role, _, replica = target.partition("#")
    known = role in ROLE_NAMES or (role in SERVICE_FAULTS and not replica)
    if not known or not at or (replica and not replica.isdigit()):
        raise ValueError(
            f"--fault {spec!r}: use ROLE@SECONDS or ROLE#N@SECONDS with ROLE "
            "gateway|alerts|dispatcher|web, or mosquitto@SECONDS / postgres@SECONDS"
        )
    return target, float(at)


def parse_replicas(specs: list[str]) -> dict[str, int]:
    """`gateway=2` … → {"gateway": 2}; roles not named run once."""
    replicas: dict[str, int] = {}
    for spec in specs:
        role, _, n = spec.partition("=")
        if role not in ROLE_NAMES or not n.isdigit() or int(n) < 1:
            raise ValueError(f"--replicas {spec!r}: use ROLE=N with ROLE {'|'.join(ROLE_NAMES)}")
        if role == "web" and int(n) > 1:
            raise ValueError("--replicas web=N: one web role per bench (it owns the HTTP port)")
        replicas[role] = int(n)
    return replicas


# --- the platform under load -----------------------------------------------------------------


@dataclass
class _Target:
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


def _machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU jiffies of the whole machine since boot (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


class _LoopLag:
    """This process's event-loop lateness: how much later than asked a short sleep returns;
    and, once a second, the machine's CPU counters (for the per-window table)."""

    PERIOD_S = 0.05

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.machine: list[tuple[float, int, int]] = []  # (monotonic, busy, total jiffies)

    async def run(self, stop: asyncio.Event) -> None:
        next_machine = 0.0
        while not stop.is_set():
            began = time.monotonic()
            if began >= next_machine and (jiffies := _machine_jiffies()) is not None:
                self.machine.append((began, *jiffies))
                next_machine = began + 1.0
            await asyncio.sleep(self.PERIOD_S)
            self.samples.append(max(0.0, time.monotonic() - began - self.PERIOD_S))

    def busy_between(self, start: float, end: float) -> float | None:
        inside = [m for m in self.machine if start - 0.5 <= m[0] <= end + 0.5]
        if len(inside) < 2 or inside[-1][2] == inside[0][2]:
            return None
        return round((inside[-1][1] - inside[0][1]) / (inside[-1][2] - inside[0][2]), 2)

    def figures(self) -> tuple[float | None, float | None, float | None]:
        p = Percentiles.of(self.samples)
        return p.p50_ms, p.p99_ms, p.max_ms


def _process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process (Linux /proc), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_pids(postgres: OwnPostgres) -> list[int]:
    """The bench's own Postgres: its postmaster and every backend (its children)."""
    try:
        postmaster = int((postgres.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == postmaster:
                pids.append(int(entry.name))
    return pids


def _cpu_snapshot(target: _Target) -> dict[str, float]:
    """CPU seconds so far of each process the bench can see: itself (homes, sandbox and, by
    default, the roles), the role processes, its own Mosquitto and Postgres (backends that
    ended since are not counted)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    seconds = {"bench": usage.ru_utime + usage.ru_stime}
    if target.roles is not None:
        for name, proc in target.roles.procs.items():
            if (cpu := _process_cpu_s(proc.pid)) is not None:
                seconds[name] = cpu
    broker = target.mosquitto.process if target.mosquitto is not None else None
    if broker is not None and (cpu := _process_cpu_s(broker.pid)) is not None:
        seconds["mosquitto"] = cpu
    if target.postgres is not None:
        seconds["postgres"] = sum(
            cpu for pid in _postgres_pids(target.postgres) if (cpu := _process_cpu_s(pid))
        )
    return seconds


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


@contextlib.asynccontextmanager
async def _platform(
    settings: Settings, options: BenchOptions, plan: RegionPlan
) -> AsyncIterator[_Target]:
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
            yield _Target(
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
        await _clear_retained_statuses(BrokerAddress.parse(mqtt_url), plan)
        await _mark_fleet_online(sessions)
        if spawn:
            sandbox, roles = await stack.enter_async_context(
                spawned_roles(url, mqtt_url, options.replicas)
            )
            yield _Target(
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
            yield _Target(
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


# --- the load ------------------------------------------------------------------------------------


@dataclass
class _Counters:
    first_send: dict[str, float] = field(default_factory=dict)  # event_id → monotonic
    ack_at: dict[str, float] = field(default_factory=dict)
    alert_of: dict[str, str] = field(default_factory=dict)  # event_id → alert code
    callout_at: dict[str, float] = field(default_factory=dict)  # alert code → first call-out
    callouts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (phone, code)
    sent_event_ids: list[str] = field(default_factory=list)
    # Wall-clock twins (time.time()) of first_send and callout_at, to set beside the
    # timestamps the roles and Postgres store (same machine, same clock).
    first_send_wall: dict[str, float] = field(default_factory=dict)
    callout_wall: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    resends: int = 0


async def run_bench(
    settings: Settings, options: BenchOptions, *, console: Console | None = None
) -> BenchReport:
    console = console or Console()
    faults = [parse_fault(f) for f in options.faults]
    limit = raise_file_limit()
    if options.homes + 200 > limit:
        console.print(f"[yellow]open-file limit {limit} is below {options.homes} homes + margin[/]")
    presses = round(options.sos_rate * options.duration)
    if presses > options.homes:
        raise ValueError(
            f"{presses} presses need as many homes (each press is a new alert); have {options.homes}"
        )
    plan = generate_region(options.homes, options.seed)
    counters = _Counters()
    notes: list[str] = []

    async with _platform(settings, options, plan) as target:
        by_elder: dict[str, list[SimDevice]] = {}
        for d in plan.devices:
            by_elder.setdefault(d.elder_code, []).append(
                SimDevice(d.device_id, d.kind.value, d.password, int(options.heartbeat_s))
            )
        homes = [
            SimHome(target.mqtt, by_elder[e.code], name=e.code, resend_after_s=5.0)
            for e in plan.elders
        ]

        def on_sms(message: SandboxMessage) -> None:
            if "回1" not in message.body and "Reply 1" not in message.body:
                return
            found = ALERT_CODE.search(message.body)
            if found is None:
                return
            code = found.group(0)
            counters.callout_at.setdefault(code, time.monotonic())
            counters.callout_wall.setdefault(code, time.time())
            counters.callouts[(message.to, code)] += 1

        unsubscribe = target.sandbox.subscribe(on_sms)
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        heartbeats_sent = 0
        home_beats = 0
        reconnects = 0
        lag = _LoopLag()
        try:
            with progress:
                connecting = progress.add_task("connect homes", total=len(homes), info="")
                semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)

                async def connect(home: SimHome) -> bool:
                    async with semaphore:
                        try:
                            await home.connect(announce=False)
                            return True
                        except (OSError, TimeoutError) as exc:
                            log.warning("bench_connect_failed", home=home.name, error=repr(exc))
                            return False
                        finally:
                            progress.advance(connecting)

                connected = sum(await asyncio.gather(*(connect(h) for h in homes)))
                # Ten thousand homes are a few million long-lived objects (sockets, streams,
                # tasks): out of the cyclic collector's walks, which otherwise stalled this
                # process (and every timestamp it takes) for hundreds of milliseconds.
                gc.collect()
                gc.freeze()
                live = [h for h in homes if h.client.is_connected]
                if not live:
                    raise ConnectionError(f"no home could connect to the broker at {target.mqtt}")

                # Heartbeats: every home once per interval, spread evenly (a real fleet's phases).
                stop = asyncio.Event()

                async def beat_loop() -> None:
                    # Paced by the clock, not by counting ticks: a tick that comes late sends
                    # what fell due meanwhile, so the platform sees the nominal heartbeat load
                    # even when this process lags (the lag is measured and reported).
                    nonlocal heartbeats_sent, home_beats
                    rate = len(live) / options.heartbeat_s
                    order = list(live)
                    random.shuffle(order)
                    began = time.monotonic()
                    while not stop.is_set():
                        due = int((time.monotonic() - began) * rate)
                        while home_beats < due:
                            heartbeats_sent += order[home_beats % len(order)].heartbeat()
                            home_beats += 1
                        await asyncio.sleep(0.1)

                # The flooding home and the homes of the power cut press nothing themselves:
                # the figures are of everyone else's SOS.
                flood_home = live[-1] if options.flood_rate > 0 else None
                cut_township, cut_at = (
                    parse_power_cut(options.power_cut) if options.power_cut else ("", 0.0)
                )
                cut_elders = elders_of_township(plan, cut_township) if cut_township else set()
                cut_homes = [h for h in live if h.name in cut_elders]
                pressers = [h for h in live if h is not flood_home and h.name not in cut_elders]
                if presses + options.warmup > len(pressers):
                    raise ValueError(
                        f"{presses} presses and {options.warmup} warm-up presses need as many "
                        f"homes outside the flood and the power cut; have {len(pressers)}"
                    )
                picked = random.Random(options.seed).sample(pressers, presses + options.warmup)
                chosen, warming = picked[:presses], picked[presses:]
                if cut_homes and target.roles is not None and target.roles.started_at:
                    # A cut in steady state: in the gateways' first STATUS_SETTLE_S after they
                    # connect, a will waits out that window (a broker restart's wills), and the
                    # cut's work would fall after the load instead of in it.
                    wait = target.roles.started_at + STATUS_SETTLE_S + 1
                    if (early := wait - (time.monotonic() + cut_at)) > 0:
                        console.print(f"waiting {early:.0f} s: the gateways' settle window")
                        await asyncio.sleep(early)
                if warming:
                    warm = progress.add_task("warm-up", total=len(warming), info="")
                    for home in warming:
                        with contextlib.suppress(TimeoutError):
                            await home.send_event(
                                home.device("sos_button").device_id, "sos", give_up_after_s=30
                            )
                        progress.advance(warm)
                        await asyncio.sleep(1)
                loading = progress.add_task("load", total=options.duration, info="")
                press_tasks: list[asyncio.Task[None]] = []

                async def press(home: SimHome) -> None:
                    device = home.device("sos_button").device_id

                    def sent(event_id: str) -> None:
                        counters.first_send[event_id] = time.monotonic()
                        counters.first_send_wall[event_id] = time.time()
                        counters.sent_event_ids.append(event_id)

                    try:
                        ack = await home.send_event(
                            device,
                            "sos",
                            give_up_after_s=options.duration + options.drain_s,
                            on_first_send=sent,
                        )
                    except TimeoutError:
                        counters.failed += 1
                        return
                    counters.ack_at[ack.event_id] = counters.first_send[ack.event_id] + ack.seconds
                    counters.resends += ack.sends - 1
                    if ack.alert_id:
                        counters.alert_of[ack.event_id] = ack.alert_id

                beats = asyncio.create_task(beat_loop())
                lagging = asyncio.create_task(lag.run(stop))
                cpu_before = _cpu_snapshot(target)
                load_before = os.getloadavg()[0]
                fault_tasks = [
                    asyncio.create_task(_fault(target, role, at, console)) for role, at in faults
                ]
                flooder = (
                    Flood(flood_home, options.flood_rate, min(options.flood_s, options.duration))
                    if flood_home is not None
                    else None
                )
                if flooder is not None:
                    fault_tasks.append(asyncio.create_task(flooder.run()))
                if cut_homes:
                    fault_tasks.append(
                        asyncio.create_task(cut_power(cut_homes, cut_at, cut_township, console))
                    )
                started = time.monotonic()
                for n, home in enumerate(chosen):
                    due = started + n / options.sos_rate
                    if (wait := due - time.monotonic()) > 0:
                        await asyncio.sleep(wait)
                    press_tasks.append(asyncio.create_task(press(home)))
                    progress.update(
                        loading,
                        completed=min(options.duration, time.monotonic() - started),
                        info=f"{len(press_tasks)} SOS, {len(counters.ack_at)} acked",
                    )
                while (elapsed := time.monotonic() - started) < options.duration:
                    progress.update(
                        loading,
                        completed=elapsed,
                        info=f"{len(press_tasks)} SOS, {len(counters.ack_at)} acked",
                    )
                    await asyncio.sleep(0.5)
                load_seconds = time.monotonic() - started
                cpu_after = _cpu_snapshot(target)
                load_after = os.getloadavg()[0]
                progress.update(loading, completed=options.duration)
                stop.set()
                await beats
                await lagging
                draining = progress.add_task("drain", total=len(press_tasks), info="")
                deadline = time.monotonic() + options.drain_s
                while time.monotonic() < deadline:
                    done = sum(t.done() for t in press_tasks)
                    answered = sum(
                        1 for code in counters.alert_of.values() if code in counters.callout_at
                    )
                    progress.update(draining, completed=done, info=f"{answered} call-outs")
                    if done == len(press_tasks) and answered >= len(counters.alert_of):
                        break
                    await asyncio.sleep(0.25)
                # A press still unacked now counts as unacked (its alert may still be there).
                for task in (*fault_tasks, *press_tasks):
                    task.cancel()
                await asyncio.gather(*fault_tasks, *press_tasks, return_exceptions=True)
                # The delivery receipts of the last SMS are still on their way (the sandbox
                # posts them 0.2 s after each SMS): let them reach the platform before it stops,
                # or they would count as receipts the platform could not take.
                settle = getattr(target.sandbox, "settle", None)
                if settle is not None:
                    await settle(max(5.0, deadline - time.monotonic()))
                reconnects = sum(max(0, h.client.connect_count - 1) for h in live)
        finally:
            unsubscribe()
            await asyncio.gather(
                *(h.close(say_offline=False) for h in homes), return_exceptions=True
            )

        alerts_in_db, sos_events = await _database_counts(
            target.sessions, [h.device("sos_button").device_id for h in chosen], counters
        )
        hops, slowest = await _hop_breakdown(target.sessions, counters, started)
        sms_requests = target.sandbox.requests_received
        flood = await flooder.figures(target.sessions) if flooder is not None else None
        power_cut = (
            await _power_cut_figures(target.sessions, cut_homes, cut_township, cut_at)
            if cut_homes
            else None
        )

    ack_latency = [counters.ack_at[e] - counters.first_send[e] for e in counters.ack_at]
    # Every press that got its call-out: (seconds into the load it was sent, SOS → SMS request).
    called_out = [
        (
            counters.first_send[event_id] - started,
            counters.callout_at[code] - counters.first_send[event_id],
        )
        for event_id, code in counters.alert_of.items()
        if code in counters.callout_at
    ]
    windows: list[WindowFigures] = []
    window_s = 10.0
    slices = max(1, round(load_seconds / window_s))
    for n in range(slices):
        # The last slice takes the presses dispatched a moment after the nominal end too.
        lo = n * window_s
        hi = (n + 1) * window_s if n < slices - 1 else math.inf
        p = Percentiles.of([latency for at, latency in called_out if lo <= at < hi])
        end = min(hi, load_seconds)
        windows.append(
            WindowFigures(
                round(lo),
                round(end),
                p.count,
                p.p50_ms,
                p.p99_ms,
                lag.busy_between(started + lo, started + end),
            )
        )
    sms_samples = [(round(at, 3), round(latency, 4)) for at, latency in called_out]
    sms_latency = [latency for _, latency in called_out]
    sent = len(counters.sent_event_ids)
    lost = sent - alerts_in_db if alerts_in_db < sent else 0
    missing_sms = len(counters.alert_of) - len(sms_latency)
    if missing_sms:
        notes.append(f"{missing_sms} acked alerts had no call-out SMS by the end of the drain")
    if unacked := sent - len(counters.ack_at):
        notes.append(f"{unacked} presses were not acked by the end of the drain")
    webhooks_failed = getattr(target.sandbox, "webhooks_failed", 0)
    if webhooks_failed:
        notes.append(f"{webhooks_failed} delivery receipts could not be posted to the platform")
    messages = heartbeats_sent + sent + counters.resends
    return BenchReport(
        homes=options.homes,
        devices=len(plan.devices),
        connected_homes=connected,
        duration_s=round(load_seconds, 1),
        sos_rate=options.sos_rate,
        heartbeat_s=options.heartbeat_s,
        messages_sent=messages,
        messages_per_s=round(messages / load_seconds, 1),
        heartbeats_sent=heartbeats_sent,
        sos_sent=sent,
        sos_acked=len(counters.ack_at),
        sos_to_ack=Percentiles.of(ack_latency),
        sos_to_sms=Percentiles.of(sms_latency),
        alerts_in_db=alerts_in_db,
        sos_events_in_db=sos_events,
        lost=lost,
        duplicated_alerts=max(0, alerts_in_db - sent),
        duplicated_sms=sum(n - 1 for n in counters.callouts.values() if n > 1),
        resends=counters.resends,
        sms_requests=sms_requests,
        faults=options.faults,
        platform=target.label,
        notes=notes,
        flood=flood,
        power_cut=power_cut,
        hops=hops,
        slowest=slowest,
        windows=windows,
        sms_samples=sms_samples,
        sim=SimHealth(
            *lag.figures(),
            home_beats_due=round(len(live) * load_seconds / options.heartbeat_s),
            home_beats_sent=home_beats,
            reconnects=reconnects,
        ),
        cpu_s={
            name: round(cpu_after[name] - before, 1)
            for name, before in cpu_before.items()
            if name in cpu_after
        },
        load_average=[round(load_before, 2), round(load_after, 2)],
    )


def parse_power_cut(spec: str) -> tuple[str, float]:
    township, _, at = spec.partition("@")
    try:
        return township, float(at or "0")
    except ValueError as exc:
        raise ValueError(f"--power-cut {spec!r}: use TOWNSHIP@SECONDS, e.g. T01@10") from exc


def elders_of_township(plan: RegionPlan, township: str) -> set[str]:
    villages = {v.code for v in plan.villages if v.parent_code == township}
    if not villages:
        raise ValueError(
            f"no township {township!r} in this region; there are "
            + ", ".join(t.code for t in plan.townships)
        )
    return {e.code for e in plan.elders if e.village_code in villages}


async def cut_power(homes: list[SimHome], at: float, township: str, console: Console) -> None:
    """As in device_sim.scenarios: each hub reports `power_lost` on its battery, then every
    home's modem goes down without a DISCONNECT (the broker publishes the last wills)."""
    await asyncio.sleep(at)
    console.print(f"[yellow]power cut: {len(homes)} homes of {township} at {at:g} s[/]")
    reports = [
        asyncio.create_task(
            h.send_event(h.device("hub").device_id, "power_lost", give_up_after_s=8)
        )
        for h in homes
        if h.has("hub")
    ]
    # The hub's battery lasts a few seconds of resending; then the lights go out.
    await asyncio.wait(reports, timeout=8) if reports else None
    for task in reports:
        task.cancel()
    await asyncio.gather(*reports, return_exceptions=True)
    for home in homes:
        await home.close(lose_power=True)


async def _power_cut_figures(
    sessions: SessionMaker, homes: list[SimHome], township: str, at: float
) -> PowerCutFigures:
    """What the platform made of the cut: the hubs' `power_lost` events, and the hubs it took
    offline from their last wills (waiting up to half a minute: the gateway lets a burst of
    statuses settle before it believes them)."""
    from anxin.models import Device

    hubs = [h.device("hub").device_id for h in homes if h.has("hub")]
    lost = offline = 0
    for _ in range(60):
        async with sessions() as session:
            lost = int(
                await session.scalar(
                    select(func.count())
                    .select_from(Event)
                    .where(col(Event.device_id).in_(hubs), col(Event.type) == "power_lost")
                )
                or 0
            )
            offline = int(
                await session.scalar(
                    select(func.count())
                    .select_from(Device)
                    .where(col(Device.id).in_(hubs), ~col(Device.online))
                )
                or 0
            )
        if offline >= len(hubs):
            break
        await asyncio.sleep(0.5)
    return PowerCutFigures(township, at, len(homes), len(hubs), lost, offline)


class Flood:
    """One home's SOS button publishing `rate` SOS a second, each with its own event id, at
    QoS 1 and without waiting for acks (a stuck button does not wait)."""

    def __init__(self, home: SimHome, rate: float, seconds: float) -> None:
        self.home = home
        self.device_id = home.device("sos_button").device_id
        self.rate = rate
        self.seconds = seconds
        self.sent: list[str] = []
        self.prefix = f"flood-{uuid.uuid4().hex[:6]}"

    async def run(self) -> None:
        from anxin.schemas import event_json, topic

        started = time.monotonic()
        subject = topic(self.device_id, "event")
        tick = 0.01
        while (elapsed := time.monotonic() - started) < self.seconds:
            due = int(elapsed * self.rate) + 1
            while len(self.sent) < due:
                event_id = f"{self.prefix}-{len(self.sent)}"
                self.home.client.publish_nowait(subject, event_json(event_id, "sos"), 1)
                self.sent.append(event_id)
            await asyncio.sleep(tick)

    async def figures(self, sessions: SessionMaker) -> FloodFigures:
        """What reached the platform is in the database: wait (at most a minute) until the
        flood's backlog has settled, then count its events and its alerts."""
        last: tuple[int, int, int] | None = None
        for round_ in range(120):
            async with sessions() as session:
                stored = int(
                    await session.scalar(
                        select(func.count())
                        .select_from(Event)
                        .where(
                            col(Event.device_id) == self.device_id,
                            col(Event.event_id).like(f"{self.prefix}-%"),
                        )
                    )
                    or 0
                )
                counts = (
                    (
                        await session.execute(
                            select(col(Alert.trigger_count)).where(
                                col(Alert.device_id) == self.device_id, col(Alert.kind) == "sos"
                            )
                        )
                    )
                    .scalars()
                    .all()
                )
            now = (stored, len(counts), int(sum(counts)))
            if now == last and (stored >= len(self.sent) or round_ > 10):
                break
            last = now
            await asyncio.sleep(0.5)
        assert last is not None
        return FloodFigures(
            device_id=self.device_id,
            rate_per_s=self.rate,
            seconds=self.seconds,
            sent=len(self.sent),
            stored=last[0],
            alerts=last[1],
            trigger_count=last[2],
        )


HOPS_WITH_COMMITS = (
    ("device publish → gateway batch", "publish", "gw_batch"),
    ("gateway batch → gateway commit", "gw_batch", "gw_commit"),
    ("gateway commit → device ack received", "gw_commit", "ack"),
    ("gateway commit → watcher claims", "gw_commit", "watcher"),
    ("watcher claims → watcher commit (outbox row)", "watcher", "watcher_commit"),
    ("watcher commit → SMS POST received", "watcher_commit", "post"),
    ("device publish → SMS POST received", "publish", "post"),
)
HOPS_WITHOUT_COMMITS = (
    ("device publish → gateway batch", "publish", "gw_batch"),
    ("gateway batch → device ack received", "gw_batch", "ack"),
    ("gateway batch → watcher claims", "gw_batch", "watcher"),
    ("watcher claims → SMS POST received", "watcher", "post"),
    ("device publish → SMS POST received", "publish", "post"),
)


SLOWEST_SHOWN = 5


async def _hop_breakdown(
    sessions: SessionMaker, counters: _Counters, started: float
) -> tuple[list[HopFigures], list[SlowPress]]:
    """Per hop, p50/p99/max over every press that reached its call-out SMS, and the slowest
    presses hop by hop (a tail traced to its hop and its moment: a fault, a power cut).

    From the bench (wall clock): the device's first publish, the device ack, the SMS POST
    received. From the rows: the gateway batch's clock (`events.received_at`), the watcher
    tick's clock (`alerts.ranked_at`). With `track_commit_timestamp` on (the bench turns it on
    in its own Postgres, `--own-services`), the commits too: the gateway's (the event row), the
    watcher's (the alert's first `asked` timeline row, never updated). The dispatcher's commit
    is not on a row (the SMS row is updated again by the delivery receipts)."""
    sample = {
        event_id: int(code[1:])
        for event_id, code in counters.alert_of.items()
        if code in counters.callout_wall and event_id in counters.first_send_wall
    }
    if not sample:
        return [], []
    async with sessions() as session:
        commits = (
            await session.scalar(text("SELECT current_setting('track_commit_timestamp')"))
        ) == "on"

        def ts(column: str) -> str:
            if not commits:
                return "NULL::timestamptz"
            return f"pg_xact_commit_timestamp({column})"

        rows = (
            await session.execute(
                text(
                    f"""
                    SELECT e.event_id, e.received_at, a.ranked_at,
                           {ts("e.xmin")}, {ts("t.xmin")}
                    FROM events e
                    JOIN alerts a ON a.id = e.alert_id
                    LEFT JOIN LATERAL (
                        SELECT xmin FROM alert_timeline
                        WHERE alert_id = a.id AND action = 'asked' ORDER BY id LIMIT 1
                    ) t ON true
                    WHERE e.event_id = ANY(:event_ids) AND e.type = 'sos'
                    """
                ),
                {"event_ids": list(sample)},
            )
        ).all()
    hops = HOPS_WITH_COMMITS if commits else HOPS_WITHOUT_COMMITS
    spans: dict[str, list[float]] = {name: [] for name, _, _ in hops}
    presses: list[SlowPress] = []
    for event_id, received, ranked, gw_commit, watcher_commit in rows:
        code = f"A{sample[event_id]}"
        publish = counters.first_send_wall[event_id]
        ack = counters.ack_at.get(event_id)
        at: dict[str, float | None] = {
            "publish": publish,
            "gw_batch": received.timestamp() if received else None,
            "gw_commit": gw_commit.timestamp() if gw_commit else None,
            "ack": publish + (ack - counters.first_send[event_id]) if ack else None,
            "watcher": ranked.timestamp() if ranked else None,
            "watcher_commit": watcher_commit.timestamp() if watcher_commit else None,
            "post": counters.callout_wall[code],
        }
        press: dict[str, float] = {}
        for name, start, end in hops:
            a, b = at[start], at[end]
            if a is not None and b is not None:
                spans[name].append(b - a)
                press[name] = round((b - a) * 1000, 1)
        presses.append(
            SlowPress(
                round(counters.first_send[event_id] - started, 1),
                round((counters.callout_wall[code] - publish) * 1000, 1),
                press,
            )
        )
    figures = []
    for name, _, _ in hops:
        p = Percentiles.of(spans[name])
        figures.append(HopFigures(name, p.p50_ms, p.p99_ms, p.max_ms, p.count))
    presses.sort(key=lambda p: p.total_ms, reverse=True)
    return figures, presses[:SLOWEST_SHOWN]


async def _database_counts(
    sessions: SessionMaker, sos_devices: list[str], counters: _Counters
) -> tuple[int, int]:
    """Every SOS sent must be one event and one alert in the database."""
    async with sessions() as session:
        events = int(
            await session.scalar(
                select(func.count())
                .select_from(Event)
                .where(col(Event.event_id).in_(counters.sent_event_ids), col(Event.type) == "sos")
            )
            or 0
        )
        alerts = int(
            await session.scalar(
                select(func.count())
                .select_from(Alert)
                .where(col(Alert.kind) == "sos", col(Alert.device_id).in_(sos_devices))
            )
            or 0
        )
    return alerts, events


async def _fault(target: _Target, role: str, at: float, console: Console) -> None:
    await asyncio.sleep(at)
    await inject_fault(target.roles, target.postgres, target.mosquitto, role, console)


async def inject_fault(
    roles: RoleProcesses | None,
    postgres: OwnPostgres | None,
    mosquitto: OwnMosquitto | None,
    target: str,
    console: Console | None = None,
) -> None:
    """Kill a role (all its replicas, or `role#n`) with SIGKILL and start it again one second
    later; or restart the bench's own Mosquitto (SIGTERM) or Postgres (pg_ctl stop -m fast)."""

    def say(text: str) -> None:
        if console is not None:
            console.print(f"[yellow]fault: {text}[/]")

    if target == "mosquitto":
        if mosquitto is None:
            raise ValueError("a mosquitto fault needs the bench's own broker")
        say("restarting Mosquitto")
        await mosquitto.restart()
        say("Mosquitto is back")
    elif target == "postgres":
        if postgres is None:
            raise ValueError("a postgres fault needs the bench's own Postgres")
        say("restarting Postgres")
        await postgres.restart()
        say("Postgres is back")
    else:
        if roles is None:
            raise ValueError("--fault needs the roles as subprocesses (not --external)")
        say(f"killing {target} (SIGKILL)")
        await roles.restart(target)
        say(f"{target} started again")


def print_report(report: BenchReport, console: Console) -> None:
    table = Table(
        title=f"anxin bench — {report.homes} homes, {report.sos_rate:g} SOS/s, {report.duration_s:g} s ({report.platform})"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, Any]] = [
        ("connected homes", f"{report.connected_homes}/{report.homes} ({report.devices} devices)"),
        ("messages sent / s", f"{report.messages_per_s:g} ({report.messages_sent} total)"),
        ("SOS sent / acked", f"{report.sos_sent} / {report.sos_acked} (resends {report.resends})"),
    ]
    for name, p in (
        ("SOS → device ack", report.sos_to_ack),
        ("SOS → SMS request", report.sos_to_sms),
    ):
        rows.append(
            (
                f"{name} p50 / p95 / p99 / max ms",
                f"{p.p50_ms} / {p.p95_ms} / {p.p99_ms} / {p.max_ms} (n={p.count})",
            )
        )
    rows += [
        ("alerts in database / SOS events", f"{report.alerts_in_db} / {report.sos_events_in_db}"),
        ("lost", report.lost),
        (
            "duplicated alerts / call-out SMS",
            f"{report.duplicated_alerts} / {report.duplicated_sms}",
        ),
        ("SMS requests at the endpoint", report.sms_requests),
        ("faults", ", ".join(report.faults) or "none"),
    ]
    if (f := report.flood) is not None:
        rows += [
            (
                "flood: SOS sent / stored",
                f"{f.sent} / {f.stored} ({f.rate_per_s:g}/s for {f.seconds:g} s, {f.device_id})",
            ),
            ("flood: alerts / trigger count", f"{f.alerts} / {f.trigger_count}"),
        ]
    if (c := report.power_cut) is not None:
        rows += [
            ("power cut: township / homes", f"{c.township} at {c.at_s:g} s / {c.homes}"),
            (
                "power cut: hubs / power_lost stored / hubs offline",
                f"{c.hubs} / {c.power_lost_events} / {c.offline_hubs}",
            ),
        ]
    if (h := report.sim) is not None:
        rows += [
            (
                "simulator loop lag p50 / p99 / max ms",
                f"{h.loop_lag_p50_ms} / {h.loop_lag_p99_ms} / {h.loop_lag_max_ms}",
            ),
            (
                "simulator heartbeats sent / due (homes), reconnects",
                f"{h.home_beats_sent} / {h.home_beats_due}, {h.reconnects}",
            ),
        ]
    if report.load_average:
        rows.append(
            (
                "load average (1 min) at start / end of load",
                " / ".join(map(str, report.load_average)),
            )
        )
    if report.cpu_s:
        rows.append(
            (
                f"CPU s over the {report.duration_s:g} s load",
                ", ".join(f"{k} {v:g}" for k, v in report.cpu_s.items()),
            )
        )
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    if report.hops:
        hops = Table(title="SOS → SMS request, hop by hop (presses that got their call-out)")
        hops.add_column("hop")
        for column in ("p50 ms", "p99 ms", "max ms", "n"):
            hops.add_column(column, justify="right")
        for n, hop in enumerate(report.hops, 1):
            hops.add_row(
                f"{n}. {hop.hop}", str(hop.p50_ms), str(hop.p99_ms), str(hop.max_ms), str(hop.count)
            )
        console.print(hops)
    if report.slowest:
        names = [hop.hop for hop in report.hops if hop.hop in report.slowest[0].hops_ms]
        slow = Table(title="the slowest presses, hop by hop (ms; hops numbered as above)")
        slow.add_column("at s", justify="right")
        slow.add_column("total", justify="right")
        for n, _ in enumerate(names, 1):
            slow.add_column(f"hop {n}", justify="right")
        for press in report.slowest:
            cells = [str(press.hops_ms.get(name, "—")) for name in names]
            slow.add_row(f"{press.at_s:g}", str(press.total_ms), *cells)
        console.print(slow)
    if report.windows:
        slices = Table(title="SOS → SMS request by 10 s of load, beside the machine's CPU")
        for column in ("seconds", "presses", "p50 ms", "p99 ms", "machine busy"):
            slices.add_column(column, justify="right")
        for w in report.windows:
            busy = f"{w.machine_busy:.0%}" if w.machine_busy is not None else "—"
            slices.add_row(
                f"{w.from_s:g}–{w.to_s:g}", str(w.presses), str(w.p50_ms), str(w.p99_ms), busy
            )
        console.print(slices)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print("[green]OK[/]" if report.ok else "[bold red]LOST OR DUPLICATED[/]")

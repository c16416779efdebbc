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
import json
import math
import os
import random
import resource
import signal
import sys
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
from anxin.broker import EmbeddedBroker, free_port
from anxin.db import SessionMaker, make_sessionmaker
from anxin.logging import get_logger
from anxin.mqtt import BrokerAddress
from anxin.settings import Settings
from device_sim.harness import (
    SANDBOX_FROM,
    engine_for,
    run_in_process,
    scratch_database,
    serve_app,
)
from device_sim.homes import SimDevice, SimHome
from device_sim.region import RegionPlan, generate_region
from device_sim.scenarios import ALERT_CODE, seed_plan
from dispatcher.twilio_sandbox import SandboxMessage, SmsSandbox, create_sandbox_app
from gateway.models import Event

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

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated_alerts == 0 and self.duplicated_sms == 0

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"ok": self.ok}, indent=2, ensure_ascii=False)


def raise_file_limit() -> int:
    """One socket per home: lift the soft limit on open files to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_fault(spec: str) -> tuple[str, float]:
    role, _, at = spec.partition("@")
    if role not in ("gateway", "alerts", "dispatcher", "web") or not at:
        raise ValueError(
            f"--fault {spec!r}: use ROLE@SECONDS with ROLE gateway|alerts|dispatcher|web"
        )
    return role, float(at)


# --- the platform under load -----------------------------------------------------------------


@dataclass
class _Target:
    sessions: SessionMaker
    mqtt: BrokerAddress
    sandbox: SmsSandbox
    roles: RoleProcesses | None
    label: str


class RoleProcesses:
    """The roles as `anxin run <role>` subprocesses, so one can be killed and started again."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.gateway_id = f"gw-bench-{uuid.uuid4().hex[:6]}"
        self.log_dir = (
            Path(os.environ.get("TMPDIR", "/tmp")) / f"anxin-bench-{uuid.uuid4().hex[:6]}"
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)

    async def start(self, role: str) -> None:
        anxin = Path(sys.executable).with_name("anxin")
        args = [str(anxin), "run", role]
        if role == "gateway":
            # The same id after a restart: the broker hands the new process what it had queued
            # for the old one's persistent session.
            args += ["--gateway-id", self.gateway_id]
        out = (self.log_dir / f"{role}.log").open("ab")
        self.procs[role] = await asyncio.create_subprocess_exec(
            *args, env=self.env, stdout=out, stderr=out
        )

    async def kill(self, role: str) -> None:
        proc = self.procs.get(role)
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()

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


def _sandbox() -> SmsSandbox:
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
        from urllib.parse import urlsplit

        token = settings.twilio_auth_token
        assert token is not None and settings.twilio_account_sid is not None
        sandbox = SmsSandbox(
            token.get_secret_value(),
            settings.twilio_account_sid,
            settings.callback_base + "/twilio/inbound",
        )
        port = urlsplit(settings.twilio_base_url).port or 80
        async with (
            serve_app(create_sandbox_app(sandbox), port),
            engine_for(settings.database_url.get_secret_value()) as engine,
        ):
            sessions = make_sessionmaker(engine)
            await seed_plan(sessions, plan)
            yield _Target(
                sessions,
                BrokerAddress.parse(settings.mqtt_url.get_secret_value()),
                sandbox,
                None,
                "external",
            )
        await sandbox.aclose()
        return

    from device_sim.cli import _server_url

    broker: EmbeddedBroker | None = None
    if settings.mqtt_url is not None:
        mqtt_url = settings.mqtt_url.get_secret_value()
    else:
        broker = EmbeddedBroker()
        await broker.start()
        mqtt_url = broker.url
    try:
        server = await _server_url(settings)
        async with scratch_database(server, "anxin_bench") as url, engine_for(url) as engine:
            sessions = make_sessionmaker(engine)
            await seed_plan(sessions, plan)
            await _clear_retained_statuses(BrokerAddress.parse(mqtt_url), plan)
            await _mark_fleet_online(sessions)
            if options.faults or options.spawn_roles:
                sandbox = _sandbox()
                web_port = free_port()
                sandbox.inbound_url = f"http://127.0.0.1:{web_port}/twilio/inbound"
                async with serve_app(create_sandbox_app(sandbox)) as sandbox_url:
                    env = dict(os.environ) | {
                        "ANXIN_DATABASE_URL": url,
                        "ANXIN_MQTT_URL": mqtt_url,
                        "ANXIN_TWILIO_ACCOUNT_SID": sandbox.account_sid,
                        "ANXIN_TWILIO_AUTH_TOKEN": sandbox.auth_token,
                        "ANXIN_TWILIO_FROM": SANDBOX_FROM,
                        "ANXIN_TWILIO_BASE_URL": sandbox_url,
                        "ANXIN_PUBLIC_URL": f"http://127.0.0.1:{web_port}",
                        "ANXIN_HTTP_PORT": str(web_port),
                        "ANXIN_WATCHER_POLL_MS": "50",
                        "ANXIN_OUTBOX_POLL_MS": "50",
                        "ANXIN_LOG_LEVEL": "warning",
                    }
                    # One gateway: no shared subscription. (A `$share` group keeps the persistent
                    # sessions of earlier runs' gateways as members; the broker hands them their
                    # share of the events, which then wait for the device's resend.)
                    env["ANXIN_MQTT_SHARED_GROUP"] = ""
                    roles = RoleProcesses(env)
                    for role in ROLE_NAMES:
                        await roles.start(role)
                    await asyncio.sleep(5.0)  # imports, connect, subscribe
                    try:
                        yield _Target(
                            sessions,
                            BrokerAddress.parse(mqtt_url),
                            sandbox,
                            roles,
                            "roles as subprocesses",
                        )
                    finally:
                        await roles.stop_all()
                        await sandbox.aclose()
            else:
                async with run_in_process(
                    url, mqtt_url, engine, sandbox_class=BenchSandbox
                ) as platform:
                    yield _Target(
                        sessions,
                        platform.mqtt,
                        platform.sandbox,
                        None,
                        "roles in the bench process",
                    )
    finally:
        if broker is not None:
            await broker.stop()


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
                live = [h for h in homes if h.client.is_connected]
                if not live:
                    raise ConnectionError(f"no home could connect to the broker at {target.mqtt}")

                # Heartbeats: every home once per interval, spread evenly (a real fleet's phases).
                stop = asyncio.Event()

                async def beat_loop() -> None:
                    nonlocal heartbeats_sent
                    per_tick = max(1, round(len(live) / options.heartbeat_s / 10))
                    order = list(live)
                    random.shuffle(order)
                    i = 0
                    while not stop.is_set():
                        for _ in range(per_tick):
                            heartbeats_sent += order[i % len(order)].heartbeat()
                            i += 1
                        await asyncio.sleep(0.1)

                chosen = random.Random(options.seed).sample(live, min(presses, len(live)))
                loading = progress.add_task("load", total=options.duration, info="")
                press_tasks: list[asyncio.Task[None]] = []

                async def press(home: SimHome) -> None:
                    device = home.device("sos_button").device_id

                    def sent(event_id: str) -> None:
                        counters.first_send[event_id] = time.monotonic()
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
                fault_tasks = [
                    asyncio.create_task(_fault(target, role, at, console)) for role, at in faults
                ]
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
                progress.update(loading, completed=options.duration)
                stop.set()
                await beats
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
        finally:
            unsubscribe()
            await asyncio.gather(
                *(h.close(say_offline=False) for h in homes), return_exceptions=True
            )

        alerts_in_db, sos_events = await _database_counts(
            target.sessions, [h.device("sos_button").device_id for h in chosen], counters
        )
        sms_requests = target.sandbox.requests_received

    ack_latency = [counters.ack_at[e] - counters.first_send[e] for e in counters.ack_at]
    sms_latency = []
    for event_id, code in counters.alert_of.items():
        if code in counters.callout_at:
            sms_latency.append(counters.callout_at[code] - counters.first_send[event_id])
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
    )


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
    if target.roles is None:
        raise ValueError("--fault needs the roles as subprocesses (not --external)")
    await asyncio.sleep(at)
    console.print(f"[yellow]fault: killing {role} at {at:g} s[/]")
    await target.roles.kill(role)
    await asyncio.sleep(1.0)
    await target.roles.start(role)
    console.print(f"[yellow]fault: {role} started again[/]")


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
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print("[green]OK[/]" if report.ok else "[bold red]LOST OR DUPLICATED[/]")

"""`anxin demo`: the whole chain in one process on embedded defaults.

Simulated homes connect over MQTT and heartbeat; every so often one presses SOS; the gateway
stores and acks it; the alert service raises the alert and asks the nearest aide; the
dispatcher sends the SMS; a simulated aide's phone replies 1, 2, 3; the alert closes.

Without Twilio credentials the demo runs the project's own Twilio-compatible SMS sandbox and
points the real twilio library at it, so the aides' phones can receive and reply through the
signed webhooks exactly as in the field. With `ANXIN_SMS_PROVIDER=aliyun` (and no AccessKey) it
runs the Aliyun-compatible endpoint instead and points the official Aliyun SDK at it. (`anxin run dispatcher` without credentials keeps SMS
in the outbox instead: there is no phone to deliver to.)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from rich.console import Console
from sqlalchemy import select
from sqlmodel import col

from alert_service.models import Alert
from anxin import auth
from anxin.broker import free_port, port_is_free
from anxin.cli_run import InProcessServer
from anxin.db import transaction
from anxin.models import Elder, pk
from anxin.runtime import ROLES, role_tasks, run_until_stopped
from anxin.services import Services, services
from anxin.settings import Settings
from device_sim.homes import SimDevice, SimHome
from device_sim.phones import Behaviour, PhoneBank, SimPhone, Timing
from device_sim.region.generate import generate_region
from device_sim.region.plan import RegionPlan
from device_sim.region.seed import seed_region
from dispatcher.aliyun_sandbox import AliyunSandbox, create_aliyun_sandbox_app
from dispatcher.twilio_sandbox import SmsSandbox, create_sandbox_app

KIND_ZH = {"sos": "一键呼叫", "fall": "跌倒", "smoke": "烟雾", "gas": "燃气"}


@dataclass
class DemoResult:
    started: float
    first_resolved_s: float | None = None
    pressed: int = 0
    resolved: list[str] = field(default_factory=list)


async def seed(svc: Services, plan: RegionPlan) -> bool:
    async with transaction(svc.sessions) as session:
        result = await seed_region(session, plan, auth.hash_device_password, auth.hash_password)
    return result.created


def _behaviour(index: int) -> Behaviour:
    # A few aides who decline or stay silent, so the ladder is seen moving on.
    if index % 9 == 4:
        return Behaviour.decline
    if index % 13 == 7:
        return Behaviour.silent
    return Behaviour.accept


async def _serve(app: FastAPI, port: int, stop: asyncio.Event) -> None:
    server = InProcessServer(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await task


def _sandbox_account(settings: Settings, port: int) -> dict[str, object]:
    """Settings for the project's own endpoint of the chosen provider (`ANXIN_SMS_PROVIDER`)
    on `port`, with an account of its own, when that provider has no credentials."""
    if settings.sms_provider == "aliyun":
        if settings.aliyun_configured:
            return {}
        return {
            "aliyun_access_key_id": "LTAI" + secrets.token_hex(10),
            "aliyun_access_key_secret": SecretStr(secrets.token_hex(15)),
            "aliyun_push_token": SecretStr(secrets.token_hex(24)),
            "aliyun_sms_endpoint": f"http://127.0.0.1:{port}",
            "aliyun_voice_endpoint": f"http://127.0.0.1:{port}",
            "aliyun_voice_show_number": "057100000000",
        }
    if settings.twilio_configured:
        return {}
    return {
        "twilio_account_sid": "AC" + secrets.token_hex(16),
        "twilio_auth_token": SecretStr(secrets.token_hex(16)),
        "twilio_from": "+8610690000000",
        "twilio_base_url": f"http://127.0.0.1:{port}",
    }


def _sandbox_for(
    settings: Settings, account: dict[str, object]
) -> SmsSandbox | AliyunSandbox | None:
    """The endpoint `_sandbox_account` set the platform up for (None: a real provider)."""
    if "twilio_base_url" in account:
        assert settings.twilio_auth_token and settings.twilio_account_sid
        return SmsSandbox(
            settings.twilio_auth_token.get_secret_value(),
            settings.twilio_account_sid,
            settings.callback_base + "/twilio/inbound",
        )
    if "aliyun_sms_endpoint" in account:
        key, secret = settings.aliyun_access_key_id, settings.aliyun_access_key_secret
        token = settings.aliyun_push_token
        assert key and secret and token
        push = f"{settings.callback_base}/aliyun/sms/{{}}/{token.get_secret_value()}"
        return AliyunSandbox(
            key,
            secret.get_secret_value(),
            report_url=push.format("report"),
            up_url=push.format("up"),
            voice_report_url=f"{settings.callback_base}/aliyun/voice/report/{token.get_secret_value()}",
            show_number=settings.aliyun_voice_show_number,
            sign_name=settings.aliyun_sign_name,
            template_codes=settings.aliyun_template_codes,
        )
    return None


async def run_demo(
    settings: Settings,
    *,
    homes: int | None = None,
    sos_every: float = 30.0,
    duration: float | None = None,
    exit_after_resolved: int | None = None,
    timing: Timing | None = None,
    console: Console | None = None,
) -> DemoResult:
    console = console or Console()
    result = DemoResult(started=time.monotonic())
    timing = timing or Timing()
    stop = asyncio.Event()

    web_port = (
        settings.http_port if port_is_free(settings.http_port, settings.http_host) else free_port()
    )
    updates: dict[str, object] = {"http_port": web_port}
    if "public_url" not in settings.model_fields_set:
        updates["public_url"] = f"http://127.0.0.1:{web_port}"
    sandbox_port = free_port()
    account = _sandbox_account(settings, sandbox_port)
    # model_copy does not validate: every value below already has its field's type.
    settings = settings.model_copy(update=updates | account)
    endpoint = _sandbox_for(settings, account)

    plan = generate_region(homes)
    async with services(settings) as svc:
        created = await seed(svc, plan)
        work = role_tasks(svc, ROLES, stop, web_port=web_port)
        if isinstance(endpoint, SmsSandbox):
            work.append(_serve(create_sandbox_app(endpoint), sandbox_port, stop))
        elif endpoint is not None:
            work.append(_serve(create_aliyun_sandbox_app(endpoint), sandbox_port, stop))

        sim_homes: list[SimHome] = []
        by_elder: dict[str, list[SimDevice]] = {}
        for d in plan.devices:
            by_elder.setdefault(d.elder_code, []).append(
                SimDevice(d.device_id, d.kind.value, d.password, d.heartbeat_interval_s)
            )

        async def demo_driver() -> None:
            await asyncio.sleep(0.5)  # let the roles subscribe before devices speak
            for elder in plan.elders:
                home = SimHome(svc.mqtt, by_elder[elder.code], name=elder.name)
                sim_homes.append(home)
            await asyncio.gather(*(h.connect() for h in sim_homes))
            for h in sim_homes:
                h.start_heartbeats()
            bank = None
            if endpoint is not None:
                phones = [
                    SimPhone(r.phone, _behaviour(i), timing) for i, r in enumerate(plan.responders)
                ]
                bank = PhoneBank(endpoint, phones)
            admin = next(o for o in plan.operators if o.role == "admin")
            township_op = next(o for o in plan.operators if o.role == "township_operator")
            console.rule("[bold red]安心 Anxin demo")
            console.print(f"控制台 Console:   [bold]{settings.public_url}/[/]")
            console.print(
                f"登录 Login:       {admin.username} / {admin.password}   (乡镇 township: {township_op.username} / {township_op.password})"
            )
            console.print(f"API docs:         {settings.public_url}/docs")
            console.print(
                f"MQTT broker:      {svc.mqtt.host}:{svc.mqtt.port} ({svc.broker.kind + ', embedded' if svc.broker else 'configured'})"
            )
            console.print(
                f"Postgres:         {'embedded in ' + str(settings.data_dir) if settings.database_url is None else 'configured'} ({'new region seeded' if created else 'existing data found'})"
            )
            if endpoint is not None:
                kind = "Twilio" if isinstance(endpoint, SmsSandbox) else "Aliyun"
                console.print(
                    f"SMS:              built-in {kind}-compatible endpoint, messages at http://127.0.0.1:{sandbox_port}/sandbox/messages"
                )
            console.print(
                f"Homes:            {len(sim_homes)} connected, an SOS every {sos_every:g} s. Ctrl-C to stop."
            )
            console.rule()
            rng = random.Random(7)
            watcher = asyncio.create_task(_report(svc, result, console, stop, exit_after_resolved))
            try:
                await asyncio.sleep(3)
                while not stop.is_set():
                    home = rng.choice(sim_homes)
                    ack = await home.press_sos()
                    result.pressed += 1
                    console.print(
                        f"[red]SOS[/] {home.name} 按下一键呼叫 → ack [bold]{ack.status}[/] {ack.alert_id or ''} ({ack.seconds * 1000:.0f} ms)"
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), sos_every)
            finally:
                watcher.cancel()
                if bank is not None:
                    await bank.close()
                # The demo stopping is not its homes going offline: no retained `offline` (the
                # next start would read it, and a slow stop raised welfare checks from it).
                await asyncio.gather(
                    *(h.close(say_offline=False) for h in sim_homes), return_exceptions=True
                )

        if duration is not None:

            async def timer() -> None:
                await asyncio.sleep(duration)
                stop.set()

            work.append(timer())
        await run_until_stopped(work, stop, demo_driver)
    return result


async def _report(
    svc: Services, result: DemoResult, console: Console, stop: asyncio.Event, exit_after: int | None
) -> None:
    """Print each alert as it closes; the first one gives the cold-start figure."""
    shown: set[int] = set()
    while not stop.is_set():
        await asyncio.sleep(1)
        async with svc.sessions() as session:
            rows = await session.execute(
                select(Alert, col(Elder.name))
                .join(Elder, col(Elder.id) == col(Alert.elder_id))
                .where(col(Alert.status) == "resolved", col(Alert.kind) == "sos")
                .order_by(col(Alert.resolved_at).desc())
                .limit(20)
            )
            for alert, name in rows:
                if alert.id in shown or alert.resolved_at is None:
                    continue
                shown.add(pk(alert))
                if (
                    alert.resolved_at.timestamp()
                    < time.time() - (time.monotonic() - result.started) - 1
                ):
                    continue  # closed in an earlier run of the demo
                took = (alert.resolved_at - alert.raised_at).total_seconds()
                met = (
                    alert.on_scene_at is not None
                    and alert.respond_by is not None
                    and alert.on_scene_at <= alert.respond_by
                )
                result.resolved.append(alert.code)
                console.print(
                    f"[green]✔ {alert.code}[/] {name} {KIND_ZH.get(alert.kind, alert.kind)}: 已处理 resolved in {took:.0f} s, "
                    f"15分钟 {'达标 met' if met else '未达标 missed'}"
                )
                if result.first_resolved_s is None:
                    result.first_resolved_s = time.monotonic() - result.started
                    console.print(
                        f"[bold]冷启动到首个警报闭环 cold start → first resolved alert: {result.first_resolved_s:.1f} s[/]"
                    )
        if exit_after is not None and len(result.resolved) >= exit_after:
            stop.set()

"""The README's separate-process deployment: `anxin run gateway`, `alerts`, `dispatcher` and `web`
as four processes against the test Postgres and broker, and the thin chain still works — an
SOS is acked to the device, raises an alert and puts its call-out SMS in the outbox — and each
role without HTTP answers /metrics on its own port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlmodel import col

from alert_service.models import Alert
from anxin.broker import free_port
from anxin.models import Elder
from anxin.mqtt import BrokerAddress, MqttClient, MqttMessage
from anxin.schemas import event_json, topic
from dispatcher.models import SmsMessage
from tests.support.harness import Seeded, eventually

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def _roles(
    env: dict[str, str], logs: Path, gateway_id: str, metrics_ports: dict[str, int]
) -> AsyncIterator[None]:
    commands = {
        "gateway": ["run", "gateway", "--gateway-id", gateway_id],
        "alerts": ["run", "alerts"],
        "dispatcher": ["run", "dispatcher"],
        "web": ["run", "web"],
    }
    processes: list[asyncio.subprocess.Process] = []
    try:
        for role, args in commands.items():
            with (logs / f"{role}.log").open("wb") as out:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "anxin.cli",
                        *args,
                        cwd=ROOT,
                        # One /metrics port per process (the web role serves it on its own).
                        env={**env, "ANXIN_METRICS_PORT": str(metrics_ports.get(role, 0))},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


def _take(queue: asyncio.Queue[MqttMessage]) -> MqttMessage | None:
    try:
        return queue.get_nowait()
    except asyncio.QueueEmpty:
        return None


async def test_each_role_as_its_own_process_runs_the_chain(
    region: Seeded, database_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    web_port = free_port()
    env = {
        **os.environ,
        "ANXIN_DATABASE_URL": database_url,
        "ANXIN_MQTT_URL": mqtt_url,
        # The in-process test broker has no shared subscriptions; Mosquitto (CI) has.
        "ANXIN_MQTT_SHARED_GROUP": ""
        if "protocol=3.1.1" in mqtt_url
        else f"anxin-test-{uuid.uuid4().hex[:6]}",
        "ANXIN_HTTP_HOST": "127.0.0.1",
        "ANXIN_HTTP_PORT": str(web_port),
        "ANXIN_PUBLIC_URL": f"http://127.0.0.1:{web_port}",
        "ANXIN_LOG_LEVEL": "warning",
        "ANXIN_WATCHER_POLL_MS": "100",
        "ANXIN_OUTBOX_POLL_MS": "100",
        "ANXIN_METRICS_REFRESH_SECONDS": "0.2",
    }
    for name in ("ANXIN_TWILIO_ACCOUNT_SID", "ANXIN_TWILIO_AUTH_TOKEN", "ANXIN_TWILIO_FROM"):
        env.pop(name, None)  # outbox mode: the SMS is kept, not sent
    elder = region.plan.elders[0]
    sos = next(
        d for d in region.plan.devices if d.elder_code == elder.code and d.kind == "sos_button"
    )
    metrics_ports = {role: free_port() for role in ("gateway", "alerts", "dispatcher")}
    async with _roles(env, tmp_path, f"gw-proc-{uuid.uuid4().hex[:6]}", metrics_ports):

        async def web_up() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient() as http:
                    response = await http.get(f"http://127.0.0.1:{web_port}/healthz")
                    return response.status_code == 200
            return False

        await eventually(web_up, timeout=60, what="the web role's /healthz")

        device = MqttClient(
            BrokerAddress.parse(mqtt_url), f"test-{sos.device_id}-{uuid.uuid4().hex[:4]}"
        )
        acks = device.subscribe(topic(sos.device_id, "ack"), 1)
        event_id = f"proc-{uuid.uuid4().hex[:8]}"

        async def this_alert() -> Alert | None:
            async with region.sessions() as session:
                query = (
                    select(Alert)
                    .join(Elder, col(Elder.id) == col(Alert.elder_id))
                    .where(col(Elder.code) == elder.code, col(Alert.kind) == "sos")
                )
                return (await session.execute(query)).scalars().first()

        # As a device does: resend the same event until the platform acks it (the gateway
        # process may still be subscribing). Only an ack naming this platform's alert counts:
        # a shared broker may also carry other deployments' acks for the same demo devices.
        async def acked() -> dict[str, str] | None:
            while (message := _take(acks)) is not None:
                ack: dict[str, str] = json.loads(message.payload)
                alert = await this_alert()
                ours = alert is not None and ack.get("alert_id") == alert.code
                if ours and ack.get("event_id") == event_id:
                    return ack
            await device.publish(topic(sos.device_id, "event"), event_json(event_id, "sos"), 1)
            await asyncio.sleep(0.5)
            return None

        await device.connect()
        try:
            ack = await eventually(acked, timeout=60, what="the device ack")
        finally:
            await device.close()
        assert ack["status"] in ("accepted", "duplicate")
        alert_id = int(ack["alert_id"].removeprefix("A"))

        async def call_out_in_outbox() -> SmsMessage | None:
            async with region.sessions() as session:
                row = (
                    (
                        await session.execute(
                            select(SmsMessage).where(
                                col(SmsMessage.alert_id) == alert_id,
                                col(SmsMessage.purpose) == "dispatch",
                                col(SmsMessage.status) == "outbox",
                            )
                        )
                    )
                    .scalars()
                    .first()
                )
            return row

        sms = await eventually(call_out_in_outbox, timeout=60, what="the call-out SMS handled")
        assert f"A{alert_id}" in sms.body

        # /metrics on each role without HTTP, on its own port.
        async def scrape(port: int) -> str | None:
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient() as http:
                    response = await http.get(f"http://127.0.0.1:{port}/metrics")
                    if response.status_code == 200:
                        return response.text
            return None

        for role, port in metrics_ports.items():
            text = await eventually(partial(scrape, port), what=f"{role} /metrics")
            assert "# TYPE anxin_db_commit_seconds histogram" in text, role

        def sample(text: str, name: str, labels: dict[str, str]) -> float:
            for family in text_string_to_metric_families(text):
                for found in family.samples:
                    if found.name == name and found.labels == labels:
                        return float(found.value)
            return 0.0

        # Each worker counts what it did: the SOS in and acked by the gateway, the watcher's
        # commits and how late it took the new alert, the dispatcher's SMS kept in the outbox.
        counted = {
            "gateway": [
                ("anxin_mqtt_messages_total", {"kind": "event"}),
                ("anxin_device_acks_total", {"status": str(ack["status"])}),
                ("anxin_db_commit_seconds_count", {"role": "gateway"}),
            ],
            "alerts": [
                ("anxin_db_commit_seconds_count", {"role": "alerts"}),
                ("anxin_timer_lateness_seconds_count", {}),
            ],
            "dispatcher": [("anxin_sms_total", {"result": "outbox"})],
        }
        for role, wanted in counted.items():
            text = await scrape(metrics_ports[role]) or ""
            for name, labels in wanted:
                assert sample(text, name, labels) >= 1, (role, name, labels)

        # The database figures, refreshed by the alerts role: the SOS is an open P1 alert.
        async def open_p1_alerts() -> float | None:
            text = await scrape(metrics_ports["alerts"])
            for family in text_string_to_metric_families(text or ""):
                for sample in family.samples:
                    if sample.name == "anxin_open_alerts" and sample.labels == {"priority": "1"}:
                        return sample.value if sample.value >= 1 else None
            return None

        await eventually(open_p1_alerts, what="the open SOS on the alerts role's /metrics")

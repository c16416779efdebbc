"""`anxin devices export-mosquitto`: Mosquitto's own password format, and an ACL under which no
device can speak for another — checked against a Mosquitto started with the generated files."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col
from typer.testing import CliRunner

from anxin.app import create_app
from anxin.auth import is_mosquitto_hash, verify_mosquitto_hash
from anxin.db import transaction
from anxin.models import Device
from anxin.mqtt import BrokerAddress, MqttClient, MqttMessage
from anxin.schemas import event_json, topic
from anxin.settings import Settings
from gateway.broker_config import (
    BrokerUser,
    build_mosquitto_files,
    hash_device_password,
    mosquitto_hash,
)
from gateway.cli import devices_app
from tests.support.broker import Mosquitto, device_ids_of_kind
from tests.support.harness import Seeded, ServeApp, eventually

SERVICE_USER = "anxin-platform"
SERVICE_PASSWORD = "platform-secret"


def test_hashes_are_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    binary = shutil.which("mosquitto_passwd")
    if binary is None:
        pytest.skip("mosquitto_passwd is not installed")
    passwd = tmp_path / "passwd"
    subprocess.run([binary, "-c", "-b", str(passwd), "dev-1", "s3cret"], check=True)
    written = passwd.read_text().strip().split(":", 1)[1]
    assert is_mosquitto_hash(written)
    assert verify_mosquitto_hash(written, "s3cret")
    assert not verify_mosquitto_hash(written, "wrong")
    # Same salt, same iterations → the very same string.
    _, _, iterations, salt, _ = written.split("$")
    import base64

    assert mosquitto_hash("s3cret", salt=base64.b64decode(salt), iterations=int(iterations)) == (
        written
    )


def test_the_acl_is_a_pattern_per_leaf_whatever_the_number_of_devices() -> None:
    devices = [(f"d{i}", hash_device_password("p")) for i in range(3)] + [("old", "sha256$$x")]
    files = build_mosquitto_files(devices, [BrokerUser(SERVICE_USER, mosquitto_hash("x"))])
    assert files.devices == 3 and files.skipped == ("old",)
    assert files.password_file.count("\n") == 4  # three devices and the platform
    assert "pattern write anxin/v1/dev/%u/event" in files.acl_file
    assert "pattern read anxin/v1/dev/%u/ack" in files.acl_file
    assert "pattern read anxin/v1/dev/%u/cmd" in files.acl_file
    assert "pattern write anxin/v1/dev/%u/ack" not in files.acl_file
    with pytest.raises(ValueError, match="clashes"):
        build_mosquitto_files(devices, [BrokerUser("d1", mosquitto_hash("x"))])


def test_a_hash_mosquitto_would_drop_is_never_written_nor_exported() -> None:
    # Mosquitto 2.0 removes a `$7$` entry whose salt is not 12 bytes: such a device never logs in.
    import base64

    with pytest.raises(ValueError, match="12 bytes"):
        mosquitto_hash("s3cret-pw", salt=b"8-bytes!")
    key = base64.b64encode(bytes(64)).decode()
    short_salt = f"$7$101${base64.b64encode(b'8-bytes!').decode()}${key}"
    assert not is_mosquitto_hash(short_salt)
    files = build_mosquitto_files(
        [("ok", hash_device_password("p")), ("short", short_salt)],
        [BrokerUser(SERVICE_USER, mosquitto_hash("x"))],
    )
    assert files.devices == 1 and files.skipped == ("short",)


async def _next(queue: asyncio.Queue[MqttMessage]) -> MqttMessage | None:
    try:
        return queue.get_nowait()
    except asyncio.QueueEmpty:
        return None


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_device_cannot_publish_or_read_as_another_under_the_generated_acl(
    region: Seeded, database_url: str, tmp_path: Path, protocol: str
) -> None:
    a, b, disabled = list(device_ids_of_kind(region.plan, "sos_button"))[:3]
    passwords = {d.device_id: d.password for d in region.plan.devices}
    async with transaction(region.sessions) as session:
        # What seeding does once it uses gateway.broker_config.hash_device_password.
        for device_id in (a, b, disabled):
            await session.execute(
                update(Device)
                .where(col(Device.id) == device_id)
                .values(password_hash=hash_device_password(passwords[device_id]))
            )
        await session.execute(
            update(Device).where(col(Device.id) == disabled).values(enabled=False)
        )

    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    result = await asyncio.to_thread(
        CliRunner().invoke,
        devices_app,
        [
            "export-mosquitto",
            "--password-file",
            str(passwd),
            "--acl-file",
            str(acl),
            "--service-user",
            f"{SERVICE_USER}={SERVICE_PASSWORD}",
        ],
        env={**os.environ, "ANXIN_DATABASE_URL": database_url},
    )
    assert result.exit_code == 0, result.output
    assert f"{a}:$7$" in passwd.read_text() and disabled not in passwd.read_text()

    broker = Mosquitto(tmp_path / "mosquitto", password_file=passwd, acl_file=acl)
    await broker.start()
    platform = as_a = None
    try:
        platform = MqttClient(
            BrokerAddress.parse(
                broker.url(protocol=protocol, user=SERVICE_USER, password=SERVICE_PASSWORD)
            ),
            "platform",
        )
        # As the gateway subscribes: a shared subscription, allowed by the service ACL.
        seen = platform.subscribe("$share/anxin-gw/anxin/v1/dev/+/event", 1)
        await platform.connect()
        await platform.wait_subscribed(10)

        as_a = MqttClient(
            BrokerAddress.parse(broker.url(protocol=protocol, user=a, password=passwords[a])),
            f"{a}-client",
        )
        a_acks = as_a.subscribe(topic(a, "ack"), 1)
        b_acks = as_a.subscribe(topic(b, "ack"), 1)
        await as_a.connect()
        await as_a.wait_subscribed(10)

        # A speaks as B, then as itself: only its own message reaches the platform.
        await as_a.publish(topic(b, "event"), event_json("forged-1", "sos"), 1)
        await as_a.publish(topic(a, "event"), event_json("own-1", "sos"), 1)
        first = await eventually(lambda: _next(seen), what="A's own event")
        assert first.topic == topic(a, "event")
        # Nothing of B's was queued ahead of A's own (one connection keeps order).
        assert seen.empty()

        # A cannot read B's acks either: the platform acks B then A; A sees only its own.
        await platform.publish(topic(b, "ack"), b'{"event_id": "x", "status": "accepted"}', 1)
        await platform.publish(topic(a, "ack"), b'{"event_id": "own-1", "status": "accepted"}', 1)
        own_ack = await eventually(lambda: _next(a_acks), what="A's own ack")
        assert b"own-1" in own_ack.payload
        assert b_acks.empty()

        # Nor publish acks (the platform's word) for itself.
        await as_a.publish(topic(a, "ack"), b'{"event_id": "self", "status": "accepted"}', 1)
        await platform.publish(topic(a, "ack"), b'{"event_id": "barrier"}', 1)
        barrier = await eventually(lambda: _next(a_acks), what="the platform's next ack")
        assert b"barrier" in barrier.payload  # A's own forged ack never went through

        # A wrong password, or a disabled device, does not get in at all.
        for user, password in ((b, "wrong-password"), (disabled, passwords[disabled])):
            intruder = MqttClient(
                BrokerAddress.parse(broker.url(protocol=protocol, user=user, password=password)),
                f"{user}-intruder",
            )
            with pytest.raises(TimeoutError):
                await intruder.connect(timeout=2)
            await intruder.close()
    finally:
        for client in (platform, as_a):
            if client is not None:
                await client.close()
        await broker.stop()


def _paho_connack(port: int, username: str, password: str) -> str:
    """CONNECT as a device with paho itself and return the broker's CONNACK reason."""
    import threading

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    answered = threading.Event()
    reasons: list[str] = []

    def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        reasons.append(str(reason))
        answered.set()

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{username}-check", protocol=paho.MQTTv311
    )
    client.username_pw_set(username, password)
    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert answered.wait(20), "the broker sent no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return reasons[0]


async def test_a_device_registered_in_the_console_logs_in_to_mosquitto(
    region: Seeded,
    database_url: str,
    tmp_path: Path,
    serve_app: ServeApp,
) -> None:
    app = create_app(Settings(), region.sessions)
    async with serve_app(app) as web_url, httpx.AsyncClient(base_url=web_url) as http:
        login = await http.post(
            "/api/auth/token", data={"username": "t01", "password": "anxin-t01"}
        )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        elder = (await http.get("/api/elders", headers=headers)).json()[0]
        created = await http.post(
            "/api/devices",
            headers=headers,
            json={"id": "sos-console-1", "kind": "sos_button", "elder_id": elder["id"]},
        )
        assert created.status_code == 201, created.text
        password = created.json()["password"]

    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    result = await asyncio.to_thread(
        CliRunner().invoke,
        devices_app,
        [
            "export-mosquitto",
            "--password-file",
            str(passwd),
            "--acl-file",
            str(acl),
            "--service-user",
            f"{SERVICE_USER}={SERVICE_PASSWORD}",
        ],
        env={**os.environ, "ANXIN_DATABASE_URL": database_url},
    )
    assert result.exit_code == 0, result.output
    broker = Mosquitto(tmp_path / "mosquitto", password_file=passwd, acl_file=acl)
    await broker.start()
    try:
        device = "sos-console-1"
        assert await asyncio.to_thread(_paho_connack, broker.port, device, password) == "Success"
        wrong = await asyncio.to_thread(_paho_connack, broker.port, device, "not-it-123")
        assert wrong == "Not authorized"
    finally:
        await broker.stop()
    assert "Unable to decode password salt" not in broker.log.read_text()

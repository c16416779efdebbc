"""Secrets and personal data: secrets come only from Settings as SecretStr and never reach a log
line; phone numbers appear in logs only masked.

The whole platform runs in-process (gateway, watcher, outbox, web, the Twilio sandbox) at DEBUG
level with known secret values, an SOS goes from a device to an aide's phone and back, and every
byte written to stdout and stderr is searched.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from alert_service.models import Alert
from anxin.db import make_engine
from anxin.logging import configure_logging, get_logger, mask_phone
from anxin.models import Responder
from anxin.mqtt import BrokerAddress, MqttClient, MqttMessage
from anxin.schemas import event_json, topic
from anxin.settings import Settings
from device_sim.harness import run_in_process
from tests.support.broker import Mosquitto
from tests.support.harness import Seeded, eventually

DB_PASSWORD = "db-pw-Zq8r1x7Kt3"
MQTT_PASSWORD = "mqtt-pw-Hn4v9Lp2We"
WRONG_PASSWORD = "guess-pw-Xy7Qm2Rt5"
E164 = re.compile(r"\+\d{8,15}")
REPO = Path(__file__).resolve().parents[2]


def with_password(url: str, user: str, password: str) -> str:
    """The same URL with credentials: the test servers (trust auth, anonymous broker) accept
    any password, so a known one can travel through the whole platform."""
    scheme, rest = url.split("://", 1)
    rest = rest.split("@", 1)[-1]
    return f"{scheme}://{user}:{password}@{rest}"


def test_every_secret_setting_is_a_secret_str_and_never_shown_by_repr() -> None:
    # Any setting named like a credential (a URL may carry a password) is typed SecretStr.
    for name, field in Settings.model_fields.items():
        looks_secret = name.endswith(("_token", "_key", "_password", "_secret"))
        if looks_secret or name in ("database_url", "mqtt_url"):
            assert "SecretStr" in str(field.annotation), f"{name} looks secret: make it a SecretStr"
    secret_fields = {
        "database_url",
        "mqtt_url",
        "twilio_auth_token",
        "secret_key",
        "aliyun_access_key_secret",
        "aliyun_push_token",
    }
    settings = Settings(
        database_url=SecretStr(f"postgresql://u:{DB_PASSWORD}@db/anxin"),
        mqtt_url=SecretStr(f"mqtt://u:{MQTT_PASSWORD}@broker:1883"),
        twilio_auth_token=SecretStr("twilio-token-Jc6"),
        secret_key=SecretStr("signing-key-Pw3"),
        aliyun_access_key_secret=SecretStr("aliyun-secret-Kd8"),
        aliyun_push_token=SecretStr("push-token-Vb2"),
    )
    for name in secret_fields:
        assert isinstance(getattr(settings, name), SecretStr), name
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    for secret in (DB_PASSWORD, MQTT_PASSWORD, "twilio-token-Jc6", "signing-key-Pw3"):
        assert secret not in shown


async def first_stream_event(base_url: str, token: str) -> str:
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"GET /api/alerts-stream?token={token} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        )
        await writer.drain()
        while line := await reader.readline():
            if line.startswith(b"data: "):
                return line.decode()
        raise AssertionError("the stream ended without an event")
    finally:
        writer.close()


async def _next(queue: Any) -> MqttMessage | None:
    return None if queue.empty() else queue.get_nowait()


async def test_a_whole_sos_at_debug_level_logs_no_secret_and_only_masked_phones(
    region: Seeded,
    database_url: str,
    mqtt_url: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    db_url = with_password(database_url, "postgres", DB_PASSWORD)
    broker_url = with_password(mqtt_url, "anxin", MQTT_PASSWORD)
    engine: AsyncEngine = make_engine(db_url)
    configure_logging("debug")
    # Every library's own (stdlib) records too: twilio, httpx, uvicorn, asyncpg, paho.
    caplog.set_level(logging.DEBUG)
    try:
        async with run_in_process(db_url, broker_url, engine) as platform:
            settings = platform.settings
            assert settings.twilio_auth_token is not None
            elder = region.plan.elders[0]
            sos = next(
                d
                for d in region.plan.devices
                if d.elder_code == elder.code and d.kind == "sos_button"
            )
            async with httpx.AsyncClient(base_url=platform.web_url) as http:
                # A wrong password, then the right one: neither is logged, nor is the token.
                for password in (WRONG_PASSWORD, "anxin-t01"):
                    await http.post(
                        "/api/auth/token", data={"username": "t01", "password": password}
                    )
                login = await http.post(
                    "/api/auth/token", data={"username": "t01", "password": "anxin-t01"}
                )
                bearer = login.json()["access_token"]
                # A forged webhook and an SMS from a number nobody registered.
                await http.post("/twilio/inbound", data={"From": "+8613999999999", "Body": "1"})
                await platform.sandbox.reply("+8613711112222", "你好")

                device = MqttClient(
                    platform.mqtt.with_credentials(sos.device_id, sos.password),
                    f"test-{sos.device_id}",
                )
                acks = device.subscribe(topic(sos.device_id, "ack"), 1)
                await device.connect()
                try:
                    await device.publish(
                        topic(sos.device_id, "event"), event_json("secrets-1", "sos"), 1
                    )
                    ack = json.loads(
                        (await eventually(lambda: _next(acks), what="device ack")).payload
                    )
                finally:
                    await device.close()
                alert_id = int(ack["alert_id"].removeprefix("A"))

                async def ranked() -> Alert | None:
                    # The ack means the alert is stored; the watcher ranks it a moment later.
                    async with platform.sessions() as session:
                        found = await session.get(Alert, alert_id)
                    return found if found is not None and found.ranking else None

                alert = await eventually(ranked, what="the alert's ranking")
                async with platform.sessions() as session:
                    aide = await session.get(Responder, alert.ranking[0]["responder_id"])
                    assert aide is not None
                await platform.sandbox.next_message(aide.phone, timeout=20)
                await platform.sandbox.reply(aide.phone, "1")

                async def accepted() -> bool:
                    async with platform.sessions() as session:
                        row = await session.get(Alert, alert_id)
                        return row is not None and row.accepted_by == aide.id

                await eventually(accepted, what="the aide's accept")
                detail = await http.get(
                    f"/api/alerts/{alert_id}", headers={"Authorization": f"Bearer {bearer}"}
                )
                assert detail.status_code == 200
                # The live stream takes the token in its URL (EventSource sets no headers).
                # Read over a bare socket: the test's own HTTP client logs the URLs it calls.
                assert f"A{alert_id}" in await first_stream_event(platform.web_url, bearer)
    finally:
        configure_logging("warning")
        await engine.dispose()

    out, err = capfd.readouterr()
    records = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    logs = out + err + records
    assert "sms_sent" in logs and "sms_reply" in logs, "the run logged too little to judge"

    secrets = {
        "database password": DB_PASSWORD,
        "broker password": MQTT_PASSWORD,
        "Twilio auth token": settings.twilio_auth_token.get_secret_value(),
        "token signing key": settings.secret_key.get_secret_value(),
        "operator password": "anxin-t01",
        "wrong password": WRONG_PASSWORD,
        "operator bearer token": bearer,
        "device password": sos.password,
    }
    leaked = [what for what, value in secrets.items() if value in logs]
    assert not leaked, f"in the logs: {leaked}"

    phones = {*region.plan.phones(), "+8613999999999", "+8613711112222", aide.phone}
    shown = [p for p in phones if p in logs or p.removeprefix("+") in logs]
    assert not shown, f"unmasked phone numbers in the logs: {shown[:5]}"
    assert not E164.findall(logs), E164.findall(logs)[:5]
    assert mask_phone(aide.phone) in logs  # the masked form is what the logs carry


class CuttableProxy:
    """A TCP relay to Postgres that the test can cut: the database becomes unreachable for a
    running role (connections dropped, the port refusing), as when its server goes away."""

    def __init__(self, host: str, port: int, socket_dir: str | None = None) -> None:
        # Embedded Postgres listens on a Unix socket only (`?host=/dir&port=N`): relay to it.
        self.target = (host, port)
        self.socket_path = f"{socket_dir}/.s.PGSQL.{port}" if socket_dir else None
        self.server: asyncio.Server | None = None
        self.links: list[asyncio.StreamWriter] = []
        self.is_cut = False

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.socket_path is not None:
            up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.links += [writer, up_writer]
        if self.is_cut:  # accepted just before the cut
            self.cut()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        self.is_cut = True
        if self.server is not None:
            self.server.close()
        for link in self.links:
            link.transport.abort()


@pytest.mark.parametrize("log_json", [False, True], ids=["console", "json"])
async def test_a_gateway_losing_its_database_logs_retries_but_no_secret(
    database_url: str, tmp_path: Path, log_json: bool
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    await broker.start()
    # The test database's server, by TCP (CI) or by its socket directory (embedded Postgres).
    target = make_url(database_url)
    socket_dir = target.query.get("host") if target.host is None else None
    port = int(target.port or target.query.get("port") or 5432)  # type: ignore[arg-type]
    proxy = CuttableProxy(target.host or "127.0.0.1", port, socket_dir=socket_dir)  # type: ignore[arg-type]
    relay_port = await proxy.start()
    db_url = target.set(
        host="127.0.0.1",
        port=relay_port,
        username="postgres",
        password=DB_PASSWORD,
        query={k: v for k, v in target.query.items() if k not in ("host", "port")},
    ).render_as_string(hide_password=False)
    secrets = {
        "database password": DB_PASSWORD,
        "broker password": MQTT_PASSWORD,
        "Twilio auth token": "twilio-token-Jc6Rw",
        "token signing key": "signing-key-Pw3Lk",
    }
    log_file = tmp_path / "gateway.log"
    env = {
        **os.environ,
        "ANXIN_DATABASE_URL": db_url,
        "ANXIN_MQTT_URL": with_password(broker.url(), "anxin", MQTT_PASSWORD),
        "ANXIN_TWILIO_AUTH_TOKEN": secrets["Twilio auth token"],
        "ANXIN_SECRET_KEY": secrets["token signing key"],
        "ANXIN_LOG_LEVEL": "debug",
        "ANXIN_LOG_JSON": "true" if log_json else "false",
    }

    def spawn() -> subprocess.Popen[bytes]:
        with log_file.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "anxin.cli", "run", "gateway", "--gateway-id", "gw-leak"],
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    gateway = await asyncio.to_thread(spawn)

    def logged(what: str, times: int = 1) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            assert gateway.poll() is None, log_file.read_text()[-3000:]
            return log_file.read_text().count(what) >= times

        return check

    device = MqttClient(BrokerAddress.parse(broker.url()), "leak-device")
    try:
        await eventually(logged("gateway_connected"), timeout=60, what="the gateway up")
        proxy.cut()
        # An event during the outage: the gateway retries it with backoff (0.2, 0.4, 0.8 s…).
        await device.connect()
        await device.publish(topic("sos-leak-1", "event"), event_json("leak-1", "sos"), 1)
        await eventually(logged("gateway_db_retry", 4), timeout=60, what="four retries")
    finally:
        await device.close()
        gateway.terminate()
        try:
            await asyncio.to_thread(gateway.wait, 15)
        except subprocess.TimeoutExpired:
            gateway.kill()
        proxy.cut()
        await broker.stop()
    logs = log_file.read_text()
    leaked = [what for what, value in secrets.items() if value in logs]
    assert not leaked, f"in the gateway's log: {leaked}\n{logs[-3000:]}"
    # The retries still say what failed and where, for whoever is on call.
    assert "ConnectionRefusedError" in logs and "Traceback (most recent call last)" in logs


def test_no_handler_writes_a_secret_from_a_failure_at_any_level(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A library's own handler (uvicorn writes its records itself), structlog at every level,
    an exception whose message carries a URL with credentials and a frame holding a password:
    what reaches stderr or a handler's stream has none of them."""
    url = f"postgresql+asyncpg://postgres:{DB_PASSWORD}@db.internal:5432/anxin"
    Settings(database_url=SecretStr(url), twilio_auth_token=SecretStr("twilio-token-Uv8Qa"))
    configure_logging("debug")
    own_stream = io.StringIO()
    handler = logging.StreamHandler(own_stream)
    library = logging.getLogger("uvicorn.error")
    library.addHandler(handler)

    def connect(password: str) -> None:
        raise ConnectionError(f"cannot reach {url} (token twilio-token-Uv8Qa)")

    try:
        try:
            connect(DB_PASSWORD)
        except ConnectionError:
            library.exception("Exception in ASGI application")
            logger = get_logger("test")
            for level in ("debug", "info", "warning", "error", "critical"):
                getattr(logger, level)("failed", url=url, exc_info=True)
            logger.exception("failed_again", password=DB_PASSWORD)
    finally:
        library.removeHandler(handler)
        configure_logging("warning")
    out, err = capfd.readouterr()
    logs = out + err + own_stream.getvalue()
    assert logs.count("ConnectionError") >= 7, logs  # every record was written, with its cause
    assert DB_PASSWORD not in logs and "twilio-token-Uv8Qa" not in logs
    assert "postgres:***@db.internal" in logs  # the URL is still there to read, masked

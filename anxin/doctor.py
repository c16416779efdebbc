"""`anxin doctor`: is this deployment configured and connected as it should be?

Checks the settings (they parse, the time zone exists, the secret key is not the development
value, the public URL is one Twilio can call back, Twilio is fully configured or clearly in
outbox mode), then the connections: Postgres reachable and at the newest Alembic revision, the
MQTT broker reachable with the configured login, and shared subscriptions working (several
gateway replicas depend on them). Every finding is said in Chinese and English with what to do.

A *failure* makes the exit code 1; a *warning* (development defaults such as the embedded
Postgres, SMS kept in the outbox) does not, unless `strict`.

The configuration checks are pure (`check_settings`); the connection checks do I/O with a
short timeout each, so a wrong host answers in seconds rather than hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from anxin.schemas import TOPIC_ROOT
from anxin.settings import Settings

DEV_SECRET_KEY = Settings.model_fields["secret_key"].default.get_secret_value()
MIN_SECRET_KEY_LENGTH = 16
CONNECT_TIMEOUT_S = 5.0
SHARED_DELIVERY_TIMEOUT_S = 3.0
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::1")


class Status(StrEnum):
    ok = "ok"
    warning = "warning"
    failure = "failure"


@dataclass(frozen=True)
class Check:
    name: str  # e.g. "数据库 database"
    status: Status
    zh: str
    en: str

    @property
    def mark(self) -> str:
        return {Status.ok: "✔", Status.warning: "!", Status.failure: "✘"}[self.status]

    def line(self) -> str:
        return f"{self.mark} {self.name}: {self.zh} / {self.en}"


def _ok(name: str, zh: str, en: str) -> Check:
    return Check(name, Status.ok, zh, en)


def _warn(name: str, zh: str, en: str) -> Check:
    return Check(name, Status.warning, zh, en)


def _fail(name: str, zh: str, en: str) -> Check:
    return Check(name, Status.failure, zh, en)


SETTINGS = "配置 settings"
TIMEZONE = "时区 time zone"
SECRET = "密钥 secret key"
PUBLIC_URL = "公网地址 public URL"
SMS = "短信 SMS"
DATABASE = "数据库 database"
SCHEMA = "数据库版本 schema"
BROKER = "MQTT 代理 broker"
SHARED = "共享订阅 shared subscriptions"
REPLICATION = "主备复制 replication"


# --- configuration (pure) ---------------------------------------------------------------------


def load_settings(
    factory: Callable[[], Settings] = Settings,
) -> tuple[Settings | None, Check]:
    """Settings from the environment, or a failure naming each bad variable."""
    try:
        settings = factory()
    except ValidationError as exc:
        problems = "; ".join(
            f"ANXIN_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        return None, _fail(SETTINGS, f"环境变量有误：{problems}", f"invalid settings: {problems}")
    return settings, _ok(SETTINGS, "环境变量可以读取", "the ANXIN_ variables parse")


def check_timezone(settings: Settings) -> Check:
    try:
        ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return _fail(
            TIMEZONE,
            f"不认识时区“{settings.timezone}”，请设 ANXIN_TIMEZONE=Asia/Shanghai",
            f"unknown time zone {settings.timezone!r}: set ANXIN_TIMEZONE, e.g. Asia/Shanghai",
        )
    return _ok(TIMEZONE, settings.timezone, settings.timezone)


def check_secret_key(settings: Settings) -> Check:
    key = settings.secret_key.get_secret_value()
    if key == DEV_SECRET_KEY:
        return _fail(
            SECRET,
            "仍是开发用的默认密钥，任何人都能伪造登录令牌：请设 ANXIN_SECRET_KEY 为随机长字符串"
            "（如 `openssl rand -hex 32`）",
            "still the development default, so anyone can forge operators' tokens: set "
            "ANXIN_SECRET_KEY to a long random string (e.g. `openssl rand -hex 32`)",
        )
    if len(key) < MIN_SECRET_KEY_LENGTH:
        return _fail(
            SECRET,
            f"密钥太短（{len(key)} 位），至少 {MIN_SECRET_KEY_LENGTH} 位",
            f"too short ({len(key)} characters); use at least {MIN_SECRET_KEY_LENGTH}",
        )
    return _ok(SECRET, "已设置", "set, not the development default")


def check_public_url(settings: Settings) -> Check:
    url = settings.public_url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return _fail(
            PUBLIC_URL,
            f"ANXIN_PUBLIC_URL“{url}”不是完整网址（应如 https://anxin.example.gov.cn）",
            f"ANXIN_PUBLIC_URL {url!r} is not a full http(s) URL",
        )
    if parts.query or parts.fragment:
        return _fail(
            PUBLIC_URL,
            "公网地址不能带 ? 或 # 部分",
            "the public URL must not have a query or fragment",
        )
    if settings.sms_configured and parts.hostname in _LOCAL_HOSTS:
        return _fail(
            PUBLIC_URL,
            f"短信平台无法回调本机地址 {url}：请设为外网能访问的地址",
            f"the SMS provider cannot call back {url}: set ANXIN_PUBLIC_URL to an address it can reach",
        )
    if settings.sms_configured and parts.scheme != "https":
        return _warn(
            PUBLIC_URL,
            "建议使用 https，短信回执和回复会经过公网",
            "use https: delivery receipts and replies cross the internet",
        )
    if parts.hostname in _LOCAL_HOSTS:
        return _warn(
            PUBLIC_URL,
            f"{url} 只能在本机访问",
            f"{url} is reachable from this machine only",
        )
    return _ok(PUBLIC_URL, url, url)


def check_aliyun_settings(settings: Settings) -> Check:
    """`ANXIN_SMS_PROVIDER=aliyun`: the AccessKey and the push token (receipts and replies)."""
    given = {
        "ANXIN_ALIYUN_ACCESS_KEY_ID": bool(settings.aliyun_access_key_id),
        "ANXIN_ALIYUN_ACCESS_KEY_SECRET": bool(settings.aliyun_access_key_secret),
    }
    if not any(given.values()):
        return _warn(
            SMS,
            "选用阿里云但未配置 AccessKey：短信只留在发件箱（控制台可见），不会真正发出",
            "Aliyun chosen without an AccessKey: SMS stay in the outbox, never sent",
        )
    missing = [name for name, present in given.items() if not present]
    if not settings.aliyun_push_token:
        missing.append("ANXIN_ALIYUN_PUSH_TOKEN")
    if missing:
        names = ", ".join(missing)
        return _fail(
            SMS,
            f"阿里云短信配置不完整，缺少 {names}（没有推送令牌，回执和回复都会被拒收）",
            f"Aliyun is half configured, missing {names} (without the push token every receipt "
            "and reply is refused)",
        )
    if (
        len(settings.aliyun_push_token.get_secret_value() if settings.aliyun_push_token else "")
        < 16
    ):
        return _fail(
            SMS,
            "推送令牌太短，至少 16 位（如 `openssl rand -hex 24`）",
            "the push token is too short: use at least 16 characters (`openssl rand -hex 24`)",
        )
    if settings.voice_enabled and not settings.aliyun_voice_show_number:
        return _warn(
            SMS,
            "阿里云短信已配置，但未设 ANXIN_ALIYUN_VOICE_SHOW_NUMBER：语音呼叫只记在时间线上，不会拨出",
            "Aliyun SMS configured but ANXIN_ALIYUN_VOICE_SHOW_NUMBER unset: call-outs stay on "
            "the timeline, never placed",
        )
    return _ok(
        SMS,
        f"经阿里云 {settings.aliyun_sms_endpoint} 发送，签名【{settings.aliyun_sign_name}】",
        f"sending through Aliyun at {settings.aliyun_sms_endpoint}, sign 【{settings.aliyun_sign_name}】",
    )


def check_sms(settings: Settings) -> Check:
    if settings.sms_provider == "aliyun":
        return check_aliyun_settings(settings)
    given = {
        "ANXIN_TWILIO_ACCOUNT_SID": bool(settings.twilio_account_sid),
        "ANXIN_TWILIO_AUTH_TOKEN": bool(settings.twilio_auth_token),
        "ANXIN_TWILIO_FROM": bool(settings.twilio_from),
    }
    if not any(given.values()):
        return _warn(
            SMS,
            "未配置短信平台：短信只留在发件箱（控制台可见），不会真正发出",
            "no Twilio credentials: SMS stay in the outbox (shown in the console), never sent",
        )
    missing = [name for name, present in given.items() if not present]
    if missing:
        names = ", ".join(missing)
        return _fail(
            SMS,
            f"短信平台配置不完整，缺少 {names}：短信不会发出",
            f"Twilio is half configured, missing {names}: no SMS will be sent",
        )
    sender = settings.twilio_from or ""
    if not (sender.startswith("+") and sender[1:].isdigit()):
        return _fail(
            SMS,
            f"发送号码 {sender} 应为国际格式，如 +8610690000000",
            f"ANXIN_TWILIO_FROM {sender!r} must be E.164, e.g. +8610690000000",
        )
    sid = settings.twilio_account_sid or ""
    if not (sid.startswith("AC") and len(sid) == 34):
        return _warn(
            SMS,
            "账户 SID 通常以 AC 开头、共 34 位，请核对",
            "an account SID usually starts with AC and has 34 characters: check it",
        )
    return _ok(
        SMS,
        f"经 {settings.twilio_base_url} 发送",
        f"sending through {settings.twilio_base_url}",
    )


def check_settings(settings: Settings) -> list[Check]:
    return [
        check_timezone(settings),
        check_secret_key(settings),
        check_public_url(settings),
        check_sms(settings),
    ]


def check_schema(current: set[str], heads: set[str], known: set[str]) -> Check:
    """The database's Alembic revision against the newest this code knows."""
    if not current:
        return _fail(
            SCHEMA,
            "数据库还没有表：请先运行 `anxin db upgrade`",
            "the database has no schema yet: run `anxin db upgrade`",
        )
    now, newest = ", ".join(sorted(current)), ", ".join(sorted(heads))
    if current - known:
        # Newer than this code: an older image is running against an upgraded database.
        return _fail(
            SCHEMA,
            f"数据库版本 {now} 比本程序新（{newest}）：请升级程序",
            f"the schema ({now}) is newer than this release knows ({newest}): upgrade the roles",
        )
    if current != heads:
        return _fail(
            SCHEMA,
            f"数据库版本 {now}，最新为 {newest}：请运行 `anxin db upgrade`",
            f"schema at {now}, newest is {newest}: run `anxin db upgrade`",
        )
    return _ok(SCHEMA, f"最新版本 {newest}", f"newest revision {newest}")


@dataclass(frozen=True)
class Replica:
    """One row of the primary's pg_stat_replication (Patroni names it after its node)."""

    name: str
    state: str  # streaming, catchup, …
    sync_state: str  # sync, async, potential, quorum
    lag_bytes: int | None  # WAL the replica has not replayed yet
    lag_s: float | None  # replay_lag, when the server reports one


def check_replication(server: str, in_recovery: bool, replicas: list[Replica]) -> Check:
    """Which node the roles write to, and how far behind each replica is."""
    if in_recovery:
        return _fail(
            REPLICATION,
            f"连到的 {server} 是只读备库，写入会失败：请在 ANXIN_DATABASE_URL 中列出所有节点并加上 "
            "target_session_attrs=read-write",
            f"{server} is a read-only standby, writes will fail: list every node in "
            "ANXIN_DATABASE_URL and add target_session_attrs=read-write",
        )
    if not replicas:
        return _warn(
            REPLICATION,
            f"主库 {server}，没有备库：这台服务器一坏，平台就停（见 docs/operations.md 故障切换）",
            f"primary {server}, no replica: losing this server stops the platform "
            "(docs/operations.md, failover)",
        )

    def lag(r: Replica) -> str:
        size = "?" if r.lag_bytes is None else f"{r.lag_bytes} B"
        return size + ("" if r.lag_s is None else f", {r.lag_s:.1f} s")

    zh = "；".join(f"{r.name} {r.state}/{r.sync_state} 延迟 {lag(r)}" for r in replicas)
    en = "; ".join(f"{r.name} {r.state}/{r.sync_state} lag {lag(r)}" for r in replicas)
    behind = [r for r in replicas if r.state != "streaming"]
    if behind or not any(r.sync_state in ("sync", "quorum") for r in replicas):
        return _warn(
            REPLICATION,
            f"主库 {server}；备库 {zh}：没有同步备库，已确认的事件可能只在主库上",
            f"primary {server}; replicas {en}: no synchronous replica streaming, an acked "
            "event may be on the primary only",
        )
    return _ok(REPLICATION, f"主库 {server}；备库 {zh}", f"primary {server}; replicas {en}")


async def _replication(conn: Any) -> Check:
    from sqlalchemy import text

    row = (
        await conn.execute(
            text(
                "SELECT pg_is_in_recovery(), coalesce(host(inet_server_addr()), 'local'), "
                "coalesce(inet_server_port(), 0)"
            )
        )
    ).one()
    server = f"{row[1]}:{row[2]}"
    if row[0]:
        return check_replication(server, True, [])
    rows = await conn.execute(
        text(
            "SELECT application_name, state, sync_state, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint, "
            "extract(epoch FROM replay_lag)::float8 FROM pg_stat_replication"
        )
    )
    replicas = [
        Replica(str(r[0]), str(r[1]), str(r[2]), r[3], r[4]) for r in rows if r[1] is not None
    ]
    return check_replication(server, False, replicas)


# --- connections ------------------------------------------------------------------------------


def _where(url: str) -> str:
    """host:port of a URL (every host of a multi-host one), never its password."""
    parts = urlsplit(url)
    hosts = [v for k, _, v in (p.partition("=") for p in parts.query.split("&")) if k == "host"]
    if not parts.hostname and hosts:
        return ",".join(hosts)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def known_revisions(database_url: str) -> tuple[set[str], set[str]]:
    """(the newest revisions, every revision) of the migrations this code ships."""
    from alembic.script import ScriptDirectory

    from anxin.db import alembic_config

    script = ScriptDirectory.from_config(alembic_config(database_url))
    return set(script.get_heads()), {r.revision for r in script.walk_revisions()}


async def check_database(database_url: str | None) -> list[Check]:
    if database_url is None:
        return [
            _warn(
                DATABASE,
                "未设 ANXIN_DATABASE_URL：使用内置 Postgres（仅供开发和演示）",
                "ANXIN_DATABASE_URL unset: embedded Postgres (development and demos only)",
            )
        ]
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError, ProgrammingError

    from anxin.db import make_engine, normalise_url

    url = normalise_url(database_url)
    where = _where(url)
    try:
        engine = make_engine(
            url, pool_size=1, max_overflow=0, connect_args={"timeout": CONNECT_TIMEOUT_S}
        )
    except Exception as exc:  # a malformed URL: SQLAlchemy's ArgumentError and friends
        return [
            _fail(
                DATABASE,
                f"ANXIN_DATABASE_URL 格式不对：{exc}",
                f"ANXIN_DATABASE_URL is malformed: {exc}",
            )
        ]
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S * 2), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            try:
                current = set(
                    (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars()
                )
            except ProgrammingError:
                current = set()
                await conn.rollback()
            replication = await _replication(conn)
    except (OSError, TimeoutError, DBAPIError) as exc:
        reason = (
            str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
            or type(exc).__name__
        )
        return [
            _fail(
                DATABASE,
                f"连不上 Postgres {where}（{reason}）：请检查地址、端口、用户和密码，以及数据库是否已启动",
                f"cannot reach Postgres at {where} ({reason}): check host, port, user, password "
                "and that the server is running",
            )
        ]
    finally:
        await engine.dispose()
    heads, known = await asyncio.to_thread(known_revisions, url)
    return [
        _ok(DATABASE, f"已连接 {where}", f"connected to {where}"),
        check_schema(current, heads, known),
        replication,
    ]


async def check_broker(mqtt_url: str | None, shared_group: str) -> list[Check]:
    if mqtt_url is None:
        return [
            _warn(
                BROKER,
                "未设 ANXIN_MQTT_URL：使用进程内代理（仅供开发和演示，设备无法从外部连入）",
                "ANXIN_MQTT_URL unset: in-process broker (development only; devices outside "
                "cannot connect)",
            )
        ]
    from anxin.mqtt import BrokerAddress, MqttClient

    try:
        address = BrokerAddress.parse(mqtt_url)
    except ValueError as exc:
        return [
            _fail(BROKER, f"ANXIN_MQTT_URL 格式不对：{exc}", f"ANXIN_MQTT_URL is malformed: {exc}")
        ]
    where = f"{address.host}:{address.port}"
    nonce = uuid.uuid4().hex[:12]
    client = MqttClient(address, client_id=f"anxin-doctor-{nonce}", keepalive=10)
    try:
        try:
            await asyncio.wait_for(client.connect(timeout=CONNECT_TIMEOUT_S), CONNECT_TIMEOUT_S * 2)
        except (OSError, ConnectionError) as exc:
            return [
                _fail(
                    BROKER,
                    f"连不上 MQTT 代理 {where}（{exc}）：请检查地址和端口，以及代理是否已启动",
                    f"cannot reach the MQTT broker at {where} ({exc}): check host and port and "
                    "that the broker is running",
                )
            ]
        except TimeoutError:
            return [
                _fail(
                    BROKER,
                    f"MQTT 代理 {where} 没有接受登录：请检查 ANXIN_MQTT_URL 中的用户名和密码"
                    "（以及 mqtts:// 与端口是否匹配）",
                    f"the MQTT broker at {where} did not accept the login: check the user and "
                    "password in ANXIN_MQTT_URL (and mqtts:// against the port)",
                )
            ]
        checks = [
            _ok(
                BROKER,
                f"已连接 {where}（MQTT {'5' if address.mqtt5 else '3.1.1'}）",
                f"connected to {where} (MQTT {'5' if address.mqtt5 else '3.1.1'})",
            )
        ]
        checks.append(await _check_shared_subscription(client, shared_group, nonce))
        return checks
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def _check_shared_subscription(client: object, shared_group: str, nonce: str) -> Check:
    from anxin.mqtt import MqttClient

    assert isinstance(client, MqttClient)
    if not shared_group:
        return _warn(
            SHARED,
            "已关闭（ANXIN_MQTT_SHARED_GROUP 为空）：只能运行一个网关副本",
            "off (ANXIN_MQTT_SHARED_GROUP is empty): run exactly one gateway replica",
        )
    # Under the platform's own prefix (the generated ACL lets its service user there) with a
    # leaf no gateway subscribes to, so the probe never becomes a dead letter.
    topic = f"{TOPIC_ROOT}/anxin-doctor-{nonce}/doctor"
    queue = client.subscribe(f"$share/{shared_group}-doctor/{topic}", qos=1)
    try:
        await client.wait_subscribed(CONNECT_TIMEOUT_S)
        await client.publish(topic, b"doctor", qos=1)
        message = await asyncio.wait_for(queue.get(), SHARED_DELIVERY_TIMEOUT_S)
        client.ack(message)
    except TimeoutError:
        return _fail(
            SHARED,
            "代理不支持共享订阅（$share/…）：多个网关副本会重复处理消息。请用 Mosquitto 2 或 "
            "EMQX，或设 ANXIN_MQTT_SHARED_GROUP= 并只运行一个网关",
            "the broker does not deliver shared subscriptions ($share/…): several gateway "
            "replicas would each get every message. Use Mosquitto 2 or EMQX, or set "
            "ANXIN_MQTT_SHARED_GROUP= (empty) and run one gateway",
        )
    return _ok(SHARED, f"$share/{shared_group}/… 可用", f"$share/{shared_group}/… works")


# --- all together -----------------------------------------------------------------------------


async def run_checks(
    settings_factory: Callable[[], Settings] = Settings,
) -> list[Check]:
    settings, parsed = load_settings(settings_factory)
    if settings is None:
        return [parsed]
    checks = [parsed, *check_settings(settings)]
    database_url = settings.database_url.get_secret_value() if settings.database_url else None
    mqtt_url = settings.mqtt_url.get_secret_value() if settings.mqtt_url else None
    database, broker = await asyncio.gather(
        check_database(database_url), check_broker(mqtt_url, settings.mqtt_shared_group)
    )
    return [*checks, *database, *broker]


def exit_code(checks: list[Check], strict: bool = False) -> int:
    bad = {Status.failure, Status.warning} if strict else {Status.failure}
    return 1 if any(c.status in bad for c in checks) else 0


def render(checks: list[Check]) -> str:
    lines = [c.line() for c in checks]
    failures = sum(c.status is Status.failure for c in checks)
    warnings = sum(c.status is Status.warning for c in checks)
    if failures:
        lines.append(f"有 {failures} 项需要修正 / {failures} problem(s) to fix")
    else:
        lines.append(
            "一切正常 / all good"
            + (f"（{warnings} 项提示 / {warnings} warning(s)）" if warnings else "")
        )
    return "\n".join(lines)

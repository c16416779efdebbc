"""Registry tables shared by every part: the four-level network, elders, devices, responders,
operators and the audit log. Times are UTC `timestamptz`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, text
from sqlmodel import Field, SQLModel

from anxin.schemas import ResponderKind


def pk(row: SQLModel) -> int:
    """The primary key of a stored row (SQLModel types it Optional until the row is flushed)."""
    value = getattr(row, "id", None)
    if not isinstance(value, int):
        raise ValueError(f"{type(row).__name__} has no id yet")
    return value


def utc_column(*, nullable: bool = True, index: bool = False) -> Any:
    """A timestamptz column (a fresh Column per use: SQLAlchemy columns belong to one table)."""
    return Field(
        default=None if nullable else ...,
        sa_type=DateTime(timezone=True),
        nullable=nullable,
        index=index,
    )


def json_column(default: Any) -> Any:
    factory = (lambda: dict(default)) if isinstance(default, dict) else (lambda: list(default))
    return Field(default_factory=factory, sa_column=Column(JSON, nullable=False))


class Region(SQLModel, table=True):
    __tablename__ = "regions"
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(unique=True, max_length=32)
    name: str = Field(max_length=64)
    level: str = Field(max_length=16)
    parent_id: int | None = Field(default=None, foreign_key="regions.id", index=True)
    lat: float | None = None
    lon: float | None = None
    # The 15-minute rule and the ladder are per region; they are snapshotted onto each alert.
    response_minutes: int = 15
    circuity: float = 1.4
    ladder: dict[str, Any] = json_column({})
    # km/h per travel mode ({"horseback": 6}), merged county → township → village over
    # dispatcher.routing.DEFAULT_SPEEDS_KMH by routing.speeds_for.
    # None: no speeds of its own (nullable, so bulk inserts that name no such column still work).
    travel_speeds: dict[str, Any] | None = Field(default=None, sa_type=JSON)


class ServiceCentre(SQLModel, table=True):
    __tablename__ = "service_centres"
    id: int | None = Field(default=None, primary_key=True)
    region_id: int = Field(foreign_key="regions.id", index=True)
    level: str = Field(max_length=16)  # township | county
    name: str = Field(max_length=64)
    duty_phone: str = Field(max_length=20)
    lat: float
    lon: float
    has_vehicle: bool = True


class Elder(SQLModel, table=True):
    __tablename__ = "elders"
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(unique=True, max_length=32)
    name: str = Field(max_length=32)
    village_id: int = Field(foreign_key="regions.id", index=True)
    address: str = Field(default="", max_length=128)
    lat: float
    lon: float
    living_alone: bool = False  # 独居
    empty_nest: bool = False  # 空巢
    left_behind: bool = False  # 留守
    disabled: bool = False  # 失能
    advanced_age: bool = False  # 高龄
    # The rest of the civil-affairs categories (探访关爱 decides visit tiers by them).
    extreme_poverty: bool = False  # 特困 / 分散供养特困
    low_income: bool = False  # 低保 / 经济困难
    semi_disabled: bool = False  # 半失能
    dementia: bool = False  # 失智
    severe_disability: bool = False  # 重残
    family_planning_special: bool = False  # 计划生育特殊家庭
    wanders: bool = False  # 走失风险: door_open at night is urgent
    guardian_phones: list[str] = json_column([])
    consent: bool = True
    night_start: str = "22:00"
    night_end: str = "06:00"
    thresholds: dict[str, Any] = json_column({})
    # A second place part of each year (a summer pasture, a child's home in town), from
    # season_start to season_end (MM-DD, every year; dispatcher.routing.season_applies):
    # routing and coverage use it while it applies. All four set, or none.
    season_address: str | None = Field(default=None, max_length=128)
    season_lat: float | None = None
    season_lon: float | None = None
    season_start: str | None = Field(default=None, max_length=5)
    season_end: str | None = Field(default=None, max_length=5)
    # Set instead of deleting (the history names the elder): out of the lists, no new alerts.
    archived_at: datetime | None = utc_column()


class Device(SQLModel, table=True):
    __tablename__ = "devices"
    __table_args__ = (
        # The liveness sweeper reads only devices that are online, ordered by deadline.
        Index(
            "ix_devices_offline_after",
            "offline_after",
            postgresql_where=text("online AND enabled"),
        ),
    )
    id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=16)
    elder_id: int = Field(foreign_key="elders.id", index=True)
    password_hash: str = Field(default="", max_length=256)
    heartbeat_interval_s: int = 60
    enabled: bool = True
    online: bool = False
    last_seen_at: datetime | None = utc_column()
    offline_after: datetime | None = utc_column()
    battery: int | None = None
    rssi: int | None = None
    # Set instead of deleting (events name the device); an archived device is also disabled.
    archived_at: datetime | None = utc_column()


class Responder(SQLModel, table=True):
    """Anyone the dispatcher can send: village aides, and each centre's duty phone."""

    __tablename__ = "responders"
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(default=ResponderKind.aide, max_length=20)
    name: str = Field(max_length=32)
    phone: str = Field(unique=True, max_length=20)
    village_id: int | None = Field(default=None, foreign_key="regions.id", index=True)
    centre_id: int | None = Field(default=None, foreign_key="service_centres.id")
    lat: float
    lon: float
    travel_mode: str = Field(default="ebike", max_length=16)
    setup_minutes: float = 2.0
    on_duty: bool = True
    lang: str = Field(default="zh", max_length=8)


class OperatorUser(SQLModel, table=True):
    __tablename__ = "operator_users"
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, max_length=64)
    display_name: str = Field(max_length=64)
    password_hash: str = Field(max_length=256)
    role: str = Field(max_length=24)
    region_id: int = Field(foreign_key="regions.id")
    lang: str = Field(default="zh", max_length=8)
    failed_logins: int = 0
    locked_until: datetime | None = utc_column()


class AuditLog(SQLModel, table=True):
    """Append-only: the API offers no update or delete of these rows."""

    __tablename__ = "audit_log"
    id: int | None = Field(default=None, sa_type=BigInteger, primary_key=True)
    at: datetime = utc_column(nullable=False, index=True)
    operator_id: int | None = Field(default=None, foreign_key="operator_users.id", index=True)
    action: str = Field(max_length=64)
    target_type: str = Field(default="", max_length=32)
    target_id: str = Field(default="", max_length=64)
    detail: dict[str, Any] = json_column({})

"""Care-visit tables: each region's visit-plan override, who owns an elder's visits, every visit
reported (counted or rejected, kept for the record) and the major changes operators mark.
Times are UTC `timestamptz`; `local_date` is the visit's day in the deployment's time zone."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Index, text
from sqlmodel import Field, SQLModel

from anxin.models import json_column, utc_column


class VisitMode(StrEnum):
    home = "home"  # 上门探视 (an aide's SMS and a hub's visit button are home visits)
    phone = "phone"  # 通讯探访


class VisitChannel(StrEnum):
    sms = "sms"  # the aide's `访 E0012` reply
    device = "device"  # a home hub's `visit` event
    console = "console"  # an operator through the API


class VisitStatus(StrEnum):
    counted = "counted"  # counts towards the visit rate
    rejected = "rejected"  # kept for the record, counts nowhere (see `RejectReason`)


class RejectReason(StrEnum):
    unknown_elder = "unknown_elder"
    not_assigned = "not_assigned"  # the aide does not own this elder's visits
    same_day = "same_day"  # the elder already has a counted visit that day
    future = "future"  # a visit time later than now
    archived = "archived"  # the elder has left the registry


class RegionVisitPlan(SQLModel, table=True):
    """One region's own visit-plan settings (a partial `visits.schedule.VisitPlan` snapshot);
    merged county → township → village over the product defaults, as the ladder is."""

    __tablename__ = "region_visit_plans"
    region_id: int = Field(foreign_key="regions.id", primary_key=True)
    plan: dict[str, Any] = json_column({})
    updated_at: datetime | None = utc_column()


class VisitOwner(SQLModel, table=True):
    """An explicit owner of an elder's visits. Without a row, the owner is the elder's village's
    first aide (`visits.service.owners`)."""

    __tablename__ = "visit_owners"
    elder_id: int = Field(foreign_key="elders.id", primary_key=True)
    responder_id: int = Field(foreign_key="responders.id", index=True)
    assigned_at: datetime = utc_column(nullable=False)


class Visit(SQLModel, table=True):
    __tablename__ = "visits"
    __table_args__ = (
        # One counted visit per elder and local day: a second one the same day is rejected.
        Index(
            "uq_visits_counted_per_day",
            "elder_id",
            "local_date",
            unique=True,
            postgresql_where=text("status = 'counted'"),
        ),
    )
    id: int | None = Field(default=None, sa_type=BigInteger, primary_key=True)
    # NULL only for a rejected report naming an unknown elder (`elder_code` keeps what was said).
    elder_id: int | None = Field(default=None, foreign_key="elders.id", index=True)
    elder_code: str = Field(default="", max_length=32)
    visited_at: datetime = utc_column(nullable=False, index=True)
    local_date: date
    recorded_at: datetime = utc_column(nullable=False)
    mode: str = Field(default=VisitMode.home, max_length=8)
    channel: str = Field(max_length=8)
    status: str = Field(default=VisitStatus.counted, max_length=10)
    reject_reason: str | None = Field(default=None, max_length=16)
    responder_id: int | None = Field(default=None, foreign_key="responders.id", index=True)
    operator_id: int | None = Field(default=None, foreign_key="operator_users.id")
    device_id: str | None = Field(default=None, max_length=64)
    event_id: int | None = Field(default=None, sa_type=BigInteger)  # gateway's events.id
    sms_id: int | None = Field(default=None, sa_type=BigInteger)  # the inbound sms_messages.id
    note: str = Field(default="", max_length=500)
    concern: bool = False  # 异常: something found that needs following up
    alert_id: int | None = Field(default=None, foreign_key="alerts.id")


class MajorChange(SQLModel, table=True):
    """An operator marks a major change in an elder's life (a hospital stay, a death in the
    family): a visit is due within the plan's `major_change_hours` (24 h by default)."""

    __tablename__ = "major_changes"
    id: int | None = Field(default=None, primary_key=True)
    elder_id: int = Field(foreign_key="elders.id", index=True)
    marked_at: datetime = utc_column(nullable=False)
    due_by: datetime = utc_column(nullable=False, index=True)
    note: str = Field(default="", max_length=500)
    operator_id: int | None = Field(default=None, foreign_key="operator_users.id")

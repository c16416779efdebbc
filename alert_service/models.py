"""Alert tables: the alert with its deadlines on the row, its timeline, pending rule timers, and
the ladder's dispatch attempts (who was asked at which step, and how they answered)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from anxin.models import json_column, utc_column


class AlertStatus(StrEnum):
    raised = "raised"
    dispatching = "dispatching"
    accepted = "accepted"
    on_scene = "on_scene"
    resolved = "resolved"


OPEN_STATUSES = (
    AlertStatus.raised,
    AlertStatus.dispatching,
    AlertStatus.accepted,
    AlertStatus.on_scene,
)


class Alert(SQLModel, table=True):
    __tablename__ = "alerts"
    __table_args__ = (
        # Grouping: one open alert per elder and kind, enforced by the database.
        Index(
            "uq_alerts_open_per_elder_kind",
            "elder_id",
            "kind",
            unique=True,
            postgresql_where=text("status <> 'resolved'"),
        ),
        # The watcher claims due alerts in deadline order.
        Index(
            "ix_alerts_next_check_at",
            "next_check_at",
            postgresql_where=text("next_check_at IS NOT NULL"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    elder_id: int = Field(foreign_key="elders.id", index=True)
    village_id: int = Field(foreign_key="regions.id", index=True)
    township_id: int | None = Field(default=None, foreign_key="regions.id", index=True)
    county_id: int | None = Field(default=None, foreign_key="regions.id", index=True)
    device_id: str | None = Field(default=None, max_length=64)
    kind: str = Field(max_length=24)
    priority: int = Field(index=True)  # 1 emergency, 2 urgent, 3 device trouble
    status: str = Field(default=AlertStatus.raised, max_length=16, index=True)
    raised_at: datetime = utc_column(nullable=False, index=True)
    respond_by: datetime | None = utc_column()
    accepted_at: datetime | None = utc_column()
    accepted_by: int | None = Field(default=None, foreign_key="responders.id")
    on_scene_at: datetime | None = utc_column()
    resolved_at: datetime | None = utc_column()
    resolved_by: str | None = Field(default=None, max_length=64)
    outcome: str | None = Field(default=None, max_length=32)
    note: str = Field(default="", max_length=1000)
    trigger_count: int = 1
    last_trigger_at: datetime = utc_column(nullable=False)
    at_risk: bool = False
    breached: bool = False
    cancel_requested: bool = False
    call_120: bool = False
    reminder_sent_at: datetime | None = utc_column()
    # The ladder as it was when the alert was raised: a later settings change never moves it.
    ladder: dict[str, Any] = json_column({})
    # The responder ranking with ETAs, so an operator sees why someone was asked.
    ranking: list[dict[str, Any]] = json_column([])
    # The durable timer: when the watcher must look at this alert next.
    next_check_at: datetime | None = utc_column()
    # When the response started (responders ranked, guardians told, step 0 run). NULL on an
    # alert whose clock runs means the watcher has yet to do it: the gateway's ack path only
    # makes the alert durable and sets `next_check_at` to now.
    ranked_at: datetime | None = utc_column()
    # Where it came from: "device" (the gateway, a visit report), "phone_in" (an operator for a
    # caller), "text_in" (an SMS with a help word). The figures split by it.
    source: str = Field(
        default="device", max_length=16, sa_column_kwargs={"server_default": "device"}
    )
    # A phone-in's caller: elder, relative, neighbour, hotline, other; and their number.
    caller_role: str | None = Field(default=None, max_length=16)
    caller_phone: str | None = Field(default=None, max_length=20)

    @property
    def code(self) -> str:
        return f"A{self.id}"


class AlertTimelineEntry(SQLModel, table=True):
    __tablename__ = "alert_timeline"
    id: int | None = Field(default=None, sa_type=BigInteger, primary_key=True)
    alert_id: int = Field(foreign_key="alerts.id", index=True)
    at: datetime = utc_column(nullable=False)
    actor: str = Field(max_length=64)  # system | device:ID | responder:ID | operator:NAME
    action: str = Field(max_length=32)
    detail: dict[str, Any] = json_column({})


class RuleTimer(SQLModel, table=True):
    """A rule waiting on time before it raises an alert (e.g. bed exit with no return)."""

    __tablename__ = "rule_timers"
    __table_args__ = (
        # Only live timers: cancelled ones (every night's bed return) would pile up in the
        # watcher's scan otherwise.
        Index(
            "ix_rule_timers_due",
            "due_at",
            postgresql_where=text("fired_at IS NULL AND NOT cancelled"),
        ),
    )
    id: int | None = Field(default=None, sa_type=BigInteger, primary_key=True)
    elder_id: int = Field(foreign_key="elders.id", index=True)
    device_id: str | None = Field(default=None, max_length=64)
    kind: str = Field(max_length=24)
    due_at: datetime = utc_column(nullable=False)
    fired_at: datetime | None = utc_column()
    cancelled: bool = False
    detail: dict[str, Any] = json_column({})


class AttemptAnswer(StrEnum):
    pending = "pending"
    accepted = "accepted"
    declined = "declined"
    timed_out = "timed_out"
    failed = "failed"
    superseded = "superseded"  # someone else took it
    withdrawn = "withdrawn"  # the operator reassigned the alert to someone else (改派)


class DispatchAttempt(SQLModel, table=True):
    __tablename__ = "dispatch_attempts"
    __table_args__ = (
        UniqueConstraint(
            "alert_id", "responder_id", "step", name="uq_attempt_alert_responder_step"
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(foreign_key="alerts.id", index=True)
    responder_id: int = Field(foreign_key="responders.id", index=True)
    step: int
    role: str = Field(max_length=20)  # aide | township_centre | county_centre
    asked_at: datetime = utc_column(nullable=False)
    distance_km: float | None = None
    eta_minutes: float | None = None
    answer: str = Field(default=AttemptAnswer.pending, max_length=16)
    answered_at: datetime | None = utc_column()
    # Voice (issue 19): when the call-out SMS failed (with voice on, a call is placed at once
    # instead of moving on), and when this responder's phone was called for this attempt.
    sms_failed_at: datetime | None = utc_column()
    called_at: datetime | None = utc_column()

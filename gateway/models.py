"""Gateway tables: every device message that passed validation, and every one that did not."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from anxin.models import utc_column


class Event(SQLModel, table=True):
    __tablename__ = "events"
    # The natural key: a device resends until acked, the platform stores each event once.
    __table_args__ = (UniqueConstraint("device_id", "event_id", name="uq_events_device_event"),)
    id: int | None = Field(default=None, sa_type=BigInteger, primary_key=True)
    device_id: str = Field(foreign_key="devices.id", max_length=64)
    event_id: str = Field(max_length=64)
    type: str = Field(max_length=24)
    elder_id: int = Field(foreign_key="elders.id", index=True)
    device_ts: datetime | None = utc_column()
    received_at: datetime = utc_column(nullable=False, index=True)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    alert_id: int | None = Field(default=None, foreign_key="alerts.id", index=True)


class DeadLetter(SQLModel, table=True):
    __tablename__ = "dead_letters"
    id: int | None = Field(default=None, sa_type=BigInteger, primary_key=True)
    received_at: datetime = utc_column(nullable=False, index=True)
    topic: str = Field(max_length=256)
    device_id: str | None = Field(default=None, max_length=64, index=True)
    reason: str = Field(max_length=32)
    detail: str = Field(default="", max_length=512)
    payload: str = Field(default="", max_length=4096)  # truncated, decoded with replacement


class GatewayLiveness(SQLModel, table=True):
    """One row per gateway replica, written every few seconds while it is connected to the
    broker and the database answers: the durable record of when the platform last listened,
    so a restart can tell the platform's own gap from silent devices."""

    __tablename__ = "gateway_liveness"
    gateway_id: str = Field(primary_key=True, max_length=64)
    alive_at: datetime = utc_column(nullable=False)
    # Devices' silence counts from here: set when this replica came back after the platform's
    # gap, or after its own absence while its share of a shared subscription was held for it.
    grace_from: datetime | None = utc_column()
    # Heartbeats reach it through a shared subscription: while it is away the broker holds its
    # share for its session, and the other replicas do not hear those devices.
    shared: bool = False

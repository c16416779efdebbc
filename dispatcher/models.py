"""Dispatcher tables: every SMS in or out, what is in flight, routed travel times.

Who was asked for which alert at which step (`DispatchAttempt`) is the ladder's: see
`alert_service.models`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Index, SmallInteger, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from anxin.models import utc_column


class SmsStatus(StrEnum):
    queued = "queued"  # in the outbox, not yet handed to a provider
    outbox = "outbox"  # outbox-only provider: kept for the console, never sent
    sent = "sent"
    delivered = "delivered"
    undelivered = "undelivered"
    failed = "failed"
    received = "received"  # inbound


# The outbox's lane for SMS that call nobody out (guardians, replies to aides): after every
# P1/P2 call-out, with P3 call-outs.
SMS_DEFAULT_PRIORITY = 3


class SmsMessage(SQLModel, table=True):
    __tablename__ = "sms_messages"
    __table_args__ = (
        # Claimed by priority (a P1 call-out first), then by due time, then in queued order.
        Index(
            "ix_sms_outbox_due",
            "priority",
            "next_attempt_at",
            "id",
            postgresql_where=text("status = 'queued'"),
        ),
        # The per-number daily limit counts what went to one number in the last 24 hours.
        Index(
            "ix_sms_out_to_phone_sent_at",
            "to_phone",
            "sent_at",
            postgresql_where=text("direction = 'out' AND provider_sid IS NOT NULL"),
        ),
    )
    id: int | None = Field(default=None, sa_type=BigInteger, primary_key=True)
    direction: str = Field(max_length=3)  # out | in
    # Never send one message twice: one key per alert, responder and step.
    idempotency_key: str | None = Field(default=None, unique=True, max_length=128)
    alert_id: int | None = Field(default=None, foreign_key="alerts.id", index=True)
    responder_id: int | None = Field(default=None, foreign_key="responders.id", index=True)
    # An SMS from an elder's family (a guardian's registered number): the elder it is about,
    # so the operator reads it on the elder's page (GET /api/elders/{id}/messages).
    elder_id: int | None = Field(default=None, foreign_key="elders.id", index=True)
    purpose: str = Field(default="", max_length=24)
    # A call-out or reminder: its alert's priority; any other SMS (guardians, replies): 3.
    priority: int = Field(
        default=SMS_DEFAULT_PRIORITY,
        sa_type=SmallInteger,
        sa_column_kwargs={"server_default": str(SMS_DEFAULT_PRIORITY)},
    )
    to_phone: str = Field(max_length=20)
    from_phone: str = Field(default="", max_length=20)
    body: str = Field(max_length=1600)
    status: str = Field(default=SmsStatus.queued, max_length=16)
    provider_sid: str | None = Field(default=None, max_length=64, index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=256)
    # For the operator: e.g. this number is close to its daily SMS limit.
    warning: str | None = Field(default=None, max_length=256)
    created_at: datetime = utc_column(nullable=False, index=True)
    next_attempt_at: datetime | None = utc_column()
    sent_at: datetime | None = utc_column()
    updated_at: datetime | None = utc_column()


class TravelTime(SQLModel, table=True):
    """Minutes from a responder to an elder's home by road, precomputed by a road router.

    Imported per responder and home (dispatcher.cli import-travel-times); when present it
    overrides the straight-line estimate, which cannot see rivers and mountain roads.
    """

    __tablename__ = "travel_times"
    __table_args__ = (
        UniqueConstraint("elder_id", "responder_id", name="uq_travel_time_elder_responder"),
    )
    id: int | None = Field(default=None, primary_key=True)
    elder_id: int = Field(foreign_key="elders.id", index=True)
    responder_id: int = Field(foreign_key="responders.id", index=True)
    minutes: float
    source: str = Field(default="", max_length=64)  # which router or file it came from
    imported_at: datetime = utc_column(nullable=False)


class FamilyOptOut(SQLModel, table=True):
    """A guardian's number that replied 退订: no notices to it (the alert's start, the all clear)
    until it replies 订阅. By number: one phone may be the guardian of several elders."""

    __tablename__ = "family_opt_outs"
    phone: str = Field(primary_key=True, max_length=20)
    since: datetime = utc_column(nullable=False)


__all__ = ["FamilyOptOut", "SmsMessage", "SmsStatus", "TravelTime"]


class SmsInFlight(SQLModel, table=True):
    """An SMS handed to the provider by a pass that has not committed its outcome yet.

    Written and committed just before the POST, in a transaction of its own; removed with the
    outcome. A row still here when the SMS is claimed again means the pass that sent it died
    between the POST and its commit: the provider is asked whether it has that message before
    it is sent again, so a crashed dispatcher does not text an aide twice.
    """

    __tablename__ = "sms_in_flight"
    # No foreign key on purpose: its check would take a share lock on the SMS row, which the
    # sending pass holds FOR UPDATE while it waits for this row's commit.
    sms_id: int = Field(sa_type=BigInteger, primary_key=True)
    since: datetime = utc_column(nullable=False)


class CallStatus(StrEnum):
    """A voice call-out's state, provider-neutral (each provider maps its own words to these)."""

    queued = "queued"  # written, not yet handed to a provider
    outbox = "outbox"  # no voice provider configured: kept for the console, never placed
    placed = "placed"  # the provider took it (it has a provider id)
    ringing = "ringing"
    answered = "answered"  # picked up (a key may follow)
    completed = "completed"  # hung up after being answered
    no_answer = "no_answer"
    busy = "busy"  # rejected or busy
    failed = "failed"  # the provider could not place it (or the daily limit was reached)
    canceled = "canceled"


# Outcomes after which the call can change nothing more.
CALL_FINAL = frozenset(
    {
        CallStatus.completed,
        CallStatus.no_answer,
        CallStatus.busy,
        CallStatus.failed,
        CallStatus.canceled,
    }
)
# Outcomes that mean "the phone did not reach the responder": the ladder moves on.
CALL_UNANSWERED = frozenset(
    {CallStatus.no_answer, CallStatus.busy, CallStatus.failed, CallStatus.canceled}
)


class VoiceCall(SQLModel, table=True):
    """A voice call-out (issue 19): the same aide's (or duty phone's) phone called when the
    call-out SMS has no answer, at night, or when it failed. Written by the ladder in its
    transaction, placed once by `dispatcher.calls` (same patterns as `SmsMessage`)."""

    __tablename__ = "voice_calls"
    __table_args__ = (
        Index(
            "ix_voice_calls_due",
            "next_attempt_at",
            "id",
            postgresql_where=text("status = 'queued'"),
        ),
        Index(
            "ix_voice_calls_to_phone_placed_at",
            "to_phone",
            "placed_at",
            postgresql_where=text("provider_sid IS NOT NULL"),
        ),
    )
    id: int | None = Field(default=None, sa_type=BigInteger, primary_key=True)
    # Never call twice for one ladder step: one key per alert, responder and step.
    idempotency_key: str = Field(unique=True, max_length=128)
    alert_id: int | None = Field(default=None, foreign_key="alerts.id", index=True)
    responder_id: int | None = Field(default=None, foreign_key="responders.id", index=True)
    step: int = 0
    # Why the ladder called: no_sms_answer | night | sms_failed (a call that cannot be placed
    # after a failed SMS moves the ladder on; otherwise the SMS's timeout still runs).
    reason: str = Field(default="", max_length=16)
    priority: int = Field(default=1, sa_type=SmallInteger)
    to_phone: str = Field(max_length=20)
    speech_text: str = Field(max_length=1000)
    status: str = Field(default=CallStatus.queued, max_length=16)
    # The key the callee pressed ("1", "0", …), once; later presses are ignored.
    digits: str | None = Field(default=None, max_length=8)
    provider: str = Field(default="", max_length=16)
    provider_sid: str | None = Field(default=None, max_length=64, index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=256)
    created_at: datetime = utc_column(nullable=False)
    next_attempt_at: datetime | None = utc_column()
    placed_at: datetime | None = utc_column()
    answered_at: datetime | None = utc_column()
    ended_at: datetime | None = utc_column()
    updated_at: datetime | None = utc_column()


class CallInFlight(SQLModel, table=True):
    """A call handed to the provider by a pass that has not committed its outcome yet (as
    `SmsInFlight`): the next pass asks the provider (`VoiceProvider.find_placed`) first."""

    __tablename__ = "voice_calls_in_flight"
    call_id: int = Field(sa_type=BigInteger, primary_key=True)
    since: datetime = utc_column(nullable=False)

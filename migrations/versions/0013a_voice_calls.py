"""voice call-outs: calls, their in-flight marks, the attempt's call and failed SMS (issue 19)

`voice_calls` is the SMS outbox's twin for call-outs by phone: one row per alert, responder
and ladder step (idempotency key), its outcome and the key the callee pressed;
`voice_calls_in_flight` marks a call handed to the provider whose outcome is not committed
(so a crashed dispatcher does not ring an aide twice). `dispatch_attempts` gains when the
call-out SMS failed and when the responder was called. The ladder's voice settings live in
the ladder JSON (regions.ladder, alerts.ladder): no column.

Revision ID: 0013a
Revises: 0012c
Create Date: 2026-12-03 14:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0013a"
down_revision: str | None = "0012c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "voice_calls",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column(
            "idempotency_key",
            sqlmodel.sql.sqltypes.AutoString(length=128),
            nullable=False,
            unique=True,
        ),
        sa.Column("alert_id", sa.Integer(), sa.ForeignKey("alerts.id"), nullable=True),
        sa.Column("responder_id", sa.Integer(), sa.ForeignKey("responders.id"), nullable=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("to_phone", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("speech_text", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("digits", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("provider_sid", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=True),
        sa.Column("placed_at", UTC, nullable=True),
        sa.Column("answered_at", UTC, nullable=True),
        sa.Column("ended_at", UTC, nullable=True),
        sa.Column("updated_at", UTC, nullable=True),
    )
    op.create_index("ix_voice_calls_alert_id", "voice_calls", ["alert_id"])
    op.create_index("ix_voice_calls_responder_id", "voice_calls", ["responder_id"])
    op.create_index("ix_voice_calls_provider_sid", "voice_calls", ["provider_sid"])
    op.create_index(
        "ix_voice_calls_due",
        "voice_calls",
        ["next_attempt_at", "id"],
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "ix_voice_calls_to_phone_placed_at",
        "voice_calls",
        ["to_phone", "placed_at"],
        postgresql_where=sa.text("provider_sid IS NOT NULL"),
    )
    op.create_table(
        "voice_calls_in_flight",
        # No foreign key, as sms_in_flight: its check would wait on the sending pass's lock.
        sa.Column("call_id", sa.BigInteger(), primary_key=True),
        sa.Column("since", UTC, nullable=False),
    )
    op.add_column("dispatch_attempts", sa.Column("sms_failed_at", UTC, nullable=True))
    op.add_column("dispatch_attempts", sa.Column("called_at", UTC, nullable=True))


def downgrade() -> None:
    op.drop_column("dispatch_attempts", "called_at")
    op.drop_column("dispatch_attempts", "sms_failed_at")
    op.drop_table("voice_calls_in_flight")
    op.drop_table("voice_calls")

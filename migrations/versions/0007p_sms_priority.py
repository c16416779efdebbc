"""sms_messages.priority: the outbox sends a P1 call-out before guardian notices and P3 asks

A township's power cut queues a welfare-check call-out and guardian notices for every elder
living alone whose hub went silent; an SOS elsewhere queued meanwhile waited behind them in
the outbox's first-queued-first-sent order. Call-outs and reminders now carry their alert's
priority (everything else 3) and the outbox claims by priority, then by due time, then in
queued order.

Revision ID: 0007p
Revises: 0006o
Create Date: 2026-11-23 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007p"
down_revision: str | None = "0006o"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sms_messages",
        sa.Column("priority", sa.SmallInteger(), nullable=False, server_default="3"),
    )
    op.drop_index("ix_sms_outbox_due", table_name="sms_messages")
    op.create_index(
        "ix_sms_outbox_due",
        "sms_messages",
        ["priority", "next_attempt_at", "id"],
        postgresql_where=sa.text("status = 'queued'"),
    )


def downgrade() -> None:
    op.drop_index("ix_sms_outbox_due", table_name="sms_messages")
    op.create_index(
        "ix_sms_outbox_due",
        "sms_messages",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.drop_column("sms_messages", "priority")

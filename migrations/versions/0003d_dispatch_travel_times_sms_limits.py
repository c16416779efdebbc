"""dispatcher: travel-time table, SMS warning column, per-number daily-limit index

Revision ID: 0003d
Revises: 0001
Create Date: 2026-11-23 06:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003d"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "travel_times",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("elder_id", sa.Integer(), nullable=False),
        sa.Column("responder_id", sa.Integer(), nullable=False),
        sa.Column("minutes", sa.Float(), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["elder_id"], ["elders.id"]),
        sa.ForeignKeyConstraint(["responder_id"], ["responders.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("elder_id", "responder_id", name="uq_travel_time_elder_responder"),
    )
    op.create_index(op.f("ix_travel_times_elder_id"), "travel_times", ["elder_id"], unique=False)
    op.create_index(
        op.f("ix_travel_times_responder_id"), "travel_times", ["responder_id"], unique=False
    )
    op.add_column(
        "sms_messages",
        sa.Column("warning", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
    )
    op.create_index(
        "ix_sms_out_to_phone_sent_at",
        "sms_messages",
        ["to_phone", "sent_at"],
        unique=False,
        postgresql_where=sa.text("direction = 'out' AND provider_sid IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_sms_out_to_phone_sent_at",
        table_name="sms_messages",
        postgresql_where=sa.text("direction = 'out' AND provider_sid IS NOT NULL"),
    )
    op.drop_column("sms_messages", "warning")
    op.drop_index(op.f("ix_travel_times_responder_id"), table_name="travel_times")
    op.drop_index(op.f("ix_travel_times_elder_id"), table_name="travel_times")
    op.drop_table("travel_times")

"""care visits: visit plans, visits, major changes (issue 18)

Four tables of `visits.models`: each region's visit-plan override (merged county → township →
village over the product defaults), an explicit owner of an elder's visits, every visit reported
(counted or rejected, one counted per elder and local day) and the major changes operators mark.

Revision ID: 0011w
Revises: 0010v
Create Date: 2026-12-03 14:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011w"
down_revision: str | None = "0010v"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "region_visit_plans",
        sa.Column("region_id", sa.Integer(), sa.ForeignKey("regions.id"), primary_key=True),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "visit_owners",
        sa.Column("elder_id", sa.Integer(), sa.ForeignKey("elders.id"), primary_key=True),
        sa.Column("responder_id", sa.Integer(), sa.ForeignKey("responders.id"), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_visit_owners_responder_id", "visit_owners", ["responder_id"])
    op.create_table(
        "visits",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("elder_id", sa.Integer(), sa.ForeignKey("elders.id"), nullable=True),
        sa.Column("elder_code", sa.String(32), nullable=False),
        sa.Column("visited_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("local_date", sa.Date(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("reject_reason", sa.String(16), nullable=True),
        sa.Column("responder_id", sa.Integer(), sa.ForeignKey("responders.id"), nullable=True),
        sa.Column("operator_id", sa.Integer(), sa.ForeignKey("operator_users.id"), nullable=True),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("sms_id", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("concern", sa.Boolean(), nullable=False),
        sa.Column("alert_id", sa.Integer(), sa.ForeignKey("alerts.id"), nullable=True),
    )
    op.create_index("ix_visits_elder_id", "visits", ["elder_id"])
    op.create_index("ix_visits_visited_at", "visits", ["visited_at"])
    op.create_index("ix_visits_responder_id", "visits", ["responder_id"])
    op.create_index(
        "uq_visits_counted_per_day",
        "visits",
        ["elder_id", "local_date"],
        unique=True,
        postgresql_where=sa.text("status = 'counted'"),
    )
    op.create_table(
        "major_changes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("elder_id", sa.Integer(), sa.ForeignKey("elders.id"), nullable=False),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_by", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("operator_id", sa.Integer(), sa.ForeignKey("operator_users.id"), nullable=True),
    )
    op.create_index("ix_major_changes_elder_id", "major_changes", ["elder_id"])
    op.create_index("ix_major_changes_due_by", "major_changes", ["due_by"])


def downgrade() -> None:
    op.drop_table("major_changes")
    op.drop_table("visits")
    op.drop_table("visit_owners")
    op.drop_table("region_visit_plans")

"""alerts: the rule-timer index holds only live timers (not fired, not cancelled)

Every night's bed return cancels a timer. Left in the index, cancelled timers pile up behind
the watcher's `due_at <= now` scan, which would wade through all of them on every poll.

Revision ID: 0004a
Revises: 0003d
Create Date: 2026-11-23 07:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004a"
down_revision: str | None = "0003d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index(
        "ix_rule_timers_due", table_name="rule_timers", postgresql_where=sa.text("fired_at IS NULL")
    )
    op.create_index(
        "ix_rule_timers_due",
        "rule_timers",
        ["due_at"],
        unique=False,
        postgresql_where=sa.text("fired_at IS NULL AND NOT cancelled"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_rule_timers_due",
        table_name="rule_timers",
        postgresql_where=sa.text("fired_at IS NULL AND NOT cancelled"),
    )
    op.create_index(
        "ix_rule_timers_due",
        "rule_timers",
        ["due_at"],
        unique=False,
        postgresql_where=sa.text("fired_at IS NULL"),
    )

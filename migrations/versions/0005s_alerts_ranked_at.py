"""alerts: ranked_at, when the response started (ranking, guardian notice, step 0)

The gateway's ack path now only makes the alert durable; the watcher ranks the responders,
tells the guardians and runs step 0 a few milliseconds later. `ranked_at` IS NULL on an alert
whose clock runs marks that work as still to do. Alerts raised before this revision had it
done in the raising transaction, so they are backfilled.

Revision ID: 0005s
Revises: 0004a
Create Date: 2026-11-23 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005s"
down_revision: str | None = "0004a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("alerts", sa.Column("ranked_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE alerts SET ranked_at = raised_at WHERE respond_by IS NOT NULL")


def downgrade() -> None:
    op.drop_column("alerts", "ranked_at")

"""gateway_liveness: when each gateway replica last listened, so downtime is not the devices'

A demo restarted after 25 minutes down took every device offline at once (their heartbeats were
old), one P3 alert per home. Each gateway's sweeper now writes its row while it is connected and
storing; a gateway coming back after no gateway was alive gives every device a grace of its
missed-beats rule from the restart and records the gap on the open alerts' timelines.

Revision ID: 0008g
Revises: 0007p
Create Date: 2026-12-03 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008g"
down_revision: str | None = "0007p"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_liveness",
        sa.Column("gateway_id", sa.String(length=64), primary_key=True),
        sa.Column("alive_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("grace_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("shared", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_liveness")

"""elders.archived_at, devices.archived_at: removing an elder or a device archives it

Deleting an elder or a device would lose the history that names them (events, alerts, SMS,
the monthly figures, the audit log). `DELETE /api/elders/{id}` and `DELETE /api/devices/{id}`
set `archived_at` instead: the record leaves the registry's lists, its devices are disabled
(rejected with `disabled_device`, left out of `anxin devices export-mosquitto`), and the rows
that refer to it stay as they were.

Revision ID: 0009r
Revises: 0008g
Create Date: 2026-12-04 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009r"
down_revision: str | None = "0008g"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("elders", sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("devices", sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("devices", "archived_at")
    op.drop_column("elders", "archived_at")

"""phone-in alerts (issue 20 item 1): where an alert came from, and who phoned it in

`alerts.source` is `device` (the gateway, a visit report), `phone_in` (an operator raised it
for a caller, POST /api/phone-in) or `text_in` (an SMS with a help word); the figures split by
it. `caller_role` (elder, relative, neighbour, hotline, other) and `caller_phone` are set on a
phone-in only.

Revision ID: 0015p
Revises: 0014y
Create Date: 2026-12-03 18:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0015p"
down_revision: str | None = "0014y"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "alerts",
        sa.Column(
            "source",
            sqlmodel.sql.sqltypes.AutoString(length=16),
            nullable=False,
            server_default="device",
        ),
    )
    op.add_column(
        "alerts",
        sa.Column("caller_role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    )
    op.add_column(
        "alerts",
        sa.Column("caller_phone", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("alerts", "caller_phone")
    op.drop_column("alerts", "caller_role")
    op.drop_column("alerts", "source")

"""elders' categories: 特困, 低保, 半失能, 失智, 重残, 计划生育特殊家庭 (issue 18)

The civil-affairs roster names more categories than the five flags the registry had; the
visit plans (探访关爱) decide an elder's tier by them. One boolean column each, like the others.

Revision ID: 0010v
Revises: 0009r
Create Date: 2026-12-03 14:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010v"
down_revision: str | None = "0009r"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


COLUMNS = (
    "extreme_poverty",
    "low_income",
    "semi_disabled",
    "dementia",
    "severe_disability",
    "family_planning_special",
)


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column(
            "elders", sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false())
        )
        # The default only fills existing rows; the models write every column.
        op.alter_column("elders", name, server_default=None)


def downgrade() -> None:
    for name in COLUMNS:
        op.drop_column("elders", name)

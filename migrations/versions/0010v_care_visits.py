"""care visits: elders' categories, visit plans, visits (issue 18)

Revision ID: 0010v
Revises: 0009r
Create Date: 2026-12-03 14:10:00
"""

from collections.abc import Sequence

revision: str = "0010v"
down_revision: str | None = "0009r"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

"""care visits: visit plans, visits, major changes (issue 18)

Revision ID: 0011w
Revises: 0010v
Create Date: 2026-12-03 14:10:00
"""

from collections.abc import Sequence

revision: str = "0011w"
down_revision: str | None = "0010v"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

"""coverage: travel modes per region, elders' seasonal locations (issue 18)

Revision ID: 0012c
Revises: 0011w
Create Date: 2026-12-03 14:10:00
"""

from collections.abc import Sequence

revision: str = "0012c"
down_revision: str | None = "0011w"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

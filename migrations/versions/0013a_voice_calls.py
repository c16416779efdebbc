"""voice call-outs: calls, ladder voice settings (issue 19)

Revision ID: 0013a
Revises: 0012c
Create Date: 2026-12-03 14:10:00
"""

from collections.abc import Sequence

revision: str = "0013a"
down_revision: str | None = "0012c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

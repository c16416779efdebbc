"""Aliyun provider: provider-neutral message ids and templates (issue 19)

Revision ID: 0014y
Revises: 0013a
Create Date: 2026-12-03 14:10:00
"""

from collections.abc import Sequence

revision: str = "0014y"
down_revision: str | None = "0013a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

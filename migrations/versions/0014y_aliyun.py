"""Aliyun provider (issue 19): no schema change, on purpose

The outbox keeps each SMS's text and the Aliyun provider finds its registered template from it
(dispatcher/aliyun_templates.py); the provider's ids fit the existing provider_sid columns
(BizId, CallId); our row id travels as Aliyun's OutId. This revision keeps the reserved place
in the chain.

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

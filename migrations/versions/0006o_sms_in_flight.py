"""sms_in_flight: SMS handed to the provider whose outcome is not committed yet

A dispatcher killed between the provider's answer and its commit left the SMS queued, and the
next pass sent it again: an aide texted twice for one ladder step (the fault suite found 40 in
one SIGKILL). The marker, committed just before the POST, tells the next pass to ask the
provider first.

Revision ID: 0006o
Revises: 0005s
Create Date: 2026-11-23 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006o"
down_revision: str | None = "0005s"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sms_in_flight",
        # No foreign key: its check would wait on the sending pass's lock of the SMS row.
        sa.Column("sms_id", sa.BigInteger(), primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sms_in_flight")

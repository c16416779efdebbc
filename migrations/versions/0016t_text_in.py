"""text-in alerts and the family heard (issue 20 items 2 and 4)

`sms_messages.elder_id`: an SMS from a guardian's registered number names the elder it is
about (read on the elder's page, GET /api/elders/{id}/messages). `family_opt_outs`: the
numbers that replied 退订 (no notices until 订阅).

Revision ID: 0016t
Revises: 0015p
Create Date: 2026-12-03 19:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0016t"
down_revision: str | None = "0015p"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sms_messages",
        sa.Column("elder_id", sa.Integer(), sa.ForeignKey("elders.id"), nullable=True),
    )
    op.create_index("ix_sms_messages_elder_id", "sms_messages", ["elder_id"])
    op.create_table(
        "family_opt_outs",
        sa.Column("phone", sqlmodel.sql.sqltypes.AutoString(length=20), primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("family_opt_outs")
    op.drop_index("ix_sms_messages_elder_id", table_name="sms_messages")
    op.drop_column("sms_messages", "elder_id")

"""coverage: travel speeds per region, elders' seasonal locations (issue 18)

`regions.travel_speeds` (km/h per travel mode, merged county → township → village over the
product defaults by `dispatcher.routing.speeds_for`) and an elder's second place part of each
year: address, lat/lon and the season's first and last day (MM-DD, every year).

Revision ID: 0012c
Revises: 0011w
Create Date: 2026-12-03 14:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012c"
down_revision: str | None = "0011w"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no server default: the demo seeder's bulk inserts name no such columns.
    op.add_column("regions", sa.Column("travel_speeds", sa.JSON(), nullable=True))
    op.add_column("elders", sa.Column("season_address", sa.String(length=128), nullable=True))
    op.add_column("elders", sa.Column("season_lat", sa.Float(), nullable=True))
    op.add_column("elders", sa.Column("season_lon", sa.Float(), nullable=True))
    op.add_column("elders", sa.Column("season_start", sa.String(length=5), nullable=True))
    op.add_column("elders", sa.Column("season_end", sa.String(length=5), nullable=True))


def downgrade() -> None:
    for name in ("season_end", "season_start", "season_lon", "season_lat", "season_address"):
        op.drop_column("elders", name)
    op.drop_column("regions", "travel_speeds")

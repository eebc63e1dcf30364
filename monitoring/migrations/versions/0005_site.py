"""The site each prediction was made at (``PNEUMO_SITE``), whose threshold decided it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from pneumo.monitoring.migrations import add_missing_columns

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_missing_columns("predictions", [sa.Column("site", sa.String(63))])


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("site")

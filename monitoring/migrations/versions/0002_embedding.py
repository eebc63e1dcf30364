"""The model's embedding of each prediction (``emb_0`` ... ``emb_3``), for drift on what the
model sees.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from pneumo.monitoring.migrations import add_missing_columns

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = [f"emb_{i}" for i in range(4)]


def upgrade() -> None:
    add_missing_columns("predictions", [sa.Column(name, sa.Float) for name in COLUMNS])


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        for name in COLUMNS:
            batch.drop_column(name)

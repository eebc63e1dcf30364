"""What Prefect automations tell operators (failed runs, promotions).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from pneumo.monitoring.migrations import has_table

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if has_table("operator_events"):
        return
    op.create_table(
        "operator_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("name", sa.String(500)),
        sa.Column("message", sa.String(2000)),
        sa.Column("body", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("operator_events")

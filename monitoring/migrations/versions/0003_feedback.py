"""Clinicians' confirmed diagnoses: every label sent for a prediction, never overwritten.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from pneumo.monitoring.migrations import has_table

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if has_table("feedback"):
        return
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(36), nullable=False, index=True),
        sa.Column("label", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("copied_to", sa.String(500)),
    )


def downgrade() -> None:
    op.drop_table("feedback")

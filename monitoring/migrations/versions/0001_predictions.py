"""The first release's predictions table: what each request saw and answered.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from pneumo.monitoring.migrations import has_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATISTICS = ("mean", "std", "p1", "p5", "p25", "p50", "p75", "p95", "p99", "entropy")


def upgrade() -> None:
    if has_table("predictions"):  # made by a release before migrations
        return
    op.create_table(
        "predictions",
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(20), nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("label", sa.String(20), nullable=False),
        sa.Column("latency_ms", sa.Float),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("aspect", sa.Float),
        sa.Column("mode", sa.String(10)),
        sa.Column("bit_depth", sa.Integer),
        *(sa.Column(name, sa.Float) for name in STATISTICS),
        sa.Column("image_uri", sa.String(500)),
    )


def downgrade() -> None:
    op.drop_table("predictions")

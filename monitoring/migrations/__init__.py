"""Alembic migrations of the records database (:mod:`pneumo.monitoring.records`).

``pneumo.monitoring.records.make_engine`` upgrades a database to the newest revision on first
connection, so the service and the monitoring flow bring an older release's database up to date
when they start. A new column or table is a new revision in ``versions/`` (see the README there).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def has_table(name: str) -> bool:
    """Whether the database being migrated has table ``name``."""
    return sa.inspect(op.get_bind()).has_table(name)


def add_missing_columns(table: str, columns: list[sa.Column]) -> None:
    """Add those of ``columns`` that ``table`` lacks. Revisions are written this way because
    databases made before the records had migrations hold some of them already."""
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}
    for column in columns:
        if column.name not in present:
            op.add_column(table, column)

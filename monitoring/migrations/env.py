"""Alembic's environment: migrate the connection that :func:`pneumo.monitoring.records.upgrade`
hands over or, for the ``alembic`` command line (developers writing a revision), the config's
``sqlalchemy.url``."""

from alembic import context
from sqlalchemy import create_engine

from pneumo.monitoring.records import VERSION_TABLE, metadata


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


if (handed := context.config.attributes.get("connection")) is not None:
    run(handed)
else:
    with create_engine(context.config.get_main_option("sqlalchemy.url")).connect() as opened:
        run(opened)

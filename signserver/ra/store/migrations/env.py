"""Alembic environment of the RA's database: migrations run on the connection handed over."""

from alembic import context

from signserver.ra.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  version_table="ra_alembic_version")
with context.begin_transaction():
    context.run_migrations()

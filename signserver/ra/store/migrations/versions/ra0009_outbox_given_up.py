"""A message the RA gave up on stays in the outbox (its body erased) with the moment it was given
up, so that the operators see which holders did not get their e-mail.

Revision ID: ra0009
Revises: ra0008
"""

import sqlalchemy as sa
from alembic import op

revision = "ra0009"
down_revision = "ra0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ra_outbox") as batch:
        batch.add_column(sa.Column("given_up_at", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("ra_outbox") as batch:
        batch.drop_column("given_up_at")

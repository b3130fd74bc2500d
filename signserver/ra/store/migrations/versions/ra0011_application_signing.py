"""A renewal records until when a signing of its application through the core is under way, so
that a second signing sent meanwhile (a double click, another RA process) asks the core nothing.
Empty when none is; a claim left by a process that stopped lapses at its time.

Revision ID: ra0011
Revises: ra0010
"""

import sqlalchemy as sa
from alembic import op

revision = "ra0011"
down_revision = "ra0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ra_renewals") as batch:
        batch.add_column(sa.Column("application_signing_until", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("ra_renewals") as batch:
        batch.drop_column("application_signing_until")

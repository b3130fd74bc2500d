"""The outbox records which renewal a message is about, so that the operators reach the holder of a
message given up; and an operator may mark a message given up as dealt with (when and by whom), so
that it no longer counts on the dashboard. Older messages name no renewal.

Revision ID: ra0010
Revises: ra0009
"""

import sqlalchemy as sa
from alembic import op

revision = "ra0010"
down_revision = "ra0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ra_outbox") as batch:
        batch.add_column(sa.Column("renewal_id", sa.String(32)))
        batch.add_column(sa.Column("dismissed_at", sa.BigInteger))
        batch.add_column(sa.Column("dismissed_by", sa.String(128)))


def downgrade() -> None:
    with op.batch_alter_table("ra_outbox") as batch:
        batch.drop_column("dismissed_by")
        batch.drop_column("dismissed_at")
        batch.drop_column("renewal_id")

"""The outbox keeps why a message's last attempt failed (the SMTP server's reply or the
connection's error; never the body, never a secret), for the operators to see why it is unsent.

Revision ID: ra0008
Revises: ra0007
"""

import sqlalchemy as sa
from alembic import op

revision = "ra0008"
down_revision = "ra0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ra_outbox") as batch:
        batch.add_column(sa.Column("last_error", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("ra_outbox") as batch:
        batch.drop_column("last_error")

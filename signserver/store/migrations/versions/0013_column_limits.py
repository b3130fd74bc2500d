"""column_limits: a certificate's subject is kept whole, however long.

The subject (RFC 4514) joins the holder's fields, each within its own limit, and escapes some of
their characters: together they can pass any fixed length. SQLite never enforced VARCHAR(1000),
PostgreSQL does; both now keep TEXT.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.alter_column("subject", existing_type=sa.String(length=1000), type_=sa.Text(),
                           existing_nullable=False)


def downgrade() -> None:
    # A subject beyond the old limit is cut to it: PostgreSQL's VARCHAR(1000) would refuse it.
    op.execute("UPDATE certificates SET subject = substr(subject, 1, 1000) WHERE length(subject) > 1000")
    with op.batch_alter_table("certificates") as batch:
        batch.alter_column("subject", existing_type=sa.Text(), type_=sa.String(length=1000),
                           existing_nullable=False)

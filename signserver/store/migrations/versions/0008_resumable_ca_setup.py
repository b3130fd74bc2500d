"""pending_ca_keys: the key label a CA set-up step is about to generate, recorded before it is

A set-up interrupted after the token generated a key and before the step committed finds that key
again on the next start and uses it (or destroys it when it no longer fits) instead of leaving it
orphaned on the token. Existing CAs need no row: their keys are all recorded in authorities.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_ca_keys",
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("purpose"),
    )


def downgrade() -> None:
    op.drop_table("pending_ca_keys")

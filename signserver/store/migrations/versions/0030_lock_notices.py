"""lock_notices: the locks whose "account locked" e-mail the background work is still to queue
(signserver/accounts/lock_notices.py). The failure that locks a name writes one such row whether
or not an account has the name; before, it read the account and queued the e-mail itself, for an
account only, which made the locking attempt slower when the name was an account's.

Revision ID: 0030
Revises: 0029
"""

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lock_notices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name_key", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("locked_until", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("lock_notices")

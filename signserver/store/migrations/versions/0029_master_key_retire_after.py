"""``master_keys.retire_after``: when the grace a rotation was given for its old key ends, recorded
on that key's row by the rotation (or activation) that made it retiring, so that every process's
retirement honours it, not only the command's that was given it (a server's background work
beside `rotate --grace-seconds 600` retired the key after its own 60 s).

Keys made retiring before this revision have none: their retirement waits for the retiring
process's own grace alone, as before.

Revision ID: 0029
Revises: 0028
"""

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("master_keys", sa.Column("retire_after", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("master_keys") as batch:
        batch.drop_column("retire_after")

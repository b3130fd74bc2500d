"""auth_attempts: authentications under evaluation, for an exact lockout under concurrency

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_attempts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_auth_attempts_account_id", "auth_attempts", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_auth_attempts_account_id", table_name="auth_attempts")
    op.drop_table("auth_attempts")

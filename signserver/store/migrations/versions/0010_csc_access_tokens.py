"""csc_access_tokens: the bearer tokens of the CSC API, kept hashed with their expiry so that
every worker accepts a token any of them issued.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "csc_access_tokens",
        sa.Column("token_hash", sa.String(length=64), primary_key=True),
        sa.Column("application_id", sa.Integer(), sa.ForeignKey("applications.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_csc_access_tokens_expires_at", "csc_access_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_csc_access_tokens_expires_at", table_name="csc_access_tokens")
    op.drop_table("csc_access_tokens")

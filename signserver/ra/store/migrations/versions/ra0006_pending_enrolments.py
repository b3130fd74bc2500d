"""Enrolments under way: recorded before the core is asked to make the holder's account, deleted
once the RA has recorded the holder, so that an account the core made while the RA could not
record it (its database failed, the process stopped) is seen and finished. Never a secret.

Revision ID: ra0006
Revises: ra0005
"""

import sqlalchemy as sa
from alembic import op

revision = "ra0006"
down_revision = "ra0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ra_pending_enrolments",
        sa.Column("account", sa.String(128), primary_key=True),
        sa.Column("reference", sa.String(32), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("operator", sa.String(128), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ra_pending_enrolments")

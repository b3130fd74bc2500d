"""ra_request_nonces: the nonces of the registration authorities' requests seen lately, so that a
replayed request is refused (signserver/ca/ra_requests.py).

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ra_request_nonces",
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("operator", sa.String(length=200), nullable=False),
        sa.Column("seen_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    op.create_index("ix_ra_request_nonces_seen_at", "ra_request_nonces", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_ra_request_nonces_seen_at", table_name="ra_request_nonces")
    op.drop_table("ra_request_nonces")

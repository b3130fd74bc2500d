"""activation_tokens: a partial index on expires_at of the tokens that still carry a sealed key, so
that the background round that erases the keys of expired tokens (signserver/signing/activation.py
forget_sealed_keys) reads only those, not every expired token retention still keeps (a day's worth
at a national scale, every round).

Revision ID: 0031
Revises: 0030
"""

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

STILL_SEALED = "sealed_key IS NOT NULL"


def upgrade() -> None:
    op.create_index("ix_activation_tokens_sealed_expiry", "activation_tokens", ["expires_at"],
                    sqlite_where=sa.text(STILL_SEALED), postgresql_where=sa.text(STILL_SEALED))


def downgrade() -> None:
    op.drop_index("ix_activation_tokens_sealed_expiry", table_name="activation_tokens")

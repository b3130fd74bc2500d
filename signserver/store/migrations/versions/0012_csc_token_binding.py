"""csc_token_binding: a CSC access token issued to a login with the application's TLS client
certificate keeps that certificate's SHA-256 thumbprint, and is accepted only over a connection
presenting it (RFC 8705 certificate-bound access tokens).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("csc_access_tokens") as batch:
        batch.add_column(sa.Column("certificate_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("csc_access_tokens") as batch:
        batch.drop_column("certificate_sha256")
